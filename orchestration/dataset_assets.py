"""Dagster wiring for the dataset conversions: raw folders → canonical stores, with GX checks.

Thin by design: the conversion (assets.converters), the store (assets.store) and the checks
(assets.quality) are plain Python; this module only names partitions, versions and metadata.
"""

import dagster as dg
import numpy as np

from assets.converters import get_converter
from assets.converters.common import convert
from assets.locations import local_copy, tree_size
from assets.preview import preview_png
from assets.store import SPLITS, open_store
from orchestration.checks import blocking_checks_gate, quality_check_specs
from orchestration.config import PipelineConfig
from orchestration.console import step_progress
from orchestration.freshness import hash_cache
from orchestration.metadata import png_markdown
from orchestration.asset_graph import asset_code_version, asset_deps, current_signature, partitions_definition
from orchestration.automation import STALE_CONDITION

def store_metadata(store, seconds: float, published) -> dict:
    """``store`` opened where it is read fastest (assets.locations.local_copy); ``published``: where it lives."""
    pose3d = store.load("pose3d")
    valid = store.load("joint_valid")
    counts = store.attrs["counts"]
    split_table = "| split | examples |\n|---|---|\n" + "\n".join(f"| {s} | {counts.get(s, 0)} |" for s in SPLITS)
    size_bytes = tree_size(store.path)
    return {
        "examples": dg.MetadataValue.int(len(store)),
        "examples_per_split": dg.MetadataValue.md(split_table),
        "skeleton": dg.MetadataValue.text(store.attrs["skeleton"]),
        "joints": dg.MetadataValue.int(store.skeleton.num_joints),
        "pose3d_nan_rate": dg.MetadataValue.float(float(np.isnan(pose3d).any(axis=-1).mean())),
        "joint_invalid_rate_2d": dg.MetadataValue.float(float(1 - valid.mean())),
        "store_path": dg.MetadataValue.path(str(published)),
        "store_megabytes": dg.MetadataValue.float(round(size_bytes / 2**20, 2)),
        "conversion_seconds": dg.MetadataValue.float(round(seconds, 2)),
        "raw_fingerprint": dg.MetadataValue.text(store.attrs["raw_fingerprint"]),
        "preview": png_markdown(preview_png(store), "preview"),
    }


def build_dataset_assets(config: PipelineConfig) -> tuple[dg.PartitionsDefinition, list]:
    partitions = partitions_definition(config, "dataset")

    @dg.asset(
        partitions_def=partitions,
        deps=asset_deps(config, "dataset"),
        code_version=asset_code_version(config, "dataset"),
        automation_condition=STALE_CONDITION,
        group_name="datasets",
        kinds={"zarr"},
        description="Canonical Zarr store of one dataset (one partition per dataset).",
        check_specs=quality_check_specs("dataset"),
    )
    def dataset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        entry = config.datasets[context.partition_key]
        version = current_signature(config, context.instance, "dataset", entry.name)
        checks = []
        result = convert(get_converter(entry.converter), entry.raw, config.dataset_store_path(entry.name),
                         dataset_name=entry.name, image_size=config.image_size, progress=step_progress(context),
                         options=entry.options, data_version=version, workers=config.conversion_workers,
                         hash_cache=hash_cache(config), gate=blocking_checks_gate(context, "dataset", checks))
        store = open_store(local_copy(result.path))
        return dg.MaterializeResult(
            metadata=store_metadata(store, result.seconds, result.path),
            data_version=dg.DataVersion(version),
            check_results=checks,
        )

    return partitions, [dataset]
