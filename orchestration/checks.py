"""Great-expectations store checks (assets.quality) as blocking Dagster asset checks of any store asset."""

import dagster as dg
import numpy as np

from assets.quality import CHECK_NAMES, describe_checks, run_store_checks


def quality_check_specs(asset_name: str) -> list[dg.AssetCheckSpec]:
    descriptions = describe_checks()
    return [dg.AssetCheckSpec(name, asset=asset_name, blocking=True, description=descriptions[name])
            for name in CHECK_NAMES]


def store_check_results(store_path) -> list[dg.AssetCheckResult]:
    results = []
    for outcome in run_store_checks(store_path):
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
