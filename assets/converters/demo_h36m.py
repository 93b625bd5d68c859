"""Converter for the Human3.6M-like demo layout (docs/raw_layouts.md#demo_h36m)."""

from pathlib import Path

from assets.cameras import Camera
from assets.converters.interface import ConverterOptions
from assets.converters.common import RawExample
from assets.converters.raw_io import RawDataError, camera_from_json, json_field, load_json, load_npy

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
        cameras[str(json_field(entry, "id", path, where))] = camera_from_json(entry, path, where)
    if not cameras:
        raise RawDataError(path, "cameras", "at least one camera", "an empty list")
    return cameras


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
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
