"""Dagster wiring for pseudo ground truth: triangulate the multi-view 2D datasets' detections.

One partition per dataset listed under ``pseudo_gt.datasets`` in the config; each reads that dataset's
canonical store and writes a pseudo-GT store (assets.pseudo_gt) with the same GX checks.
"""

import time

import dagster as dg

from assets.converters import get_converter
from assets.converters.raw_io import RawDataError
from assets.pseudo_gt import triangulate_store, write_pseudo_gt_store
from assets.preview import preview_png
from assets.locations import local_copy
from assets.store import open_store
from assets.versions import local_published
from orchestration.checks import blocking_checks_gate, quality_check_specs
from orchestration.config import PipelineConfig
from orchestration.console import step_progress
from orchestration.metadata import png_markdown
from orchestration.asset_graph import asset_code_version, asset_deps, current_signature, partitions_definition
from orchestration.automation import STALE_CONDITION


def pseudo_gt_metadata(stats: dict, store, seconds: float, published) -> dict:
    histogram = stats["inlier_view_histogram"]
    view_table = "| inlier views | joints |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in histogram.items())
    bone_table = "| bone | robust CV (MAD/median) |\n|---|---|\n" + "\n".join(
        f"| {bone} | {cv:.3f} |" for bone, cv in stats["bone_length_robust_cv"].items())
    errors = stats["reprojection_error_px"]
    return {
        "examples": dg.MetadataValue.int(len(store)),
        "instants": dg.MetadataValue.int(stats["instants"]),
        "joints_triangulated_fraction": dg.MetadataValue.float(stats["joints_triangulated_fraction"]),
        **{f"reprojection_error_{q}_px": dg.MetadataValue.float(v) for q, v in errors.items()},
        "inlier_view_histogram": dg.MetadataValue.md(view_table),
        "bone_length_stability": dg.MetadataValue.md(bone_table),
        "bone_length_robust_cv_median": dg.MetadataValue.float(stats["bone_length_robust_cv_median"]),
        "bone_length_far_off_fraction": dg.MetadataValue.float(stats["bone_length_far_off_fraction"]),
        "store_path": dg.MetadataValue.path(str(published)),
        "seconds": dg.MetadataValue.float(round(seconds, 2)),
        "preview": png_markdown(preview_png(store), "preview"),
    }


def recording_metadata(converter: str, raw_root) -> dict:
    """A real recording's tracking numbers (its converter's optional ``recording_statistics(raw_root)``):
    each tracked person is a sequence of the pseudo-GT, so how often an identity switched belongs beside it."""
    statistics = getattr(get_converter(converter), "recording_statistics", None)
    if statistics is None:
        return {}
    try:
        found = statistics(raw_root)
    except RawDataError as exc:  # numbers to show, not a reason to fail a published store
        return {"tracking_statistics_error": dg.MetadataValue.text(str(exc))}
    metadata = {}
    for key, value in found.items():
        if isinstance(value, dict):
            table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in value.items())
            metadata[f"tracking_{key}"] = dg.MetadataValue.md(table)
        elif isinstance(value, int):
            metadata[f"tracking_{key}"] = dg.MetadataValue.int(value)
        else:
            metadata[f"tracking_{key}"] = dg.MetadataValue.float(float(value))
    return metadata


def build_pseudo_gt_assets(config: PipelineConfig) -> tuple[dg.PartitionsDefinition | None, list]:
    names = config.multiview_datasets
    if not names:
        return None, []
    partitions = partitions_definition(config, "pseudo_gt")

    @dg.asset(
        partitions_def=partitions,
        deps=asset_deps(config, "pseudo_gt"),
        code_version=asset_code_version(config, "pseudo_gt"),
        automation_condition=STALE_CONDITION,
        group_name="pseudo_gt",
        kinds={"zarr"},
        description="Multi-view 2D detections triangulated into 3D pseudo ground truth (robust, per sequence).",
        check_specs=quality_check_specs("pseudo_gt"),
    )
    def pseudo_gt(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        name = context.partition_key
        settings = config.datasets[name].pseudo_gt
        started = time.perf_counter()
        version = current_signature(config, context.instance, "pseudo_gt", name)
        source = open_store(local_published(config.dataset_store_path(name), step_progress(context)))
        pseudo = triangulate_store(source, threshold_fraction=settings.threshold_fraction,
                                   min_views=settings.min_views, progress=step_progress(context))
        checks = []
        path = write_pseudo_gt_store(source, pseudo, config.pseudo_gt_store_path(name), progress=step_progress(context),
                                     data_version=version, gate=blocking_checks_gate(context, "pseudo_gt", checks))
        store = open_store(local_copy(path))
        entry = config.datasets[name]
        return dg.MaterializeResult(
            metadata={**pseudo_gt_metadata(pseudo.stats, store, time.perf_counter() - started, path),
                      **recording_metadata(entry.converter, entry.raw)},
            data_version=dg.DataVersion(version),
            check_results=checks,
        )

    return partitions, [pseudo_gt]
