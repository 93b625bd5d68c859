"""Converter for CMU Panoptic Studio sequences as the panoptic-toolbox downloads them (docs/converters/panoptic.md).

The raw root is a folder of sequence folders, or one sequence folder itself. Per sequence ``<seq>/``:

* ``calibration_<seq>.json``: ``{"cameras": [...]}`` with every HD ("00_XX"), VGA and Kinect camera; each has
  ``name``, ``type``, ``resolution`` [w, h], ``K`` 3x3, ``distCoef`` (k1, k2, p1, p2, k3: OpenCV), ``R`` 3x3 and
  ``t`` (a 3x1 nested list), world->camera, in CENTIMETRES (t x 10 -> mm). Only HD cameras are read.
* ``hdPose3d_stage1_coco19/body3DScene_%08d.json`` (or, as ``tar --one-top-level`` can leave them, one level
  deeper in ``hdPose3d_stage1_coco19/hd/``): ``{"bodies": [{"id": k, "joints19": [x, y, z, c] x 19}]}``, world
  CENTIMETRES, the world's y axis pointing DOWN. The number in the file name is the HD frame index.
* frames from ``hdImgs/00_XX/00_XX_%08d.jpg`` (scripts/hdImgsExtractor.sh: ``ffmpeg -start_number 0``, so the
  0-based HD frame index, the same as body3DScene's), or decoded from ``hdVideos/hd_00_XX.mp4`` where no
  ``hdImgs/00_XX`` folder holds the frame. An HD camera with neither gives no examples.

Joints: ``joints19`` is in the project's ``coco_19`` order already (Neck, Nose, BodyCenter = ``pelv``, lShoulder,
..., rEar; not OpenPose's order). A joint whose confidence is <= 0.1 (the toolbox draws ``c > 0.1``; a -1
marker falls under it too) is unlabelled (NaN). As PosePile does, a body is kept only if at least ``min_joints`` (6) joints remain,
and it gives an example in a camera only if at least ``min_joints`` of them are in front of the camera and
inside its frame.

One example per body and HD camera and kept frame; all in split ``train`` (Panoptic is training data only).
Subject ``<seq>/<body id>`` (ids track a person within one sequence only), sequence ``<seq>``, camera ``00_XX``,
frame = the HD frame index.
"""

import logging
import math
import re
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.common import RawExample
from assets.converters.interface import ConverterOptions, OptionError
from assets.converters.raw_io import RawDataError, load_json, median_bone_mm

log = logging.getLogger(__name__)

NAME = "panoptic"
VERSION = "1"
SKELETON = "coco_19"
# HD video is 29.97 fps: frames 33 ms apart are near duplicates (a walking person moves a few cm). Every 10th
# frame is 3 samples per second per camera, and each sample is seen by up to 31 HD cameras.
DEFAULT_FRAME_STEP = 10
CAMERAS = tuple(f"00_{node:02d}" for node in range(31))  # HD panel 0, nodes 0..30
DEFAULT_CAMERAS = CAMERAS
EXTRA_OPTIONS = {
    # a body needs this many labelled joints, and an example this many of them inside the camera's frame
    # (PosePile: >= 6 joints with confidence > 0.1, >= 6 joints visible in the 1920x1080 frame)
    "min_joints": 6,
}

SPLIT = "train"
NUM_JOINTS = 19
VALUES_PER_JOINT = 4  # x, y, z, confidence
MIN_CONFIDENCE = 0.1  # c <= this: not reconstructed (the toolbox demo plots c > 0.1; PosePile sets c <= 0.1 to NaN)
CM_TO_MM = 10.0
POSE_FOLDER = "hdPose3d_stage1_coco19"
NESTED_POSE_FOLDER = "hd"  # hdPose3d_stage1_coco19/hd/, as `tar --one-top-level` can extract it
BODY_FILE = re.compile(r"^body3DScene_(\d+)\.json$")
IMAGE_EXTENSIONS = ("jpg", "png")  # hdImgsExtractor.sh writes jpg unless told png
# units checks, in mm after the x10: a median coco_19 bone is ~100-400 mm, an HD camera is ~2-4 m from the people
MEDIAN_BONE_MM = (10.0, 1000.0)
CAMERA_DISTANCE_MM = (500.0, 20000.0)
_ROTATION_TOLERANCE = 1e-3
# a joint counts as inside the frame only if its pinhole projection is near the frame too: far outside the
# field of view a distortion polynomial folds points back into the image
_PINHOLE_MARGIN = 0.5


# -- options ----------------------------------------------------------------------------------------------

def _min_joints(options: ConverterOptions) -> int:
    value = options.extra.get("min_joints", EXTRA_OPTIONS["min_joints"])
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= NUM_JOINTS:
        raise OptionError("min_joints", f"must be a whole number from 1 to {NUM_JOINTS}, got {value!r}")
    return value


# -- sequences --------------------------------------------------------------------------------------------

def _looks_like_sequence(folder: Path) -> bool:
    return (any(folder.glob("calibration_*.json")) or (folder / POSE_FOLDER).is_dir()
            or (folder / f"{POSE_FOLDER}.tar").is_file())


def _calibration_file(folder: Path) -> Path:
    own = folder / f"calibration_{folder.name}.json"
    if own.is_file():
        return own
    found = sorted(p for p in folder.glob("calibration_*.json") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise RawDataError(own, None, "the sequence's calibration file calibration_<seq>.json", "no such file")
    raise RawDataError(folder, None, f"one calibration_<seq>.json (or calibration_{folder.name}.json)",
                       f"{len(found)}: {[p.name for p in found]}")


def sequence_folders(raw_root: Path) -> list[tuple[str, Path, Path]]:
    """(sequence name, folder, calibration file) of the raw root itself, or of each sequence folder in it."""
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise RawDataError(raw_root, None, "a raw dataset folder", "no such folder")
    folders = [raw_root] if _looks_like_sequence(raw_root) else sorted(
        p for p in raw_root.iterdir() if p.is_dir() and _looks_like_sequence(p))
    if not folders:
        raise RawDataError(raw_root, None, "sequence folders <seq>/ holding calibration_<seq>.json and "
                                           f"{POSE_FOLDER}/ (or one such folder as the raw root)", "none")
    found = []
    for folder in folders:
        calibration = _calibration_file(folder)
        found.append((calibration.stem[len("calibration_"):], folder, calibration))
    names = [name for name, _, _ in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RawDataError(raw_root, None, "each sequence once", f"{duplicates} in several folders")
    return found


# -- calibration ------------------------------------------------------------------------------------------

def _is_hd(entry: dict) -> bool:
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind is not None:
        return kind == "hd"
    return isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"].startswith("00_")


def _list_field(path: Path, data, field: str, items: str) -> list:
    """``data[field]`` of a JSON file's top-level object, which must be a list of ``items``."""
    if not isinstance(data, dict) or field not in data:
        raise RawDataError(path, field, "the field to be present", "it is missing")
    if not isinstance(data[field], list):
        raise RawDataError(path, field, f"a list of {items}", type(data[field]).__name__)
    return data[field]


def hd_entries(path: Path) -> dict[str, dict]:
    """name -> calibration entry of every HD camera in a calibration file (VGA and Kinect cameras are skipped
    without being read)."""
    cameras = _list_field(path, load_json(path), "cameras", "camera objects")
    entries = {}
    for i, entry in enumerate(cameras):
        if not isinstance(entry, dict):
            raise RawDataError(path, f"cameras[{i}]", "a camera object", type(entry).__name__)
        if not _is_hd(entry):
            continue
        name = entry.get("name")
        if not isinstance(name, str):
            raise RawDataError(path, f"cameras[{i}].name", "the HD camera's name (\"00_XX\")", repr(name))
        if name in entries:
            raise RawDataError(path, f"cameras[{name}]", "each camera once", "listed twice")
        entries[name] = entry
    return entries


def _numbers(entry: dict, key: str, path: Path, name: str, size: int, what: str) -> np.ndarray:
    field = f"cameras[{name}].{key}"
    if key not in entry:
        raise RawDataError(path, field, "the field to be present", "it is missing")
    try:
        arr = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise RawDataError(path, field, what, repr(entry[key])[:80]) from None
    if arr.size != size or (size == 9 and arr.shape != (3, 3)):
        raise RawDataError(path, field, what, f"shape {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise RawDataError(path, field, "finite numbers", f"{int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr


def parse_camera(entry: dict, path: Path, name: str, label: str = "") -> tuple[Camera, tuple[int, int]]:
    """One HD camera: world->camera in mm, OpenCV distortion, and its frame size (w, h); ``label`` names the
    Camera in later error messages."""
    K = _numbers(entry, "K", path, name, 9, "a 3x3 matrix")
    dist = _numbers(entry, "distCoef", path, name, 5, "5 coefficients k1, k2, p1, p2, k3")
    R = _numbers(entry, "R", path, name, 9, "a 3x3 rotation matrix")
    t = _numbers(entry, "t", path, name, 3, "3 numbers (a 3x1 nested list [[x], [y], [z]], centimetres)")
    t = t.reshape(-1) * CM_TO_MM
    if np.abs(R @ R.T - np.eye(3)).max() > _ROTATION_TOLERANCE or np.linalg.det(R) < 0:
        raise RawDataError(path, f"cameras[{name}].R", "a proper rotation matrix (world->camera)",
                           f"{np.round(R, 4).tolist()}")
    resolution = entry.get("resolution")
    if (not isinstance(resolution, (list, tuple)) or len(resolution) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1 and float(v).is_integer()
                       for v in resolution)):
        raise RawDataError(path, f"cameras[{name}].resolution", "the frame size [width, height] in pixels",
                           repr(resolution)[:80])
    try:
        camera = Camera(K=K, dist=dist.reshape(-1), R=R, t=t, name=label or name)
    except ValueError as exc:
        raise RawDataError(path, f"cameras[{name}].K", "[[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0",
                           str(exc)) from None
    return camera, (int(resolution[0]), int(resolution[1]))


# -- body files -------------------------------------------------------------------------------------------

def body_files(sequence_dir: Path) -> tuple[Path, list[tuple[int, Path]]]:
    """The folder holding the body3DScene files (hdPose3d_stage1_coco19/ or its hd/) and (HD frame, file),
    ascending, from the flat or the nested layout."""
    folder = sequence_dir / POSE_FOLDER
    if not folder.is_dir():
        tar = sequence_dir / f"{POSE_FOLDER}.tar"
        got = f"no such folder ({tar.name} is there: extract it with tar -xf)" if tar.is_file() else "no such folder"
        raise RawDataError(folder, None, f"the folder of body3DScene_%08d.json files (from {POSE_FOLDER}.tar)", got)
    frames: dict[int, Path] = {}
    for where in (folder, folder / NESTED_POSE_FOLDER):
        if not where.is_dir():
            continue
        for path in sorted(where.iterdir()):
            match = BODY_FILE.match(path.name)
            if not match or not path.is_file():
                continue
            frame = int(match.group(1))
            if frame in frames:
                raise RawDataError(path, None, "each frame's body file once (in hdPose3d_stage1_coco19/ or its "
                                               "hd/ folder, not both)", f"also {frames[frame]}")
            frames[frame] = path
    if not frames:
        raise RawDataError(folder, None, f"body3DScene_%08d.json files (in {POSE_FOLDER}/ or {POSE_FOLDER}/hd/)",
                           "none")
    parents = {path.parent for path in frames.values()}
    return (parents.pop() if len(parents) == 1 else folder), sorted(frames.items())


def read_bodies(path: Path, min_joints: int) -> list[tuple[str, np.ndarray]]:
    """(body id, [19, 3] world mm with NaN for unlabelled joints) of the bodies of one frame that keep at
    least ``min_joints`` labelled joints."""
    bodies = _list_field(path, load_json(path), "bodies", "bodies")
    kept = []
    for i, body in enumerate(bodies):
        if not isinstance(body, dict):
            raise RawDataError(path, f"bodies[{i}]", "a body object", type(body).__name__)
        for key in ("id", "joints19"):
            if key not in body:
                raise RawDataError(path, f"bodies[{i}].{key}", "the field to be present", "it is missing")
        body_id = body["id"]
        if isinstance(body_id, bool) or not isinstance(body_id, (int, float)) or not float(body_id).is_integer():
            raise RawDataError(path, f"bodies[{i}].id", "a whole number", repr(body_id)[:40])
        field = f"bodies[{i}].joints19"
        try:
            values = np.asarray(body["joints19"], dtype=np.float64)
        except (TypeError, ValueError):
            raise RawDataError(path, field, "numbers", repr(body["joints19"])[:80]) from None
        if values.shape != (NUM_JOINTS * VALUES_PER_JOINT,):
            raise RawDataError(path, field, f"{NUM_JOINTS * VALUES_PER_JOINT} numbers ({NUM_JOINTS} joints x "
                                            f"x, y, z, confidence)", f"shape {list(values.shape)}")
        values = values.reshape(NUM_JOINTS, VALUES_PER_JOINT)
        confidence = values[:, 3]
        if np.isnan(confidence).any():
            raise RawDataError(path, field, "a number as each joint's confidence", "NaN")
        labelled = confidence > MIN_CONFIDENCE
        if not np.all(np.isfinite(values[labelled, :3])):
            raise RawDataError(path, field, "finite coordinates for every joint with confidence > 0.1",
                               "non-finite values")
        if labelled.sum() < min_joints:
            continue
        world = np.full((NUM_JOINTS, 3), np.nan)
        world[labelled] = values[labelled, :3] * CM_TO_MM
        kept.append((str(int(body_id)), world))
    return kept


# -- frames -----------------------------------------------------------------------------------------------

def _video_frame_count(path: Path) -> int | None:
    from assets.converters.video import VideoFrameReader

    reader = VideoFrameReader(path)
    try:
        return reader.num_frames or None
    finally:
        reader.close()


class FrameSource:
    """Where one HD camera's frames come from: ``hdImgs/00_XX/00_XX_%08d.jpg`` where present, else the video."""

    def __init__(self, sequence_dir: Path, camera: str):
        self.camera = camera
        self.folder = sequence_dir / "hdImgs" / camera
        self.video = sequence_dir / "hdVideos" / f"hd_{camera}.mp4"
        self.images: dict[int, Path] = {}
        if self.folder.is_dir():
            pattern = re.compile(rf"^{re.escape(camera)}_(\d+)\.({'|'.join(IMAGE_EXTENSIONS)})$")
            for path in sorted(self.folder.iterdir(), key=lambda p: (p.suffix != ".jpg", p.name)):
                match = pattern.match(path.name)
                if match:
                    self.images.setdefault(int(match.group(1)), path)
        self.has_video = self.video.is_file()
        self._last = None

    @property
    def exists(self) -> bool:
        return self.folder.is_dir() or self.has_video

    def last_frame(self) -> float:
        """The last frame the media hold (inf where a video does not say how many frames it has)."""
        if self._last is None:
            last = max(self.images, default=-1)
            if self.has_video:
                count = _video_frame_count(self.video)
                last = max(last, math.inf if count is None else count - 1)
            self._last = last
        return self._last

    def locate(self, frame: int) -> tuple[Path, int | None] | None:
        """(image file, None) or (video, frame index); None for a frame beyond the end of the media."""
        if frame in self.images:
            return self.images[frame], None
        if frame > self.last_frame():
            return None
        if self.has_video:
            return self.video, frame
        raise RawDataError(self.folder / f"{self.camera}_{frame:08d}.jpg", None,
                           f"the extracted frame (or the video {self.video})", "no such file")


def visible_joints(camera: Camera, world: np.ndarray, size: tuple[int, int]) -> int:
    """How many labelled joints are in front of the camera and inside its frame (pixel centres 0..w-1)."""
    points = camera.world_to_camera(world[np.isfinite(world).all(axis=-1)])
    points = points[points[:, 2] > 0]
    if not len(points):
        return 0
    w, h = size
    K = camera.K
    pinhole = (points[:, :2] / points[:, 2:]) @ K[:2, :2].T + K[:2, 2]
    near = ((pinhole[:, 0] > -_PINHOLE_MARGIN * w) & (pinhole[:, 0] < (1 + _PINHOLE_MARGIN) * w)
            & (pinhole[:, 1] > -_PINHOLE_MARGIN * h) & (pinhole[:, 1] < (1 + _PINHOLE_MARGIN) * h))
    uv = camera.camera_to_image(points)
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
    return int(np.count_nonzero(near & inside))


# -- units ------------------------------------------------------------------------------------------------

def _check_units(frames, pose_folder: Path, cameras: dict, calibration: Path) -> None:
    """Joints and t in centimetres: a body's bones and the cameras' distance to the people are plausible."""
    poses = [world for _, _, bodies in frames for _, world in bodies]
    if not poses:
        return
    poses = np.stack(poses)
    median = median_bone_mm(poses, SKELETON)
    lo, hi = MEDIAN_BONE_MM
    if not lo <= median <= hi:
        raise RawDataError(pose_folder, "joints19", f"centimetres (a median bone of {lo / CM_TO_MM:g}-"
                                                    f"{hi / CM_TO_MM:g})", f"a median bone of {median / CM_TO_MM:.3g}")
    people = np.nanmedian(poses.reshape(-1, 3), axis=0)
    distance = float(np.median([np.linalg.norm(cam.center - people) for cam, _ in cameras.values()]))
    lo, hi = CAMERA_DISTANCE_MM
    if not lo <= distance <= hi:
        raise RawDataError(calibration, "t", f"centimetres (HD cameras {lo / CM_TO_MM:g}-{hi / CM_TO_MM:g} from "
                                             f"the people)", f"a median camera distance of {distance / CM_TO_MM:.3g}")


# -- reading ----------------------------------------------------------------------------------------------

def read_examples(raw_root: Path, options: ConverterOptions | None = None):
    raw_root = Path(raw_root)
    options = options or ConverterOptions(frame_step=DEFAULT_FRAME_STEP, cameras=DEFAULT_CAMERAS)
    min_joints = _min_joints(options)
    chosen = sorted(set(options.cameras or CAMERAS))
    for sequence, folder, calibration in sequence_folders(raw_root):
        yield from _sequence_examples(sequence, folder, calibration, chosen, min_joints, options)


def _sequence_examples(sequence, folder, calibration, chosen, min_joints, options):
    sources = {camera: FrameSource(folder, camera) for camera in chosen}
    sources = {camera: source for camera, source in sources.items() if source.exists}
    pose_folder, files = body_files(folder)
    if not sources:
        log.warning("panoptic: %s has no frames or videos of the chosen HD cameras (hdImgs/00_XX/ or "
                    "hdVideos/hd_00_XX.mp4); it gives no examples", folder)
        return
    entries = hd_entries(calibration)
    cameras = {}
    for camera in sources:
        if camera not in entries:
            raise RawDataError(calibration, "cameras", f"HD camera {camera} (its frames or video are on disk)",
                               "not listed")
        cameras[camera] = parse_camera(entries[camera], calibration, camera, f"{sequence}/{camera}")
    frames = []
    for frame, path in files:
        if options.keeps_frame(frame):
            frames.append((frame, path, read_bodies(path, min_joints)))
    _check_units(frames, pose_folder, cameras, calibration)
    for camera, source in sources.items():
        frame_camera, size = cameras[camera]
        beyond = 0
        for frame, _, bodies in frames:
            shown = [(body_id, world) for body_id, world in bodies
                     if visible_joints(frame_camera, world, size) >= min_joints]
            if not shown:
                continue
            located = source.locate(frame)
            if located is None:
                beyond += 1
                continue
            image_path, frame_index = located
            for body_id, world in shown:
                yield RawExample(image_path=image_path, frame_index=frame_index, frame_camera=frame_camera,
                                 split=SPLIT, subject=f"{sequence}/{body_id}", sequence=sequence, frame=frame,
                                 camera=camera, pose3d=frame_camera.world_to_camera(world), world_known=True)
        if beyond:
            log.warning("panoptic: %s/%s: %d annotated frames lie beyond the end of its frames/video; skipped",
                        sequence, camera, beyond)
