"""Great-expectations store checks (assets.quality) as blocking Dagster asset checks of any store asset."""

import dagster as dg
import numpy as np

from assets.quality import CHECK_NAMES, describe_checks, run_store_checks


def quality_check_specs(asset_name: str) -> list[dg.AssetCheckSpec]:
    descriptions = describe_checks()
    return [dg.AssetCheckSpec(name, asset=asset_name, blocking=True, description=descriptions[name])
            for name in CHECK_NAMES]


def check_results(outcomes) -> list[dg.AssetCheckResult]:
    results = []
    for outcome in outcomes:
        results.append(dg.AssetCheckResult(
            check_name=outcome.name, passed=bool(outcome.passed),
            severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
            description=outcome.description, metadata={k: _metadata_value(v) for k, v in outcome.metadata.items()}))
    return results


def _metadata_value(value):
    if isinstance(value, (bool, np.bool_)):
        return dg.MetadataValue.bool(bool(value))
    if isinstance(value, (int, np.integer)):
        return dg.MetadataValue.int(int(value))
    if isinstance(value, (float, np.floating)):
        return dg.MetadataValue.float(float(value))
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    return dg.MetadataValue.json(value)


def blocking_checks_gate(context, asset_name: str, results: list):
    """A publish gate (``StoreWriter.commit``) that runs the checks on the finished, unpublished version.

    Passing: the Dagster check results go into ``results`` for the materialisation. A failed blocking check:
    the evaluations are logged (so the UI shows them) and the step fails with every failed check's
    finding, so the version is discarded, the previous one stays current, and the stage stays stale.
    """
    def gate(staged_path) -> None:
        outcomes = run_store_checks(staged_path)
        checked = check_results(outcomes)
        failed = [o for o in outcomes if o.blocking and not o.passed]
        if not failed:
            results.extend(checked)
            return
        for result in checked:
            context.log_event(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(asset_name), check_name=result.check_name, passed=result.passed,
                metadata=result.metadata, severity=result.severity, description=result.description,
                blocking=True))
        findings = "\n".join(f"- {o.name}: {o.description}" for o in failed)
        raise dg.Failure(
            description=f"blocking checks failed on the new version of {asset_name} "
                        f"[{context.partition_key}] (not published; the previous version, if any, stays "
                        f"current):\n{findings}",
            metadata={"failed_checks": dg.MetadataValue.json([o.name for o in failed])})

    return gate
