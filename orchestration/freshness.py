"""Which assets are stale: Dagster data versions that are signatures of everything an asset consumed.

Every asset's data version is ``input_signature(code version, upstream data versions, settings)``
(raw inputs enter as content hashes). An asset (partition) is fresh when its latest materialization in
the Dagster instance carries the signature its inputs would give now and its output exists: the same
rule DVC applies with its lock file, so an unchanged re-run does nothing, and a change in one dataset
re-runs exactly what depends on it.
"""

import hashlib
import json

import dagster as dg

from assets.file_hashes import FileHashCache, default_cache_path, fingerprint_paths
from assets.versions import published_data_version

DATA_VERSION_TAG = "dagster/data_version"


def input_signature(code_version: str, upstream: dict, settings=None) -> str:
    payload = {"code": code_version, "upstream": upstream, "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def latest_data_version(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> str | None:
    """Data version of the latest materialization of ``asset`` (and ``partition``), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1)
    if not records.records:
        return None
    materialization = records.records[0].asset_materialization
    return materialization.tags.get(DATA_VERSION_TAG) if materialization and materialization.tags else None


def upstream_versions(instance: dg.DagsterInstance, keys) -> dict:
    """{"asset[partition]": data version} for (asset, partition) pairs; missing ones map to None."""
    return {f"{asset}[{partition}]" if partition else asset: latest_data_version(instance, asset, partition)
            for asset, partition in keys}


def store_asset(config, dataset: str) -> tuple[str, str]:
    """The asset whose store training and benchmarks read for ``dataset``."""
    return ("pseudo_gt" if config.datasets[dataset].multiview_2d else "dataset", dataset)


def expected_signature(config, instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> str:
    """The data version ``asset`` (``partition``) gets when materialised from the current inputs."""
    from orchestration.code_versions import CODE_VERSIONS

    code = CODE_VERSIONS[asset]
    if asset == "dataset":
        entry = config.datasets[partition]
        raw = raw_version(config, partition)
        return input_signature(code, {"raw": raw}, {"converter": entry.converter, "image_size": config.image_size,
                                                     "options": entry.options.as_dict()})
    if asset == "pseudo_gt":
        return input_signature(code, upstream_versions(instance, [("dataset", partition)]),
                               config.datasets[partition].pseudo_gt)
    training = config.training
    sources = list(training.batch_3d) + list(training.batch_2d)
    if asset == "training_pool":
        return input_signature(code, upstream_versions(instance, [store_asset(config, n) for n in sources]),
                               {"batch_3d": training.batch_3d, "batch_2d": training.batch_2d})
    if asset == "initial_model":
        return input_signature(code, upstream_versions(instance, [("training_pool", None)]),
                               {"run": training.initial, "network": _network_settings(config)})
    if asset == "all_skeleton_pseudo_gt":
        return input_signature(code, upstream_versions(instance, [("initial_model", None), ("training_pool", None)]),
                               config.acae.pseudo_gt_examples_per_dataset)
    if asset == "acae":
        return input_signature(code, upstream_versions(instance, [("all_skeleton_pseudo_gt", None)]), config.acae)
    if asset == "final_model":
        return input_signature(code, upstream_versions(
            instance, [("initial_model", None), ("acae", None), ("training_pool", None)]),
            {"run": training.final, "network": _network_settings(config)})
    if asset == "benchmark":
        return input_signature(code, upstream_versions(
            instance, [("final_model", None), ("initial_model", None), ("acae", None), store_asset(config, partition)]))
    raise KeyError(f"no signature rule for asset {asset!r}")


def hash_cache(config) -> FileHashCache:
    return FileHashCache(default_cache_path(config.store_root))


def raw_version(config, dataset: str) -> str:
    """Content hash of a dataset's raw folder (files unchanged since last time are not read again)."""
    raw = config.datasets[dataset].raw
    return fingerprint_paths([raw], cache=hash_cache(config)) if raw.exists() else "missing"


def _network_settings(config) -> dict:
    t = config.training
    return {"backbone": t.backbone, "image_size": t.image_size or config.image_size, "stride": t.stride}


def output_path(config, asset: str, partition: str | None = None):
    """Where an asset's artifact lives: a fresh data version without its artifact is not fresh."""
    paths = {
        "dataset": lambda: config.dataset_store_path(partition),
        "pseudo_gt": lambda: config.pseudo_gt_store_path(partition),
        "training_pool": lambda: config.store_root / "training_pool.parquet",
        "initial_model": lambda: config.models_root / "initial" / "model.pt",
        "all_skeleton_pseudo_gt": lambda: config.all_skeleton_pseudo_gt_path,
        "acae": lambda: config.models_root / "acae.pt",
        "final_model": lambda: config.models_root / "final" / "model.pt",
        "benchmark": lambda: config.benchmark_latest_path(partition),
    }
    return paths[asset]()


# assets written as published versions (assets.versions): the pointer records which inputs they came from
VERSIONED_ASSETS = ("dataset", "pseudo_gt", "all_skeleton_pseudo_gt")


def is_fresh(config, instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> bool:
    """Fresh: Dagster's latest materialisation has the signature the inputs give now, and that is what is
    published (a version refused by its checks is never published, so its stage stays stale)."""
    recorded = latest_data_version(instance, asset, partition)
    if recorded is None or recorded != expected_signature(config, instance, asset, partition):
        return False
    location = output_path(config, asset, partition)
    if asset in VERSIONED_ASSETS:
        return published_data_version(location) == recorded
    return location.exists()
