"""Converter for the generic demo layout (docs/raw_layouts.md#demo_format): any registered skeleton.

One converter serves every dataset written in this layout, so its skeleton is not a constant: ``dataset.json``
names it (``SKELETON = None`` and ``skeleton_of``, see assets/converters/interface.py), and its joint names
must match the registered format's, in order, so a file written for another version of the format is
refused instead of silently mislabelling joints.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.common import RawExample
from assets.converters.interface import ConverterOptions
from assets.converters.raw_io import (RawDataError, camera_from_json, check_millimetres, json_field, load_json,
                                      load_npy)
from assets.skeletons import Skeleton, UnknownSkeletonError, get_skeleton
from assets.store import SPLITS

NAME = "demo_format"
VERSION = "1"
SKELETON = None  # per raw folder: skeleton_of(raw_root)
DEFAULT_FRAME_STEP = 1
LABEL_KINDS = ("3d", "2d")


@dataclass(frozen=True)
class DatasetDescription:
    skeleton: Skeleton
    labels: str  # one of LABEL_KINDS
    subjects: dict[str, str]  # subject -> split


@dataclass(frozen=True)
class CameraViews:
    """A camera's calibration in each frame: one for a static camera, one per frame for a moving one."""

    name: str
    views: tuple[Camera, ...]
    moving: bool

    def at(self, frame: int) -> Camera:
        return self.views[frame] if self.moving else self.views[0]


def read_description(raw_root: Path) -> DatasetDescription:
    path = Path(raw_root) / "dataset.json"
    content = load_json(path)
    name = json_field(content, "skeleton", path)
    try:
        skeleton = get_skeleton(str(name))
    except UnknownSkeletonError:
        raise RawDataError(path, "skeleton", "a registered skeleton format (assets/skeleton_formats.json)",
                           repr(name)) from None
    joint_names = json_field(content, "joint_names", path)
    if joint_names != list(skeleton.joint_names):
        raise RawDataError(path, "joint_names", f"the {skeleton.num_joints} joint names of {skeleton.name} in "
                                                f"its order {list(skeleton.joint_names)}", repr(joint_names)[:200])
    labels = json_field(content, "labels", path)
    if labels not in LABEL_KINDS:
        raise RawDataError(path, "labels", f"one of {LABEL_KINDS}", repr(labels))
    subjects = json_field(content, "subjects", path)
    if not isinstance(subjects, dict) or not subjects:
        raise RawDataError(path, "subjects", "a non-empty object subject -> split", repr(subjects)[:80])
    for subject, split in subjects.items():
        if split not in SPLITS:
            raise RawDataError(path, f"subjects.{subject}", f"one of {SPLITS}", repr(split))
    return DatasetDescription(skeleton=skeleton, labels=labels, subjects=dict(subjects))


def skeleton_of(raw_root: Path) -> str:
    return read_description(raw_root).skeleton.name


def read_cameras(path: Path) -> list[CameraViews]:
    calibration = load_json(path)
    entries = json_field(calibration, "cameras", path)
    if not isinstance(entries, list) or not entries:
        raise RawDataError(path, "cameras", "a non-empty list of cameras", repr(entries)[:80])
    cameras = []
    for i, entry in enumerate(entries):
        where = f"cameras[{i}]"
        name = str(json_field(entry, "id", path, where))
        if "frames" in entry:
            frames = entry["frames"]
            if not isinstance(frames, list) or not frames:
                raise RawDataError(path, f"{where}.frames", "a non-empty list of per-frame calibrations",
                                   repr(frames)[:80])
            views = tuple(camera_from_json(frame, path, f"{where}.frames[{f}]") for f, frame in enumerate(frames))
            cameras.append(CameraViews(name, views, moving=True))
        else:
            cameras.append(CameraViews(name, (camera_from_json(entry, path, where),), moving=False))
    return cameras


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
    raw_root = Path(raw_root)
    description = read_description(raw_root)
    folders = sorted(p.name for p in raw_root.iterdir() if p.is_dir())
    unlisted = [name for name in folders if name not in description.subjects]
    if unlisted:
        raise RawDataError(raw_root / "dataset.json", "subjects", "a split for every subject folder",
                           f"none for {unlisted}")
    examples = []
    for subject in sorted(description.subjects):
        sequences = sorted(p for p in (raw_root / subject).glob("*") if p.is_dir())
        if not sequences:
            raise RawDataError(raw_root / subject, None, "sequence folders <subject>/<sequence>/", "none")
        for folder in sequences:
            examples.extend(_sequence_examples(folder, description, subject))
    return examples


def _sequence_examples(folder: Path, description: DatasetDescription, subject: str) -> list[RawExample]:
    skeleton = description.skeleton
    num_joints = skeleton.num_joints
    cameras_path = folder / "cameras.json"
    cameras = read_cameras(cameras_path)
    world = None
    if description.labels == "3d":
        poses_path = folder / "poses3d.npy"
        world = load_npy(poses_path, "poses3d", (-1, num_joints, 3), allow_nan=True)
        check_millimetres(world, poses_path, "poses3d", skeleton.name)
    examples = []
    for c, camera in enumerate(cameras):
        labels_2d = None
        if world is None:
            labels_path = folder / f"poses2d.{camera.name}.npy"
            labels_2d = load_npy(labels_path, "poses2d", (-1, num_joints, 3))
            if not np.all(np.isin(labels_2d[..., 2], (0, 1))):
                raise RawDataError(labels_path, "poses2d[..., 2]", "visible flags 0 or 1",
                                   str(np.unique(labels_2d[..., 2])[:10]))
        num_frames = len(world) if world is not None else len(labels_2d)
        if camera.moving and len(camera.views) != num_frames:
            raise RawDataError(cameras_path, f"cameras[{c}].frames", f"one calibration per frame ({num_frames})",
                               str(len(camera.views)))
        boxes = load_npy(folder / f"crops.{camera.name}.npy", "crop_boxes", (num_frames, 4))
        for f in range(num_frames):
            frame_camera = camera.at(f)
            pose3d = pose2d = None
            if world is not None:
                pose3d = frame_camera.world_to_camera(world[f])
            else:
                pose2d = labels_2d[f, :, :2].astype(np.float64)
                pose2d[labels_2d[f, :, 2] == 0] = np.nan
            examples.append(RawExample(
                image_path=folder / "images" / camera.name / f"{f:06d}.jpg", frame_camera=frame_camera,
                crop_box=boxes[f], pose3d=pose3d, pose2d=pose2d, split=description.subjects[subject],
                subject=subject, sequence=f"{subject}/{folder.name}", frame=f, camera=camera.name))
    return examples
