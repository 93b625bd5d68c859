"""Which assets are stale: Dagster data versions that are signatures of everything an asset consumed.

Every asset's data version is ``input_signature(code version, upstream data versions, settings)``, each
part from the stage table (orchestration/stages.py): the code version hashes the source the stage runs,
raw inputs enter as content hashes. An asset (partition) is fresh when its latest materialization in
the Dagster instance carries the signature its inputs would give now and its output on disk carries that
data version too: the same rule DVC applies with its lock file, so an unchanged re-run does nothing, and
a change in one dataset re-runs exactly what depends on it.

Every output carries its data version on disk (a store's pointer, a file's stamp: assets.versions), so
what another tool put there (``dvc checkout`` of another revision, ``dvc pull`` into a fresh clone, a DVC
run-cache restore) is recognised: asset_graph.record_restored_versions reports it to the Dagster instance
as a materialisation before anything plans or reads from it, and the UI, the runner and DVC agree on it.
"""

import hashlib
import json

import dagster as dg

from assets.file_hashes import FileHashCache, default_cache_path, fingerprint_paths
from assets.versions import published_data_version, stamped_data_version
from orchestration.stages import STAGES, output, stage_code_version

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


def expected_signature(config, instance: dg.DagsterInstance, asset: str, partition: str | None = None,
                       raw_versions: dict | None = None) -> str:
    """The data version ``asset`` (``partition``) gets when materialised from the current inputs
    (``raw_versions``: the raw folders' versions when the caller has them already, by dataset)."""
    stage = STAGES[asset]
    upstream = upstream_versions(instance, stage.inputs(config, partition))
    if asset == "dataset":
        upstream["raw"] = raw_versions[partition] if raw_versions is not None else raw_version(config, partition)
    return input_signature(stage_code_version(config, asset, partition), upstream, stage.settings(config, partition))


def hash_cache(config) -> FileHashCache:
    return FileHashCache(default_cache_path(config.store_root))


def raw_version(config, dataset: str) -> str:
    """Content hash of a dataset's raw folder (files unchanged since last time are not read again)."""
    raw = config.datasets[dataset].raw
    return fingerprint_paths([raw], cache=hash_cache(config)) if raw.exists() else "missing"


def on_disk_data_version(config, asset: str, partition: str | None = None) -> str | None:
    """Data version of the output on disk (its pointer or stamp); None when missing or unrecognised."""
    location = output(config, asset, partition)
    return published_data_version(location) if STAGES[asset].published else stamped_data_version(location)


def step_state(config, instance: dg.DagsterInstance, asset: str, partition: str | None = None,
               raw_versions: dict | None = None) -> str:
    """``changed``: its latest materialisation's data version is not the signature its inputs give now (so
    what reads it changes too); ``lost``: the signature is current but its output is gone or was never
    published (a version refused by its checks), so it is made again, identical for its readers; ``fresh``."""
    recorded = latest_data_version(instance, asset, partition)
    if recorded is None or recorded != expected_signature(config, instance, asset, partition, raw_versions):
        return "changed"
    return "fresh" if on_disk_data_version(config, asset, partition) == recorded else "lost"

