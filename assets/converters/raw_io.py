"""Reading raw annotation files with errors that name the file, the field and what was expected."""

import json
import zipfile
from pathlib import Path

import numpy as np

from assets.cameras import Camera


class RawDataError(ValueError):
    """A raw input file is missing, truncated or malformed."""

    def __init__(self, path, field: str | None, expected: str, got: str | None = None):
        self.path, self.field, self.expected, self.got = Path(path), field, expected, got
        where = f"{path}" + (f": field {field!r}" if field else "")
        super().__init__(f"{where}: expected {expected}" + (f", got {got}" if got is not None else ""))


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise RawDataError(path, None, "an existing file", "no such file")
    return path


def load_json(path: Path):
    require_file(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RawDataError(path, None, "valid JSON", f"a parse error ({exc})") from None


def json_field(obj: dict, key: str, path: Path, parent: str = ""):
    name = f"{parent}.{key}" if parent else key
    if not isinstance(obj, dict) or key not in obj:
        raise RawDataError(path, name, "the field to be present", "it is missing")
    return obj[key]


def as_array(value, path: Path, field: str, shape: tuple, dtype=np.float64) -> np.ndarray:
    """Convert a parsed value to an array of the given shape (-1 = any length) with finite numbers."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise RawDataError(path, field, f"numbers of shape {shape}", repr(value)[:80]) from None
    if not _shape_matches(arr.shape, shape):
        raise RawDataError(path, field, f"shape {_shape_text(shape)}", str(arr.shape))
    return arr


def camera_from_json(entry: dict, path: Path, where: str, *, dist_key: str = "dist", t_shape: tuple = (3,),
                     t_scale: float = 1.0) -> Camera:
    """A Camera from a JSON object with K, distortion, R and t; errors name the file and the field."""
    fields = {key: json_field(entry, key, path, where) for key in ("K", dist_key, "R", "t")}
    try:
        return Camera(
            K=as_array(fields["K"], path, f"{where}.K", (3, 3)),
            dist=as_array(fields[dist_key], path, f"{where}.{dist_key}", (5,)),
            R=as_array(fields["R"], path, f"{where}.R", (3, 3)),
            t=as_array(fields["t"], path, f"{where}.t", t_shape).reshape(3) * t_scale,
        )
    except RawDataError:
        raise
    except ValueError as exc:
        raise RawDataError(path, where, "a valid camera", str(exc)) from None


def load_npy(path: Path, field: str, shape: tuple, allow_nan: bool = False) -> np.ndarray:
    """Load an .npy array and check its shape; -1 in ``shape`` accepts any length."""
    require_file(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RawDataError(path, field, "a readable .npy array", f"an unreadable file ({exc})") from None
    return check_array(arr, path, field, shape, allow_nan)


def load_npz(path: Path) -> dict:
    require_file(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise RawDataError(path, None, "a readable .npz archive", f"an unreadable file ({exc})") from None


def npz_field(data: dict, key: str, path: Path, shape: tuple, allow_nan: bool = False) -> np.ndarray:
    if key not in data:
        raise RawDataError(path, key, "the array to be present", f"only {sorted(data)}")
    return check_array(data[key], path, key, shape, allow_nan)


def check_array(arr: np.ndarray, path: Path, field: str, shape: tuple, allow_nan: bool = False) -> np.ndarray:
    if not _shape_matches(arr.shape, shape):
        raise RawDataError(path, field, f"shape {_shape_text(shape)}", str(arr.shape))
    if not np.issubdtype(arr.dtype, np.number):
        raise RawDataError(path, field, "a numeric array", str(arr.dtype))
    if not allow_nan and not np.all(np.isfinite(arr)):
        raise RawDataError(path, field, "finite numbers", f"{int(np.sum(~np.isfinite(arr)))} non-finite values")
    if allow_nan and np.any(np.isinf(arr)):
        raise RawDataError(path, field, "finite numbers or NaN", f"{int(np.sum(np.isinf(arr)))} infinite values")
    return arr


def _shape_matches(actual: tuple, expected: tuple) -> bool:
    return len(actual) == len(expected) and all(e == -1 or a == e for a, e in zip(actual, expected))


def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join("*" if s == -1 else str(s) for s in shape) + "]"


# below this median bone length (mm) labels are in metres (real bones are 30-500 mm)
MIN_MEDIAN_BONE_MM = 10.0


def median_bone_mm(poses: np.ndarray, skeleton_name: str) -> float:
    """Median length over the skeleton's edges of the labelled poses [N, J, 3] (NaN if nothing is labelled)."""
    from assets.skeletons import get_skeleton

    edges = np.array(get_skeleton(skeleton_name).edges)
    lengths = np.linalg.norm(poses[:, edges[:, 0]] - poses[:, edges[:, 1]], axis=-1)
    lengths = lengths[np.isfinite(lengths)]
    return float(np.median(lengths)) if lengths.size else float("nan")


def check_millimetres(poses: np.ndarray, path: Path, field: str, skeleton_name: str) -> None:
    median = median_bone_mm(poses, skeleton_name)
    if np.isfinite(median) and median < MIN_MEDIAN_BONE_MM:
        raise RawDataError(path, field, f"millimetres (median bone >= {MIN_MEDIAN_BONE_MM:g})",
                           f"a median bone of {median:.3g} (metres?)")
