"""Converter for the MPII Human Pose release, 2D labels only (docs/converters/mpii.md).

Raw layout, as released (``mpii_human_pose_v1_u12_2.zip`` and ``mpii_human_pose_v1.tar.gz`` unpacked side by
side)::

    mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat   MATLAB v5, variable RELEASE (also accepted at the root,
                                                             where ``unzip -j`` puts it)
    images/<RELEASE.annolist(i).image.name>                 the JPEG images

``RELEASE.annolist(i).annorect(r).annopoints.point(p)`` holds ``x``, ``y`` (MATLAB 1-based pixels), ``id``
(0-based joint id, 0 r ankle ... 15 l wrist = the order of skeleton ``mpii_16``) and ``is_visible``. Loaded with
``loadmat(struct_as_record=False, squeeze_me=True)``, which turns every 1-element struct array into a bare struct
(an image with one person, a person with one point): every struct array goes through ``np.atleast_1d``.

One example per annotated person (a rect with non-empty ``annopoints``) of the training images
(``RELEASE.img_train == 1``); test images and rects without ``annopoints`` (only ``scale``/``objpos``) are skipped.
Joints absent from ``point`` are unlabelled (NaN); a point that is present is a label whatever its ``is_visible``.
The images are uncalibrated: the frame camera is ``assumed_camera(w, h)`` with the size read from the image
file's header only.
"""

import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from assets.converters.common import RawExample, assumed_camera
from assets.converters.interface import ConverterOptions, OptionError
from assets.converters.raw_io import RawDataError

NAME = "mpii"
VERSION = "1"
SKELETON = "mpii_16"
NUM_JOINTS = 16
# PosePile (posepile/ds/mpii/main.py) uses every annotated training image; there is no time axis to thin
DEFAULT_FRAME_STEP = 1
CAMERAS: tuple[str, ...] = ()  # internet images of unknown cameras: no camera choice
DEFAULT_CAMERAS: tuple[str, ...] = ()
EXTRA_OPTIONS = {
    # skip persons with fewer annotated points than this (1: every annotated person, as the issue asks;
    # the crop box comes from the labelled joints only, so a person with one or two points gets a tiny crop)
    "min_points": 1,
}

MAT_NAME = "mpii_human_pose_v1_u12_1.mat"
MAT_FOLDER = "mpii_human_pose_v1_u12_2"
IMAGE_FOLDER = "images"
CAMERA_NAME = "unknown"
NO_VIDEO = "images"  # the sequence of images that name no source video

_MAT_ERRORS = (ValueError, TypeError, IndexError, KeyError, OSError, EOFError, AssertionError, zlib.error)


# -- loading -------------------------------------------------------------------------------------

def annotation_file(raw_root: Path) -> Path:
    """The release's .mat: in its zip folder, or at the root (``unzip -j``, as PosePile's download script)."""
    candidates = (raw_root / MAT_FOLDER / MAT_NAME, raw_root / MAT_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise RawDataError(candidates[0], None, f"the MPII annotation file (or {MAT_NAME} at the raw root)",
                       "no such file")


def load_release(path: Path):
    """``RELEASE`` of the annotation file, loaded as MPII loaders do (structs as objects, 1-element arrays squeezed)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path, variable_names=["RELEASE"], struct_as_record=False, squeeze_me=True)
    except NotImplementedError:  # scipy's answer to v7.3 (HDF5) files
        raise RawDataError(path, None, "a MATLAB v5 .mat file", "a MATLAB v7.3 (HDF5) file") from None
    except (MatReadError, *_MAT_ERRORS) as exc:
        raise RawDataError(path, None, "a readable MATLAB v5 .mat file",
                           f"an unreadable or truncated file ({type(exc).__name__}: {exc})") from None
    if "RELEASE" not in mat:
        raise RawDataError(path, "RELEASE", "the MATLAB variable RELEASE (the annotation struct)", "it is missing")
    release = mat["RELEASE"]
    if not _is_struct(release):
        raise RawDataError(path, "RELEASE", "a struct", _describe(release))
    return release


# -- MATLAB values as loaded by scipy ------------------------------------------------------------

def _is_struct(value) -> bool:
    return hasattr(value, "_fieldnames")


def _is_empty(value) -> bool:
    return (isinstance(value, np.ndarray) and value.size == 0) or (isinstance(value, str) and value == "")


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} of shape {list(value.shape)}"
    return f"a {type(value).__name__} ({str(value)[:40]!r})"


def _field(struct, name: str, path: Path, where: str, required: bool = True):
    """A field of a MATLAB struct; None where it is absent and not required."""
    if name in struct._fieldnames:
        return getattr(struct, name)
    if required:
        raise RawDataError(path, f"{where}.{name}", "the field to be present",
                           f"it is missing (fields: {', '.join(struct._fieldnames)})")
    return None


def _structs(value, path: Path, where: str) -> list:
    """A struct array as a list: squeeze_me leaves a bare struct for one element and an empty array for none."""
    if _is_struct(value):
        return [value]
    if _is_empty(value):
        return []
    items = np.atleast_1d(value).ravel()
    if items.dtype != object or not all(_is_struct(item) for item in items):
        raise RawDataError(path, where, "a struct array", _describe(value))
    return list(items)


def _number(value, path: Path, field: str) -> float:
    """A real scalar (squeeze_me gives Python or numpy scalars, or a 1-element array)."""
    arr = np.asarray(value)
    if arr.size != 1 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
                             or arr.dtype == bool):
        raise RawDataError(path, field, "one number", _describe(value))
    number = float(arr.reshape(()))  # to float before any arithmetic: MATLAB coordinates may be unsigned integers
    if not np.isfinite(number):
        raise RawDataError(path, field, "a finite number", repr(number))
    return number


def _whole_number(value, path: Path, field: str) -> int:
    number = _number(value, path, field)
    if number != round(number):
        raise RawDataError(path, field, "a whole number", repr(number))
    return int(number)


def _check_visibility(value, path: Path, field: str) -> None:
    """``is_visible`` is numeric, a string '0'/'1', or empty [MPII loaders]. It never decides whether a point is
    a label (an annotated occluded joint is still a label); it is only checked to catch a misread structure."""
    if value is None or _is_empty(value):
        return
    if isinstance(value, str):
        if value.strip() in ("0", "1"):
            return
        raise RawDataError(path, field, "0, 1, '0', '1' or empty", repr(value[:20]))
    if _number(value, path, field) not in (0.0, 1.0):
        raise RawDataError(path, field, "0, 1, '0', '1' or empty", repr(np.asarray(value).reshape(()).item()))


# -- parsing -------------------------------------------------------------------------------------

def _train_flags(release, path: Path, count: int) -> np.ndarray:
    raw = np.atleast_1d(_field(release, "img_train", path, "RELEASE")).ravel()
    if raw.dtype == object or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
        raise RawDataError(path, "RELEASE.img_train", "a numeric 1xN vector (1 train, 0 test)", _describe(raw))
    if raw.size != count:
        raise RawDataError(path, "RELEASE.img_train", f"one flag per annolist entry ({count})", f"{raw.size} flags")
    flags = raw.astype(np.float64)
    if not np.all(np.isin(flags, (0.0, 1.0))):
        raise RawDataError(path, "RELEASE.img_train", "flags 0 (test) or 1 (train)",
                           str(np.unique(flags[~np.isin(flags, (0.0, 1.0))])[:5].tolist()))
    return flags == 1.0


def _image_name(anno, path: Path, where: str) -> str:
    image = _field(anno, "image", path, where)
    if not _is_struct(image):
        raise RawDataError(path, f"{where}.image", "a struct with field name", _describe(image))
    name = _field(image, "name", path, f"{where}.image")
    if not isinstance(name, str) or not name.strip():
        raise RawDataError(path, f"{where}.image.name", "an image file name", _describe(name))
    if "/" in name or "\\" in name or name in (".", ".."):
        raise RawDataError(path, f"{where}.image.name", "a plain file name inside images/", repr(name[:80]))
    return name


def _sequence(anno, path: Path, where: str) -> str:
    """The source video (``vididx``, 1-based into video_list; ``vidx`` in some descriptions), else NO_VIDEO."""
    for name in ("vididx", "vidx"):
        value = _field(anno, name, path, where, required=False)
        if value is None or _is_empty(value):
            continue
        index = _whole_number(value, path, f"{where}.{name}")
        if index < 0:
            raise RawDataError(path, f"{where}.{name}", "an index into video_list (1-based)", str(index))
        return f"video{index:05d}"
    return NO_VIDEO


def _person(rect, path: Path, where: str) -> np.ndarray | None:
    """[16, 2] 0-based pixels of one rect's annotated points (NaN = not annotated); None without annopoints."""
    annopoints = _field(rect, "annopoints", path, where, required=False)
    if annopoints is None or _is_empty(annopoints):
        return None  # a rect of a test image or an unannotated person: only scale/objpos
    if not _is_struct(annopoints):
        raise RawDataError(path, f"{where}.annopoints", "a struct with field point", _describe(annopoints))
    points = _structs(_field(annopoints, "point", path, f"{where}.annopoints"), path, f"{where}.annopoints.point")
    if not points:
        return None
    uv = np.full((NUM_JOINTS, 2), np.nan)
    for p, point in enumerate(points):
        at = f"{where}.annopoints.point({p + 1})"
        joint = _whole_number(_field(point, "id", path, at), path, f"{at}.id")
        if not 0 <= joint < NUM_JOINTS:
            raise RawDataError(path, f"{at}.id", f"a 0-based joint id 0..{NUM_JOINTS - 1}", str(joint))
        if np.isfinite(uv[joint]).all():
            raise RawDataError(path, f"{at}.id", "each joint id once per person", f"id {joint} again")
        x = _number(_field(point, "x", path, at), path, f"{at}.x")
        y = _number(_field(point, "y", path, at), path, f"{at}.y")
        _check_visibility(_field(point, "is_visible", path, at, required=False), path, f"{at}.is_visible")
        uv[joint] = (x - 1.0, y - 1.0)  # MATLAB pixel (1, 1) is the centre of the top-left pixel, here (0, 0)
    return uv


def _image_size(image_path: Path, field: str) -> tuple[int, int]:
    """(width, height) from the image file's header: Pillow opens lazily and decodes no pixels here."""
    from PIL import Image, UnidentifiedImageError

    if not image_path.is_file():
        raise RawDataError(image_path, field, "the image file images/<name>", "no such file")
    try:
        with Image.open(image_path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise RawDataError(image_path, field, "a readable image file", f"an unreadable header ({exc})") from None
    if width < 1 or height < 1:
        raise RawDataError(image_path, field, "a non-empty image", f"{width}x{height}")
    return width, height


def _min_points(options: ConverterOptions) -> int:
    value = options.extra.get("min_points", EXTRA_OPTIONS["min_points"])
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= NUM_JOINTS:
        raise OptionError("min_points", f"must be a whole number from 1 to {NUM_JOINTS}, got {value!r}")
    return value


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> Iterator[RawExample]:
    raw_root = Path(raw_root)
    options = options or ConverterOptions(frame_step=DEFAULT_FRAME_STEP)
    min_points = _min_points(options)
    path = annotation_file(raw_root)
    release = load_release(path)
    annolist = _structs(_field(release, "annolist", path, "RELEASE"), path, "RELEASE.annolist")
    if not annolist:
        raise RawDataError(path, "RELEASE.annolist", "at least one image entry", "none")
    is_train = _train_flags(release, path, len(annolist))
    for i, anno in enumerate(annolist):
        if not is_train[i] or not options.keeps_frame(i):
            continue
        where = f"RELEASE.annolist({i + 1})"
        rects = _structs(_field(anno, "annorect", path, where), path, f"{where}.annorect")
        people = []
        for r, rect in enumerate(rects):
            uv = _person(rect, path, f"{where}.annorect({r + 1})")
            if uv is not None and np.isfinite(uv).all(axis=-1).sum() >= min_points:
                people.append((r, uv))
        if not people:
            continue
        name = _image_name(anno, path, where)
        sequence = _sequence(anno, path, where)
        image_path = raw_root / IMAGE_FOLDER / name
        width, height = _image_size(image_path, f"{where}.image.name")
        camera = assumed_camera(width, height)
        for r, uv in people:
            yield RawExample(image_path=image_path, frame_camera=camera, split="train", subject=f"{name}/{r}",
                             sequence=sequence, frame=i, camera=CAMERA_NAME, pose2d=uv, world_known=False,
                             assumed_camera=True)
