"""Converter for the Panoptic-like demo layout (docs/raw_layouts.md#demo_multiview2d): 2D detections only.

The store gets the detections as pose2d with their confidences and no 3D; the pseudo-GT
triangulation stage later fills in pose3d from the calibrated views.
"""

from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.interface import ConverterOptions
from assets.converters.common import RawExample
from assets.converters.raw_io import RawDataError, as_array, camera_from_json, json_field, load_json

NAME = "demo_multiview2d"
VERSION = "1"
SKELETON = "coco_19"
NUM_JOINTS = 19
CENTIMETRES_TO_MM = 10.0


def read_cameras(path: Path) -> dict[str, Camera]:
    calibration = load_json(path)
    cameras = {}
    for i, entry in enumerate(json_field(calibration, "cameras", path)):
        where = f"cameras[{i}]"
        cameras[str(json_field(entry, "name", path, where))] = camera_from_json(
            entry, path, where, dist_key="distCoef", t_shape=(3, 1), t_scale=CENTIMETRES_TO_MM)
    return cameras


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
    examples = []
    calibrations = sorted(raw_root.glob("calibration_*.json"))
    if not calibrations:
        raise RawDataError(raw_root, None, "calibration_<sequence>.json files", "none")
    for calibration_path in calibrations:
        sequence = calibration_path.stem.removeprefix("calibration_")
        cameras = read_cameras(calibration_path)
        for cam_name, camera in cameras.items():
            det_path = raw_root / "detections" / sequence / f"{cam_name}.json"
            detections = load_json(det_path)
            skeleton = json_field(detections, "skeleton", det_path)
            if skeleton != "coco_19":
                raise RawDataError(det_path, "skeleton", "'coco_19'", repr(skeleton))
            for i, entry in enumerate(json_field(detections, "frames", det_path)):
                where = f"frames[{i}]"
                frame = int(json_field(entry, "frame", det_path, where))
                keypoints = as_array(json_field(entry, "keypoints", det_path, where), det_path,
                                     f"{where}.keypoints", (NUM_JOINTS, 3))
                crop_box = as_array(json_field(entry, "crop_box", det_path, where), det_path,
                                    f"{where}.crop_box", (4,))
                confidence = np.nan_to_num(keypoints[:, 2], nan=0.0)
                if np.any((confidence < 0) | (confidence > 1)):
                    raise RawDataError(det_path, f"{where}.keypoints[:, 2]", "confidences in [0, 1]",
                                       str(confidence.round(3).tolist()))
                uv = keypoints[:, :2].copy()
                uv[confidence <= 0] = np.nan
                examples.append(RawExample(
                    image_path=raw_root / "images" / sequence / cam_name / f"{frame:06d}.jpg",
                    frame_camera=camera, crop_box=crop_box, pose2d=uv, confidence=confidence, split="train",
                    subject=sequence, sequence=sequence, frame=frame, camera=cam_name))
    return examples
