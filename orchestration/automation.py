"""What a Dagster deployment with a daemon runs by itself: the DVC-like automation condition of every
asset, the sensor that observes the sources, and the nightly re-benchmark schedule.

`dozens demo` needs none of this (the runner decides from the same facts); with `dagster dev` and the
daemon, an edited raw file or setting gets the same steps materialised without anyone starting a run.
"""

import dagster as dg

from orchestration.asset_graph import observe_sources, record_restored_versions
from orchestration.stages import every_step

# An input partition whose data version changed (in a run that did not also make this asset) or will
# change in this tick. (The `&` also matters on its own: data_version_changed alone reports every changed
# partition of the input, not only those this asset reads, and Dagster maps any of them to all of an
# unpartitioned reader; an `&` keeps only the partitions read.)
_INPUT_CHANGED = ((dg.AutomationCondition.data_version_changed() & ~dg.AutomationCondition.executed_with_root_target())
                  | dg.AutomationCondition.will_be_requested()) & ~dg.AutomationCondition.in_progress()

# Materialise when the output is missing (unless its last run failed: a fix of the code or input re-requests
# it), when the code version (code + settings) changed, or when an input changed; never while it or an
# input is running or an input is missing.
STALE_CONDITION = (
    ((dg.AutomationCondition.missing() & ~dg.AutomationCondition.execution_failed())
     | dg.AutomationCondition.code_version_changed()
     | dg.AutomationCondition.any_deps_match(_INPUT_CHANGED))
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.any_deps_missing()
).with_label("stale: missing, new code or settings, or new inputs (as dvc repro decides)")


def source_observation_sensor(config) -> dg.SensorDefinition:
    @dg.sensor(name="source_observation_sensor", minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Observes the raw folders and the per-partition settings, and records outputs "
                           "restored by DVC; a changed data version makes the automation conditions request what "
                           "depends on it.")
    def sensor(context: dg.SensorEvaluationContext):
        changed = observe_sources(config, context.instance)
        changed += record_restored_versions(config, context.instance, every_step(config))
        return dg.SkipReason(f"{len(changed)} source or restored partition(s) changed: "
                             + (", ".join(f"{s}[{p}]" if p else s for s, p in changed) or "none"))

    return sensor


def rebenchmark_schedule(config, job) -> dg.ScheduleDefinition:
    @dg.schedule(cron_schedule=config.benchmark.schedule, job=job, name="rebenchmark_schedule",
                 description="Re-score the latest final model on every benchmark and append to the history.")
    def rebenchmark(context: dg.ScheduleEvaluationContext):
        stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M") if context.scheduled_execution_time else "now"
        for name in config.benchmark.datasets:
            yield dg.RunRequest(run_key=f"{name}-{stamp}", partition_key=name)

    return rebenchmark
