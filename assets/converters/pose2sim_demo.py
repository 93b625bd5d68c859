"""Converter for the Pose2Sim demo recording (docs/pose2sim_demo.md): BlazePose detections, 4 calibrated views.

Like ``demo_multiview2d`` the store gets 2D detections (pose2d + confidence2d) and no 3D; pseudo-GT
triangulation fills in pose3d. Examples are numbered by *global* frame (video frame minus the camera's
sync offset from the manifest), so the views of one instant share a frame number, and the held-out test
tail is the same instant range in every camera.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.interface import ConverterOptions
from assets.converters.common import RawExample
from assets.converters.raw_io import RawDataError, camera_from_json, json_field, load_json, load_npz, npz_field
from assets.real.blazepose import BLAZEPOSE_33, register

NAME = "pose2sim_demo"
VERSION = "1"
SKELETON = BLAZEPOSE_33.name
NUM_JOINTS = BLAZEPOSE_33.num_joints
LAYOUT_VERSION = 1

# the format is also added to the JSON registry; registering here makes the converter work before that
register()


def read_cameras(path: Path) -> dict[str, Camera]:
    calibration = load_json(path)
    units = json_field(calibration, "units", path)
    if units != "mm":
        raise RawDataError(path, "units", "'mm'", repr(units))
    cameras = {}
    for i, entry in enumerate(json_field(calibration, "cameras", path)):
        where = f"cameras[{i}]"
        name = str(json_field(entry, "name", path, where))
        # named, so that triangulation errors say which camera
        cameras[name] = replace(camera_from_json(entry, path, where), name=name)
    return cameras


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
    raw_root = Path(raw_root)
    manifest_path = raw_root / "manifest.json"
    manifest = load_json(manifest_path)
    version = json_field(manifest, "layout_version", manifest_path)
    if version != LAYOUT_VERSION:
        raise RawDataError(manifest_path, "layout_version", str(LAYOUT_VERSION), repr(version))
    skeleton = json_field(manifest, "skeleton", manifest_path)
    if skeleton != SKELETON:
        raise RawDataError(manifest_path, "skeleton", repr(SKELETON), repr(skeleton))
    test_from = int(json_field(manifest, "test_from_frame", manifest_path))
    offsets = json_field(manifest, "frame_offsets", manifest_path)
    subject = str(json_field(manifest, "subject", manifest_path))
    sequence = str(json_field(manifest, "sequence", manifest_path))
    calibration_path = raw_root / "calibration" / "cameras.json"
    cameras = read_cameras(calibration_path)

    examples = []
    for name in json_field(manifest, "cameras", manifest_path):
        if name not in cameras:
            raise RawDataError(calibration_path, "cameras", f"a camera named {name!r} (listed in the manifest)",
                               f"only {sorted(cameras)}")
        offset = int(json_field(offsets, name, manifest_path, "frame_offsets"))
        path = raw_root / "detections" / f"{name}.npz"
        data = load_npz(path)
        frames = npz_field(data, "frames", path, (-1,))
        landmarks = npz_field(data, "landmarks", path, (len(frames), NUM_JOINTS, 3), allow_nan=True)
        boxes = npz_field(data, "crop_boxes", path, (len(frames), 4), allow_nan=True)
        confidence = np.nan_to_num(landmarks[..., 2].astype(np.float64), nan=0.0)
        if np.any((confidence < 0) | (confidence > 1)):
            raise RawDataError(path, "landmarks[..., 2]", "visibilities in [0, 1]",
                               f"range {confidence.min():.3g}..{confidence.max():.3g}")
        detected = (confidence > 0).any(axis=-1)
        for i in np.flatnonzero(detected):
            if not np.isfinite(boxes[i]).all() or np.any(boxes[i, 2:] <= 0):
                raise RawDataError(path, f"crop_boxes[{i}]", "a finite box with positive size for a detected person",
                                   str(boxes[i].tolist()))
            uv = landmarks[i, :, :2].astype(np.float64)
            uv[confidence[i] <= 0] = np.nan
            video_frame = int(frames[i])
            frame = video_frame - offset
            examples.append(RawExample(
                image_path=raw_root / "images" / name / f"{video_frame:06d}.jpg",
                frame_camera=cameras[name], crop_box=boxes[i].astype(np.float64), pose2d=uv,
                confidence=confidence[i], split="test" if frame >= test_from else "train",
                subject=subject, sequence=sequence, frame=frame, camera=name))
    return examples
