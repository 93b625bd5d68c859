"""Converter for the Human3.6M-like demo layout (docs/raw_layouts.md#demo_h36m)."""

from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.common import RawExample
from assets.converters.raw_io import RawDataError, as_array, json_field, load_json, load_npy

NAME = "demo_h36m"
VERSION = "1"
SKELETON = "h36m_17"
NUM_JOINTS = 17
SUBJECT_SPLITS = {"S1": "train", "S5": "train", "S6": "train", "S7": "val", "S9": "test"}


def read_cameras(path: Path) -> dict[str, Camera]:
    calibration = load_json(path)
    cameras = {}
    for i, entry in enumerate(json_field(calibration, "cameras", path)):
        where = f"cameras[{i}]"
        cam_id = str(json_field(entry, "id", path, where))
        try:
            cameras[cam_id] = Camera(
                K=as_array(json_field(entry, "K", path, where), path, f"{where}.K", (3, 3)),
                dist=as_array(json_field(entry, "dist", path, where), path, f"{where}.dist", (5,)),
                R=as_array(json_field(entry, "R", path, where), path, f"{where}.R", (3, 3)),
                t=as_array(json_field(entry, "t", path, where), path, f"{where}.t", (3,)),
            )
        except ValueError as exc:
            if isinstance(exc, RawDataError):
                raise
            raise RawDataError(path, where, "a valid camera", str(exc)) from None
    if not cameras:
        raise RawDataError(path, "cameras", "at least one camera", "an empty list")
    return cameras


def read_examples(raw_root: Path) -> list[RawExample]:
    cameras = read_cameras(raw_root / "calibration.json")
    examples = []
    subjects = sorted(p.name for p in raw_root.glob("S*") if p.is_dir())
    if not subjects:
        raise RawDataError(raw_root, None, "subject folders S<k>/", "none")
    for subject in subjects:
        if subject not in SUBJECT_SPLITS:
            raise RawDataError(raw_root / subject, None, f"a subject of {sorted(SUBJECT_SPLITS)}", subject)
        for pose_file in sorted((raw_root / subject / "poses3d").glob("*.npy")):
            action = pose_file.stem
            world = load_npy(pose_file, "poses3d", (-1, NUM_JOINTS, 3))
            for cam_id, camera in cameras.items():
                crop_file = raw_root / subject / "crops" / f"{action}.{cam_id}.npy"
                boxes = load_npy(crop_file, "crop_boxes", (len(world), 4))
                pose_cam = camera.world_to_camera(world)
                image_dir = raw_root / subject / "images" / f"{action}.{cam_id}"
                for f in range(len(world)):
                    examples.append(RawExample(
                        image_path=image_dir / f"{f:06d}.jpg", frame_camera=camera, crop_box=boxes[f],
                        pose3d=pose_cam[f], split=SUBJECT_SPLITS[subject], subject=subject,
                        sequence=f"{subject}/{action}", frame=f, camera=cam_id))
    return examples
