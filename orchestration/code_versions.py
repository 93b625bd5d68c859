"""Code versions of the assets: bump one when its logic changes, so Dagster and the runner re-run it."""

import hashlib

from assets.converters import CONVERTERS, get_converter
from assets.pseudo_gt import PSEUDO_GT_VERSION


def _converters_version() -> str:
    versions = ",".join(f"{name}={get_converter(name).VERSION}" for name in sorted(CONVERTERS))
    return f"dataset-v1-{hashlib.sha256(versions.encode()).hexdigest()[:10]}"


CODE_VERSIONS = {
    "dataset": _converters_version(),
    "pseudo_gt": f"pseudo-gt-v{PSEUDO_GT_VERSION}",
    "training_pool": "training-pool-v1",
    "initial_model": "initial-model-v1",
    "all_skeleton_pseudo_gt": "all-skeleton-pseudo-gt-v1",
    "acae": "acae-v1",
    "final_model": "final-model-v1",
    "benchmark": "benchmark-v1",
}
