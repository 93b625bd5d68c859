"""Run the whole pipeline through Dagster, materialising only the stale asset partitions, in graph order."""

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import dagster as dg

from orchestration.asset_graph import RAW_SOURCE, record_observations, record_restored_versions, source_versions
from orchestration.console import PROGRESS, write_run_log
from orchestration.freshness import step_state
from orchestration.stages import STAGES, every_step, pipeline_steps, upstream_steps


@dataclass
class StepOutcome:
    asset: str
    partition: str | None
    status: str  # "ran", "fresh", "failed" or "skipped" (an upstream step failed)
    seconds: float = 0.0
    checks: int = 0
    failed_checks: list = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.asset}[{self.partition}]" if self.partition else self.asset


def failure_message(result) -> str:
    """Why a Dagster run failed, in the words of the code that failed (not Dagster's wrapper)."""
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE" or event.step_failure_data is None:
            continue
        failure = event.step_failure_data
        if failure.user_failure_data is not None and failure.user_failure_data.description:
            return failure.user_failure_data.description.strip()
        error = failure.error
        while error.cause is not None:  # DagsterExecutionStepExecutionError wraps the converter's own error
            error = error.cause
        return error.message.strip()  # already "ExceptionClass: message"
    return "run failed (see the Dagster event log)"


def console_logging() -> dict:
    """Dagster's event stream on the console only when verbose; otherwise the instance and the run logs have it."""
    level = "DEBUG" if os.environ.get("DOZENS_VERBOSE") else "CRITICAL"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def materialize_step(config, instance: dg.DagsterInstance, asset: str, partition: str | None) -> StepOutcome:
    """One Dagster run of one asset (partition), with its event log written to a file. What another tool
    restored upstream of it is recorded first: Dagster notes its inputs' versions when the run starts."""
    from orchestration.definitions import build_definitions

    started = time.perf_counter()
    record_restored_versions(config, instance, upstream_steps(config, asset, partition))
    result = dg.materialize(list(build_definitions(config).assets), selection=[asset], partition_key=partition,
                            instance=instance, raise_on_error=False, run_config=console_logging())
    PROGRESS.clear()
    log = write_run_log(instance, result.run_id, config.logs_root / f"{time.strftime('%Y%m%dT%H%M%S')}-"
                        f"{asset}{'-' + partition if partition else ''}-{result.run_id[:8]}.log")
    evaluations = result.get_asset_check_evaluations()
    failed = [e.check_name for e in evaluations if not e.passed]
    error = None if result.success else f"{failure_message(result)}\n(log: {log})"
    return StepOutcome(asset, partition, "ran" if result.success else "failed", time.perf_counter() - started,
                       len(evaluations), failed, error)


def _materialize_in_child(config_path: str, instance_ref, asset: str, partition: str | None) -> StepOutcome:
    """``materialize_step`` in a worker process: its own config and instance handles, the same instance."""
    from orchestration.config import load_config

    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        return materialize_step(load_config(config_path), instance, asset, partition)


def plan_pipeline(config, instance: dg.DagsterInstance, *, only: set | None = None, partitions: set | None = None,
                  force: bool = False, raw_versions: dict | None = None) -> list[tuple[str, str | None]]:
    """The steps a run materialises, in order: the stale ones and every step that reads one of them
    (``only``: these assets; ``partitions``: these dataset partitions; ``force``: all of them;
    ``raw_versions``: the raw folders' versions if already computed)."""
    planned: list[tuple[str, str | None]] = []
    changing: set[tuple] = set()  # planned steps whose data version changes, so their readers' do too
    for asset, asset_partitions in pipeline_steps(config):
        if only is not None and asset not in only:
            continue
        for partition in asset_partitions:
            if partitions is not None and partition is not None and partition not in partitions:
                continue
            step = (asset, partition)
            if force or any(upstream in changing for upstream in STAGES[asset].inputs(config, partition)):
                state = "changed"
            else:
                state = step_state(config, instance, asset, partition, raw_versions)
            if state != "fresh":
                planned.append(step)
            if state == "changed":
                changing.add(step)
    return planned


def observe_and_plan(config, instance: dg.DagsterInstance, **selection) -> list[tuple[str, str | None]]:
    """Record the sources' observations and the outputs another tool restored (``dvc checkout``, ``dvc pull``),
    then ``plan_pipeline`` from the same raw versions (each raw folder is walked once per run, not once to
    observe and again to plan)."""
    versions = source_versions(config)
    record_observations(instance, versions)
    record_restored_versions(config, instance, every_step(config))
    return plan_pipeline(config, instance, raw_versions=versions[RAW_SOURCE], **selection)


def run_pipeline(config, instance: dg.DagsterInstance, *, only: set | None = None, partitions: set | None = None,
                 force: bool = False, jobs: int = 1, report: Callable[[str], None] = print) -> list[StepOutcome]:
    """Materialise every planned step (``plan_pipeline``), after recording the sources' observations.

    Stages run in order; the planned partitions of one stage run as separate Dagster runs, ``jobs`` at a time
    in worker processes. A failed step skips only the steps that read it (its siblings go on).
    """
    planned = set(observe_and_plan(config, instance, only=only, partitions=partitions, force=force))
    outcomes: list[StepOutcome] = []
    not_done: set[tuple] = set()  # (asset, partition) that failed or were skipped
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) if jobs > 1 else None
    try:
        for asset, asset_partitions in pipeline_steps(config):
            if only is not None and asset not in only:
                continue
            stale = []
            for partition in asset_partitions:
                if partitions is not None and partition is not None and partition not in partitions:
                    continue
                blocked = [f"{a}[{p}]" if p else a for a, p in STAGES[asset].inputs(config, partition)
                           if (a, p) in not_done]
                if blocked:
                    outcomes.append(StepOutcome(asset, partition, "skipped", error=f"needs {', '.join(blocked)}"))
                    not_done.add((asset, partition))
                elif (asset, partition) not in planned:
                    outcomes.append(StepOutcome(asset, partition, "fresh"))
                else:
                    stale.append(partition)
            if pool is not None and len(stale) > 1:
                futures = [pool.submit(_materialize_in_child, str(config.path), instance.get_ref(), asset, p)
                           for p in stale]
                done = (future.result() for future in futures)
            else:
                done = (materialize_step(config, instance, asset, p) for p in stale)
            for outcome in done:
                outcomes.append(outcome)
                if outcome.status != "ran":
                    not_done.add((outcome.asset, outcome.partition))
                checks = (f", {outcome.checks - len(outcome.failed_checks)}/{outcome.checks} checks passed"
                          if outcome.checks else "")
                report(f"{outcome.label}: {outcome.status} in {outcome.seconds:.1f} s{checks}"
                       + (f"\n{outcome.error}".replace("\n", "\n    ") if outcome.error else ""))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return outcomes
