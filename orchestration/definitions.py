"""Dagster entry point: `dagster dev -m orchestration.definitions` (or `dagster dev` in the project root)."""

import importlib
import os

import dagster as dg

from orchestration.benchmark_assets import build_benchmark_assets, raw_data_sensor, rebenchmark_schedule
from orchestration.config import ConfigError, load_config
from orchestration.dataset_assets import build_dataset_assets
from orchestration.model_assets import build_model_assets
from orchestration.pseudo_gt_assets import build_pseudo_gt_assets

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def executor_definition(name: str) -> dg.ExecutorDefinition:
    """``executor`` in params.yaml: ``in_process`` (the default: one step per run, and a subprocess costs
    seconds), ``multiprocess``, or ``module:attribute`` naming a deployment's executor definition, e.g.
    ``dagster_k8s:k8s_job_executor`` (one Kubernetes job per step; install dagster-k8s for it)."""
    builtin = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}
    if name in builtin:
        return builtin[name]
    module_name, _, attribute = name.partition(":")
    try:
        executor = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"field 'executor' is {name!r}: not in_process, multiprocess or an importable "
                          f"'module:attribute' executor definition ({type(exc).__name__}: {exc})") from None
    if not isinstance(executor, dg.ExecutorDefinition):
        raise ConfigError(f"field 'executor' is {name!r}, which is a {type(executor).__name__}, not a Dagster "
                          f"executor definition")
    return executor


def build_definitions(config=None) -> dg.Definitions:
    config = config or load_config()
    executor = executor_definition(config.executor)
    partitions, dataset_defs = build_dataset_assets(config)
    multiview_partitions, pseudo_gt_defs = build_pseudo_gt_assets(config)
    convert_datasets = dg.define_asset_job(
        "convert_datasets", selection=dg.AssetSelection.assets("dataset"), partitions_def=partitions,
        description="Convert one dataset (partition) into its canonical store and run its checks.",
        executor_def=executor)
    jobs = [convert_datasets]
    if multiview_partitions is not None:
        jobs.append(dg.define_asset_job(
            "triangulate_pseudo_gt", selection=dg.AssetSelection.assets("pseudo_gt"),
            partitions_def=multiview_partitions, executor_def=executor,
            description="Triangulate one multi-view 2D dataset (partition) into its pseudo-GT store."))
    model_defs = build_model_assets(config)
    if model_defs:
        jobs.append(dg.define_asset_job(
            "train_models", selection=dg.AssetSelection.assets(*model_defs), executor_def=executor,
            description="Training pool, initial model, all-skeleton pseudo-GT, autoencoder, final model."))
    benchmark_partitions, benchmark_defs = build_benchmark_assets(config)
    schedules = []
    if benchmark_defs:
        benchmark_job = dg.define_asset_job(
            "benchmark_models", selection=dg.AssetSelection.assets("benchmark"), partitions_def=benchmark_partitions,
            executor_def=executor,
            description="Score the final and initial models on one test set (partition); append to the history.")
        jobs.append(benchmark_job)
        schedules.append(rebenchmark_schedule(config, benchmark_job))
    return dg.Definitions(assets=[*dataset_defs, *pseudo_gt_defs, *model_defs, *benchmark_defs], jobs=jobs,
                          schedules=schedules, sensors=[raw_data_sensor(config, convert_datasets)],
                          executor=executor)


defs = build_definitions()
