"""Converter for ASPset-510 exactly as released (docs/converters/aspset.md).

Raw layout (the archives ``aspset510_v1_*.tar.gz`` extracted side by side)::

    splits.csv                                            no header; subject_id, clip_id, split, camera_id
    {trainval,test}/cameras/<subj>/<subj>-<cam>.json      intrinsic_matrix (3x4 = K|0), extrinsic_matrix (4x4)
    {trainval,test}/joints_3d/<subj>/<subj>-<clip>.c3d    17 joints per frame, world frame, POINT:UNITS (mm)
    {trainval,test}/boxes/<subj>/<subj>-<clip>-<cam>.csv  a header row, then x1,y1,x2,y2 per frame
    {trainval,test}/videos/<subj>/<subj>-<clip>-<cam>.mkv 3840x2160, 50 fps
    {trainval,test}/frames/<subj>/<subj>-<clip>-<cam>/%06d.jpg   optional pre-extracted frames, 0-based

Clips of split ``train`` and ``val`` live under ``trainval/``, ``test`` clips under ``test/`` (the official
toolkit's ``Clip._rel_path``). ``camera_id`` ``all`` means left, mid and right; test clips name one camera.
The test joints ship in a separate archive (released 2024): a test clip without its C3D file is skipped
with a log message; a train/val clip without it is an error.

The world frame is the left camera's (its extrinsic is the identity); the extrinsics map world -> camera
in mm. Row i of a C3D file is video frame i. One example per clip, camera and frame that has a box row
(an empty row skips the frame) and is a multiple of ``frame_step``; pose3d is the 17 joints in that
camera's frame in mm. The boxes also check the calibration: the joints, projected through the camera,
must fall near the boxes in most frames (option ``check_boxes``).

Identifiers: subject ``<subj>``, sequence ``<subj>-<clip>``, camera ``left``/``mid``/``right``, frame the
0-based video frame.
"""

import csv
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.common import RawExample
from assets.converters.interface import ConverterOptions, OptionError
from assets.converters.raw_io import RawDataError, check_millimetres, load_json, require_file
from assets.converters.video import ExtractedFramesOrVideo

log = logging.getLogger(__name__)

NAME = "aspset"
VERSION = "1"
SKELETON = "aspset_17"
# The videos run at 50 fps; the official test protocol evaluates every 5th frame (10 fps, aspset-510
# evaluation.py / torch temporal_downsample=5 for test). Neighbouring 50 fps frames are near duplicates, so
# every split uses the test protocol's step: the test store holds exactly the evaluated frames.
DEFAULT_FRAME_STEP = 5
CAMERAS = ("left", "mid", "right")  # the official Aspset510.ALL_CAMERA_IDS
DEFAULT_CAMERAS = CAMERAS  # PosePile (posepile/ds/aspset/main.py) uses every view of every clip
EXTRA_OPTIONS = {
    # refuse a camera whose projected joints fall outside the clip's boxes in most frames
    "check_boxes": True,
}

FPS = 50
SPLIT_FOLDERS = {"train": "trainval", "val": "trainval", "test": "test"}
ALL_CAMERAS = "all"
# posekit Aspset17jSkeleton joint names = the C3D POINT:LABELS, in the order of the project's aspset_17
JOINT_LABELS = ("right_ankle", "right_knee", "right_hip", "right_wrist", "right_elbow", "right_shoulder",
                "left_ankle", "left_knee", "left_hip", "left_wrist", "left_elbow", "left_shoulder",
                "head_top", "head", "neck", "spine", "pelvis")
C3D_SKELETON = "aspset_17j"
NUM_JOINTS = len(JOINT_LABELS)
# POINT:UNITS -> factor to millimetres
UNIT_SCALES = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
FRAME_NAME = "{:06d}.jpg"
# box check: a frame agrees when the projected joints' centroid lies in its box grown this much about its
# centre; a camera passes when at least this share of the clip's boxed frames agree
BOX_GROWTH = 2.0
MIN_AGREEING_BOXES = 0.5
_IDENTITY_ATOL = 1e-6
_RIGID_ATOL = 1e-4


# -- splits.csv --------------------------------------------------------------------------------

def read_splits(raw_root: Path) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(subject, clip, split, cameras) per row of splits.csv, in file order."""
    path = require_file(raw_root / "splits.csv")
    rows, seen = [], {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RawDataError(path, None, "a CSV file", f"a parse error ({exc})") from None
    for number, row in enumerate(lines, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue  # a blank line
        field = f"row {number}"
        if len(cells) != 4:
            raise RawDataError(path, field, "4 fields subject_id, clip_id, split, camera_id (no header row)",
                               f"{len(cells)} fields {row!r}")
        subject, clip, split, camera = cells
        if split not in SPLIT_FOLDERS:
            raise RawDataError(path, field, f"a split of {list(SPLIT_FOLDERS)} in the third field "
                                            f"(the file has no header row)", repr(split))
        if camera == ALL_CAMERAS:
            cameras = CAMERAS
        elif camera in CAMERAS:
            cameras = (camera,)
        else:
            raise RawDataError(path, field, f"a camera_id of {[*CAMERAS, ALL_CAMERAS]}", repr(camera))
        if not subject or not clip:
            raise RawDataError(path, field, "a subject_id and a clip_id", repr(row))
        if (subject, clip) in seen:
            raise RawDataError(path, field, "each clip once", f"{subject}-{clip} again (first in row "
                                                               f"{seen[subject, clip]})")
        seen[subject, clip] = number
        rows.append((subject, clip, split, cameras))
    if not rows:
        raise RawDataError(path, None, "at least one clip row", "none")
    return rows


# -- cameras -----------------------------------------------------------------------------------

def _matrix(data: dict, key: str, path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A matrix stored as nested rows or as one flat list (row-major); the official loader reshapes both."""
    if not isinstance(data, dict) or key not in data:
        raise RawDataError(path, key, "the field to be present", "it is missing")
    try:
        arr = np.asarray(data[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise RawDataError(path, key, f"{shape[0]}x{shape[1]} numbers (nested rows or a flat list)",
                           repr(data[key])[:80]) from None
    size = shape[0] * shape[1]
    if arr.shape not in ((size,), shape):
        raise RawDataError(path, key, f"{shape[0]}x{shape[1]} numbers (nested rows or a flat list of {size})",
                           f"shape {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise RawDataError(path, key, "finite numbers", f"{int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr.reshape(shape)


def load_camera(path: Path, camera: str) -> Camera:
    """A camera JSON as a Camera (world = left camera frame, mm; no lens distortion)."""
    data = load_json(path)
    intrinsic = _matrix(data, "intrinsic_matrix", path, (3, 4))
    extrinsic = _matrix(data, "extrinsic_matrix", path, (4, 4))
    if np.any(np.abs(intrinsic[:, 3]) > 1e-9):
        raise RawDataError(path, "intrinsic_matrix", "a 3x4 matrix K|0 (last column zero)",
                           f"last column {intrinsic[:, 3].tolist()}")
    if not np.allclose(extrinsic[3], [0, 0, 0, 1], atol=1e-9):
        raise RawDataError(path, "extrinsic_matrix", "a 4x4 rigid world->camera transform (last row 0 0 0 1)",
                           f"last row {extrinsic[3].tolist()}")
    rotation = extrinsic[:3, :3]
    if np.abs(rotation @ rotation.T - np.eye(3)).max() > _RIGID_ATOL or np.linalg.det(rotation) < 0:
        raise RawDataError(path, "extrinsic_matrix", "a rotation part that is a proper rotation",
                           f"{rotation.tolist()}")
    if camera == "left" and not (np.allclose(rotation, np.eye(3), atol=_IDENTITY_ATOL)
                                 and np.allclose(extrinsic[:3, 3], 0, atol=1e-3)):
        raise RawDataError(path, "extrinsic_matrix",
                           "the identity (ASPset's world frame is the left camera's)", f"{extrinsic.tolist()}")
    try:
        return Camera(K=intrinsic[:, :3], R=rotation, t=extrinsic[:3, 3], name=str(path))
    except ValueError as exc:
        raise RawDataError(path, "intrinsic_matrix", "[[fx,s,cx,0],[0,fy,cy,0],[0,0,1,0]] with fx,fy > 0",
                           str(exc)) from None


# -- joints (C3D) ------------------------------------------------------------------------------

def _param_text(reader, name: str) -> str | None:
    param = reader.get(name)
    if param is None:
        return None
    return param.bytes.decode("latin-1").replace("\x00", " ").strip()


def read_joints(path: Path) -> np.ndarray:
    """[frames, 17, 3] world mm in aspset_17 order; NaN where the file marks a point invalid."""
    import c3d  # pure-Python C3D reader: only this converter needs it

    require_file(path)
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reader warns (instead of failing) on a truncated file
            reader = c3d.Reader(handle)
            used, expected_frames = int(reader.point_used), int(reader.frame_count)
            if used != NUM_JOINTS:
                raise RawDataError(path, "POINT:USED", f"{NUM_JOINTS} points (the aspset_17j joints)", f"{used}")
            units, rate = _param_text(reader, "POINT:UNITS"), reader.get("POINT:RATE")
            labels_param, skeleton = reader.get("POINT:LABELS"), _param_text(reader, "POINT:SKEL")
            labels = [str(s).strip() for s in np.ravel(labels_param.string_array)] if labels_param else None
            frames = [points[:, :4].copy() for _, points, _ in reader.read_frames()]
    except RawDataError:
        raise
    except Exception as exc:  # the reader raises anything from struct.error to ValueError on a bad file
        raise RawDataError(path, None, "a readable C3D file", f"a read error ({type(exc).__name__}: {exc})") from None
    if units is None:
        raise RawDataError(path, "POINT:UNITS", f"one of {list(UNIT_SCALES)}", "no such parameter")
    if units.lower() not in UNIT_SCALES:
        raise RawDataError(path, "POINT:UNITS", f"one of {list(UNIT_SCALES)}", repr(units))
    point_rate = float(rate.float_value) if rate is not None else float("nan")
    if not math.isclose(point_rate, FPS, rel_tol=1e-6):
        raise RawDataError(path, "POINT:RATE", f"{FPS} (frame i of the file is video frame i)", f"{point_rate:g}")
    if skeleton is not None and skeleton != C3D_SKELETON:
        raise RawDataError(path, "POINT:SKEL", repr(C3D_SKELETON), repr(skeleton))
    order = list(range(NUM_JOINTS))
    if labels is not None and any(labels):
        if sorted(labels) != sorted(JOINT_LABELS):
            raise RawDataError(path, "POINT:LABELS", f"the aspset_17j joint names {list(JOINT_LABELS)}", f"{labels}")
        order = [labels.index(name) for name in JOINT_LABELS]
    if not frames or len(frames) != expected_frames:
        raise RawDataError(path, None, f"{expected_frames} frames of point data (the header's count)",
                           f"{len(frames)} (a truncated file?)")
    points = np.stack(frames).astype(np.float64)[:, order]
    joints = points[..., :3] * UNIT_SCALES[units.lower()]
    joints[points[..., 3] < 0] = np.nan  # residual -1: the point is invalid in that frame
    check_millimetres(joints, path, "POINT:UNITS", SKELETON)
    return joints


# -- boxes -------------------------------------------------------------------------------------

def read_boxes(path: Path) -> np.ndarray:
    """[frames, 4] x1, y1, x2, y2 (frame pixels) after the header row; NaN rows for frames without a box."""
    require_file(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RawDataError(path, None, "a CSV file", f"a parse error ({exc})") from None
    while lines and not any(c.strip() for c in lines[-1]):
        lines.pop()  # blank lines at the end of the file are not frames
    if not lines:
        raise RawDataError(path, None, "a header row, then x1,y1,x2,y2 per frame", "an empty file")
    header = lines[0]
    try:
        [float(c) for c in header]
        numeric_header = len(header) > 0
    except ValueError:
        numeric_header = False
    if numeric_header:
        raise RawDataError(path, "row 1", "a header row (the official loader skips one)", f"numbers {header!r}")
    boxes = np.full((len(lines) - 1, 4), np.nan)
    for i, row in enumerate(lines[1:]):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue  # an empty row: no box in this frame
        field = f"row {i + 2} (frame {i})"
        if len(cells) != 4:
            raise RawDataError(path, field, "4 numbers x1,y1,x2,y2", f"{len(cells)} fields {row!r}")
        try:
            box = np.array([float(c) for c in cells])
        except ValueError:
            raise RawDataError(path, field, "4 numbers x1,y1,x2,y2", repr(row)) from None
        if np.all(np.isnan(box)):
            continue
        if not np.all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
            raise RawDataError(path, field, "finite x1 <= x2 and y1 <= y2", repr(row))
        boxes[i] = box
    return boxes


def _check_boxes(joints_cam: np.ndarray, boxes: np.ndarray, camera: Camera, camera_path: Path,
                 box_path: Path) -> None:
    """Most boxed frames must have the projected joints near their box (catches a wrong calibration)."""
    boxed = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    if not len(boxed):
        return
    agree = 0
    for f in boxed:
        pose = joints_cam[f]
        front = np.isfinite(pose).all(axis=1) & (pose[:, 2] > 0)
        if not front.any():
            continue
        centre = camera.camera_to_image(pose[front]).mean(axis=0)
        x1, y1, x2, y2 = boxes[f]
        mid, half = np.array([x1 + x2, y1 + y2]) / 2, np.array([x2 - x1, y2 - y1]) / 2 * BOX_GROWTH
        agree += bool(np.all(np.abs(centre - mid) <= half + 1.0))
    if agree < MIN_AGREEING_BOXES * len(boxed):
        raise RawDataError(camera_path, "extrinsic_matrix",
                           f"a calibration that projects the joints into the boxes of {box_path} (option check_boxes)",
                           f"the joints near the box in {agree} of {len(boxed)} frames")


# -- frames ------------------------------------------------------------------------------------

def _frame_source(split_dir: Path, subject: str, clip: str, camera: str) -> ExtractedFramesOrVideo:
    """Pre-extracted jpgs where present, otherwise frames decoded from the clip's video."""
    stem = f"{subject}-{clip}-{camera}"
    folder = split_dir / "frames" / subject / stem
    return ExtractedFramesOrVideo(folder, split_dir / "videos" / subject / f"{stem}.mkv", FRAME_NAME,
                                  f"the clip's video (or its frames in {folder}/%06d.jpg)")


# -- reading -----------------------------------------------------------------------------------

def _settings(options: ConverterOptions) -> dict:
    extra = {**EXTRA_OPTIONS, **options.extra}
    if not isinstance(extra["check_boxes"], bool):
        raise OptionError("check_boxes", f"must be true or false, got {extra['check_boxes']!r}")
    return extra


def read_examples(raw_root: Path, options: ConverterOptions | None = None):
    raw_root = Path(raw_root)
    options = options or ConverterOptions(frame_step=DEFAULT_FRAME_STEP, cameras=DEFAULT_CAMERAS)
    settings = _settings(options)
    chosen = options.cameras or CAMERAS
    cameras: dict[Path, Camera] = {}
    for subject, clip, split, clip_cameras in read_splits(raw_root):
        views = [c for c in clip_cameras if c in chosen]
        if not views:
            continue
        split_dir = raw_root / SPLIT_FOLDERS[split]
        c3d_path = split_dir / "joints_3d" / subject / f"{subject}-{clip}.c3d"
        if not c3d_path.is_file():
            if split == "test":
                log.warning("aspset: skipping test clip %s-%s: no joints at %s (the test joints ship in their "
                            "own archive, aspset510_v1_test-joints_3d.tar.gz)", subject, clip, c3d_path)
                continue
            raise RawDataError(c3d_path, None, f"the joints of {split} clip {subject}-{clip} (splits.csv)",
                               "no such file")
        world = read_joints(c3d_path)
        for view in views:
            camera_path = split_dir / "cameras" / subject / f"{subject}-{view}.json"
            if camera_path not in cameras:
                cameras[camera_path] = load_camera(camera_path, view)
            camera = cameras[camera_path]
            box_path = split_dir / "boxes" / subject / f"{subject}-{clip}-{view}.csv"
            boxes = read_boxes(box_path)
            if len(boxes) > len(world):
                raise RawDataError(box_path, None, f"at most {len(world)} box rows (the frames of {c3d_path})",
                                   f"{len(boxes)}")
            joints_cam = camera.world_to_camera(world[:len(boxes)])
            if settings["check_boxes"]:
                _check_boxes(joints_cam, boxes, camera, camera_path, box_path)
            in_front = (np.isfinite(joints_cam).all(axis=-1) & (joints_cam[..., 2] > 0)).any(axis=-1)
            frames = [f for f in range(len(boxes))
                      if options.keeps_frame(f) and np.isfinite(boxes[f]).all() and in_front[f]]
            if not frames:
                continue
            source = _frame_source(split_dir, subject, clip, view)
            for f in frames:
                image_path, frame_index = source.locate(f)
                yield RawExample(image_path=image_path, frame_index=frame_index, frame_camera=camera, split=split,
                                 subject=subject, sequence=f"{subject}-{clip}", frame=f, camera=view,
                                 pose3d=joints_cam[f], world_known=True)
