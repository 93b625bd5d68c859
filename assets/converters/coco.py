"""Converter for the COCO person keypoints release (2D only; docs/converters/coco.md).

Raw layout, as released (annotations_trainval2017.zip and the image zips unzipped side by side)::

    annotations/person_keypoints_train2017.json      (or ..._train2014.json)
    annotations/person_keypoints_val2017.json        (or ..._val2014.json)
    train2017/<images[i].file_name>                  (or train2014/)
    val2017/<images[i].file_name>                    (or val2014/)

(image folders under ``images/`` -- ``images/val2017/`` -- are accepted too.)

Each JSON holds ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``id``,
``image_id``, ``category_id``, ``iscrowd``, ``num_keypoints``, ``keypoints`` = 17 x (x, y, v) flat) and
``categories`` (the person category with its 17 ``keypoints`` names). ``v`` is 0 for an unlabelled
keypoint (then x = y = 0: it becomes NaN, never a joint at pixel (0, 0)), 1 for labelled but not visible
and 2 for labelled and visible (both are labels). Keypoints are integer pixel indices, which is this
project's pixel-centre convention ((0, 0) = centre of the top-left pixel): they are used as they are.

One example per person annotation (crowd annotations and those without keypoints skipped), the crop
centred on that person. No camera: the frame camera is ``assumed_camera(width, height)`` of the image
entry. Splits: train -> ``train``, val -> ``val``. Codes: ``sequence`` = ``<image folder>/<image id>``
(the image), ``subject`` = ``<image folder>/<annotation id>`` (COCO has no person identities: each
annotation is its own person), ``frame`` = the annotation's 0-based position in the file's
``annotations`` list (what ``frame_step`` counts), ``camera`` = ``unknown``.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from assets.converters.common import RawExample, assumed_camera
from assets.converters.interface import ConverterOptions, OptionError
from assets.converters.raw_io import RawDataError, as_array, json_field, load_json
from assets.skeletons import get_skeleton

NAME = "coco"
VERSION = "1"
SKELETON = "coco_17"
DEFAULT_FRAME_STEP = 1  # every person annotation: COCO is small per image and every person is a distinct one
CAMERAS: tuple[str, ...] = ()  # photographs from unknown cameras: no camera choice
DEFAULT_CAMERAS: tuple[str, ...] = ()
EXTRA_OPTIONS = {
    # which release's file names to read: 2017 or 2014; "auto" reads 2017 where its annotation files are
    # present and 2014 otherwise. The two releases hold the same images in other splits (val2017 is part
    # of val2014, the rest of val2014 went into train2017), so they are never mixed.
    "year": "auto",
    # the splits to read (each needs its annotation file and image folder)
    "splits": ["train", "val"],
    # skip annotations with fewer labelled keypoints (v > 0); 1 keeps every person that has any
    "min_keypoints": 1,
}

YEARS = (2017, 2014)
SPLITS = {"train": "train", "val": "val"}
ANNOTATION_FILE = "annotations/person_keypoints_{split}{year}.json"
CAMERA_NAME = "unknown"
PERSON = "person"
# categories[person].keypoints of the release, in file order; the skeleton coco_17 names them by its
# short names in the same order
KEYPOINT_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
NUM_JOINTS = len(KEYPOINT_NAMES)
UNLABELLED, OCCLUDED, VISIBLE = 0, 1, 2


# -- options --------------------------------------------------------------------------------------------
def _year_option(value) -> int | None:
    """None for "auto", else the release year."""
    if value == "auto" or value is None:
        return None
    if isinstance(value, bool):
        raise OptionError("year", f"must be one of 'auto', {', '.join(map(str, YEARS))}, got {value!r}")
    try:
        year = int(value)
    except (TypeError, ValueError):
        year = None
    if year not in YEARS:
        raise OptionError("year", f"must be one of 'auto', {', '.join(map(str, YEARS))}, got {value!r}")
    return year


def _splits_option(value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(v in SPLITS for v in value):
        raise OptionError("splits", f"must be a non-empty list of {sorted(SPLITS)}, got {value!r}")
    return [s for s in SPLITS if s in value]  # file order: train, then val


def _min_keypoints_option(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= NUM_JOINTS:
        raise OptionError("min_keypoints", f"must be a whole number from 1 to {NUM_JOINTS}, got {value!r}")
    return value


def annotation_file(raw_root: Path, split: str, year: int) -> Path:
    return Path(raw_root) / ANNOTATION_FILE.format(split=split, year=year)


def resolve_year(raw_root: Path, splits: list[str], year: int | None) -> int:
    """The release year to read: the option's, or (auto) 2017 where its files are present, else 2014."""
    if year is not None:
        return year
    for candidate in YEARS:
        if any(annotation_file(raw_root, split, candidate).is_file() for split in splits):
            return candidate
    expected = annotation_file(raw_root, splits[0], YEARS[0])
    raise RawDataError(expected, None, f"the annotation file (or its {YEARS[1]} name "
                                       f"{annotation_file(raw_root, splits[0], YEARS[1]).name})", "no such file")


# -- parsing --------------------------------------------------------------------------------------------
def _list_field(data: dict, key: str, path: Path) -> list:
    value = json_field(data, key, path)
    if not isinstance(value, list):
        raise RawDataError(path, key, "a list", type(value).__name__)
    return value


def _int_field(entry: dict, key: str, path: Path, where: str) -> int:
    value = json_field(entry, key, path, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise RawDataError(path, f"{where}.{key}", "a whole number", repr(value)[:80])
    return int(value)


def _person_category(data: dict, path: Path) -> int:
    """The person category's id, after checking its keypoint names against the expected order."""
    categories = _list_field(data, "categories", path)
    for i, category in enumerate(categories):
        if isinstance(category, dict) and category.get("name") == PERSON:
            where = f"categories[{i}]"
            names = json_field(category, "keypoints", path, where)
            if not isinstance(names, list) or tuple(names) != KEYPOINT_NAMES:
                raise RawDataError(path, f"{where}.keypoints", f"the {NUM_JOINTS} COCO keypoint names in the order "
                                                               f"{', '.join(KEYPOINT_NAMES)}", repr(names)[:300])
            return _int_field(category, "id", path, where)
    raise RawDataError(path, "categories", f"a category named {PERSON!r}",
                       repr([c.get("name") if isinstance(c, dict) else c for c in categories])[:200])


def _keypoints(annotation: dict, path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [17, 2] with NaN where unlabelled, flags [17]) of one annotation."""
    field = f"{where}.keypoints"
    value = json_field(annotation, "keypoints", path, where)
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        # numpy would quietly read "12" as 12.0
        raise RawDataError(path, field, f"a flat list of {NUM_JOINTS} x (x, y, v) numbers", repr(value)[:120])
    flat = as_array(value, path, field, (NUM_JOINTS * 3,))
    if not np.all(np.isfinite(flat)):
        raise RawDataError(path, field, "finite numbers", f"{int(np.sum(~np.isfinite(flat)))} non-finite values")
    triples = flat.reshape(NUM_JOINTS, 3)
    flags = triples[:, 2]
    if not np.all(np.isin(flags, (UNLABELLED, OCCLUDED, VISIBLE))):
        raise RawDataError(path, field, "visibility flags v of 0 (unlabelled), 1 (labelled, not visible) or "
                                        "2 (labelled, visible)", str(sorted(set(flags.tolist())))[:80])
    uv = triples[:, :2].copy()
    uv[flags == UNLABELLED] = np.nan  # stored as (0, 0): not a joint at the top-left pixel
    return uv, flags.astype(np.int64)


class _Images:
    """The ``images`` entries by id; each image's entry and file are checked once, when first used."""

    def __init__(self, data: dict, path: Path, folder: Path):
        self.path, self.folder = path, folder
        self.index: dict[int, int] = {}
        self.entries = _list_field(data, "images", path)
        for i, entry in enumerate(self.entries):
            image_id = _int_field(entry, "id", path, f"images[{i}]")
            if image_id in self.index:
                raise RawDataError(path, f"images[{i}].id", "ids listed once",
                                   f"{image_id} also at images[{self.index[image_id]}]")
            self.index[image_id] = i
        self.checked: dict[int, tuple[Path, int, int]] = {}

    def get(self, image_id: int, where: str) -> tuple[Path, int, int]:
        """(image file, width, height) of ``image_id``, named by annotation ``where``."""
        if image_id in self.checked:
            return self.checked[image_id]
        if image_id not in self.index:
            raise RawDataError(self.path, f"{where}.image_id", "the id of an entry of images",
                               f"{image_id}, which images does not list")
        i = self.index[image_id]
        entry, at = self.entries[i], f"images[{i}]"
        file_name = json_field(entry, "file_name", self.path, at)
        if not isinstance(file_name, str) or not file_name or Path(file_name).is_absolute() \
                or ".." in Path(file_name).parts:
            raise RawDataError(self.path, f"{at}.file_name", "a file name inside the image folder",
                               repr(file_name)[:80])
        width, height = (_int_field(entry, key, self.path, at) for key in ("width", "height"))
        if width < 1 or height < 1:
            raise RawDataError(self.path, f"{at}.width/height", "a positive image size", f"{width}x{height}")
        image_path = self.folder / file_name
        if not image_path.is_file():
            raise RawDataError(image_path, f"{at}.file_name",
                               f"the image file {self.folder.name}/{file_name} of {self.path.name} {at}",
                               "no such file")
        # the header only (PIL reads the size without decoding): the assumed camera is made from the
        # JSON's size, and the crop samples the file, so the two must agree
        try:
            with Image.open(image_path) as img:
                size = img.size
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise RawDataError(image_path, None, "a decodable image", f"a decode error ({exc})") from None
        if size != (width, height):
            raise RawDataError(image_path, f"{at}.width/height",
                               f"an image of {width}x{height} px, as {self.path.name} {at} says",
                               f"{size[0]}x{size[1]} px")
        self.checked[image_id] = (image_path, width, height)
        return self.checked[image_id]


def _read_split(raw_root: Path, split: str, year: int, options: ConverterOptions,
                min_keypoints: int) -> Iterator[RawExample]:
    path = annotation_file(raw_root, split, year)
    data = load_json(path)
    if not isinstance(data, dict):
        raise RawDataError(path, None, "a JSON object with images, annotations and categories",
                           f"a JSON {type(data).__name__}")
    person = _person_category(data, path)
    annotations = _list_field(data, "annotations", path)
    folder_name = f"{split}{year}"
    folder = raw_root / folder_name
    if not folder.is_dir() and (raw_root / "images" / folder_name).is_dir():
        folder = raw_root / "images" / folder_name  # where HRNet's loader (lib/dataset/coco.py) looks
    images = _Images(data, path, folder)
    if annotations and not folder.is_dir():
        raise RawDataError(folder, None, f"the image folder {folder_name}/ (or images/{folder_name}/) of "
                                         f"{path.name}", "no such folder")
    for index, annotation in enumerate(annotations):
        where = f"annotations[{index}]"
        if not isinstance(annotation, dict):
            raise RawDataError(path, where, "a JSON object", type(annotation).__name__)
        if _int_field(annotation, "category_id", path, where) != person:
            continue  # not a person: nothing of it is read (person_keypoints files hold persons only)
        iscrowd = _int_field(annotation, "iscrowd", path, where)
        if iscrowd not in (0, 1):
            raise RawDataError(path, f"{where}.iscrowd", "0 or 1", str(iscrowd))
        if iscrowd:
            continue  # a crowd region: no keypoints, many people
        if _int_field(annotation, "num_keypoints", path, where) == 0:
            continue
        uv, flags = _keypoints(annotation, path, where)
        if np.count_nonzero(flags != UNLABELLED) < min_keypoints:
            continue
        if not options.keeps_frame(index):
            continue
        annotation_id = _int_field(annotation, "id", path, where)
        image_id = _int_field(annotation, "image_id", path, where)
        image_path, width, height = images.get(image_id, where)
        yield RawExample(image_path=image_path, frame_camera=assumed_camera(width, height), split=SPLITS[split],
                         subject=f"{folder_name}/{annotation_id}", sequence=f"{folder_name}/{image_id}",
                         frame=index, camera=CAMERA_NAME, pose2d=uv, world_known=False, assumed_camera=True)


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> Iterator[RawExample]:
    raw_root = Path(raw_root)
    options = options or ConverterOptions(frame_step=DEFAULT_FRAME_STEP, extra=dict(EXTRA_OPTIONS))
    year = _year_option(options.extra.get("year", EXTRA_OPTIONS["year"]))
    splits = _splits_option(options.extra.get("splits", EXTRA_OPTIONS["splits"]))
    min_keypoints = _min_keypoints_option(options.extra.get("min_keypoints", EXTRA_OPTIONS["min_keypoints"]))
    skeleton = get_skeleton(SKELETON)
    if skeleton.num_joints != NUM_JOINTS:  # pragma: no cover - a registry edit that breaks the joint order
        raise RuntimeError(f"skeleton {SKELETON} has {skeleton.num_joints} joints, COCO files {NUM_JOINTS}")
    year = resolve_year(raw_root, splits, year)
    for split in splits:
        yield from _read_split(raw_root, split, year, options, min_keypoints)
