"""What the experiments' reports share: where their files go (the report, each file written atomically,
and the training runs), JSON whose missing numbers are null, and the wording of counts and training runs."""

import json
import math

from assets.atomic_files import write_bytes_atomically
from assets.locations import Location, location

RUNS_FOLDER = "runs"  # an experiment's training runs, a folder each, beside its report


def json_text(document) -> str:
    """``document`` as JSON, with NaN and infinities (numbers that could not be computed) as null."""
    return json.dumps(_without_nan(document), indent=1, allow_nan=False)


def write_files(folder, contents: dict[str, bytes]) -> list[Location]:
    """Each {file name: content} into ``folder`` (local or on an object store), each written atomically."""
    folder = location(folder)
    return [write_bytes_atomically(folder / name, content) for name, content in contents.items()]


def counted(count: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def training_time_cells(run: dict | None) -> list[str]:
    """A report's table cells of a training run (a dict with steps, resumed_from, seconds and
    images_per_second; None for a model that was not trained): its seconds and crops per second, or
    "reused" for a finished run found in its folder, which did not train again."""
    if run is None:
        return ["", ""]
    if run["resumed_from"] >= run["steps"]:
        return ["reused", ""]
    return [f"{run['seconds']:.0f}", f"{run['images_per_second']:.0f}"]


def _without_nan(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value
