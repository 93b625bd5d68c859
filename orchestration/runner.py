"""Run the whole pipeline through Dagster, materialising only the stale asset partitions, in graph order."""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from orchestration.console import PROGRESS, write_run_log
from orchestration.freshness import is_fresh
from orchestration.stages import pipeline_steps


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


def _console_logging() -> dict:
    """Dagster's event stream on the console only when verbose; otherwise the instance and the run logs have it."""
    level = "DEBUG" if os.environ.get("DOZENS_VERBOSE") else "CRITICAL"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def run_pipeline(config, instance: dg.DagsterInstance, *, only: set | None = None, partitions: set | None = None,
                 force: bool = False, report: Callable[[str], None] = print) -> list[StepOutcome]:
    """Materialise every stale step (``only``: these assets; ``partitions``: these dataset partitions)."""
    from orchestration.definitions import build_definitions

    all_assets = list(build_definitions(config).assets)
    outcomes: list[StepOutcome] = []
    broken = False
    for asset, asset_partitions in pipeline_steps(config):
        if only is not None and asset not in only:
            continue
        for partition in asset_partitions:
            if partitions is not None and partition is not None and partition not in partitions:
                continue
            if broken:
                outcomes.append(StepOutcome(asset, partition, "skipped"))
                continue
            if not force and is_fresh(config, instance, asset, partition):
                outcomes.append(StepOutcome(asset, partition, "fresh"))
                continue
            started = time.perf_counter()
            result = dg.materialize(all_assets, selection=[asset], partition_key=partition, instance=instance,
                                    raise_on_error=False, run_config=_console_logging())
            PROGRESS.clear()
            log = write_run_log(instance, result.run_id, config.logs_root / f"{time.strftime('%Y%m%dT%H%M%S')}-"
                                f"{asset}{'-' + partition if partition else ''}-{result.run_id[:8]}.log")
            evaluations = result.get_asset_check_evaluations()
            failed = [e.check_name for e in evaluations if not e.passed]
            outcome = StepOutcome(asset, partition, "ran" if result.success else "failed",
                                  time.perf_counter() - started, len(evaluations), failed,
                                  None if result.success else failure_message(result))
            outcomes.append(outcome)
            checks = f", {len(evaluations) - len(failed)}/{len(evaluations)} checks passed" if evaluations else ""
            report(f"{outcome.label}: {outcome.status} in {outcome.seconds:.1f} s{checks}"
                   + (f"\n  {outcome.error}\n  (log: {log})".replace("\n", "\n  ") if outcome.error else ""))
        # a failed step stops everything after it: later stages depend on earlier ones
        broken = broken or any(o.status == "failed" for o in outcomes)
    return outcomes
