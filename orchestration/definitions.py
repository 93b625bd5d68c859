"""Dagster entry point: `dagster dev -m orchestration.definitions` (or `dagster dev` in the project root)."""

import importlib
import os

import dagster as dg

from orchestration.asset_graph import source_assets
from orchestration.automation import rebenchmark_schedule, source_observation_sensor
from orchestration.benchmark_assets import build_benchmark_assets
from orchestration.config import ConfigError, load_config
from orchestration.dataset_assets import build_dataset_assets
from orchestration.experiment_assets import build_experiment_assets
from orchestration.jobs import build_jobs
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
    assets = [*source_assets(config), *build_dataset_assets(config)[1], *build_pseudo_gt_assets(config)[1],
              *build_model_assets(config), *build_benchmark_assets(config)[1], *build_experiment_assets(config)]
    jobs = build_jobs(config, executor)
    schedules = [rebenchmark_schedule(config, jobs["benchmark_models"])] if "benchmark_models" in jobs else []
    return dg.Definitions(assets=assets, jobs=list(jobs.values()), schedules=schedules,
                          sensors=[source_observation_sensor(config)], executor=executor)


defs = build_definitions()
