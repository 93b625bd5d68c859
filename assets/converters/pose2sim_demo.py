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


def read_manifest(raw_root: Path, layout_version: int = LAYOUT_VERSION) -> tuple[Path, dict]:
    """The recording's ``manifest.json`` (path, content), its layout version and skeleton checked."""
    manifest_path = Path(raw_root) / "manifest.json"
    manifest = load_json(manifest_path)
    version = json_field(manifest, "layout_version", manifest_path)
    if version != layout_version:
        raise RawDataError(manifest_path, "layout_version", str(layout_version), repr(version))
    skeleton = json_field(manifest, "skeleton", manifest_path)
    if skeleton != SKELETON:
        raise RawDataError(manifest_path, "skeleton", repr(SKELETON), repr(skeleton))
    return manifest_path, manifest


def manifest_cameras(raw_root: Path, manifest_path: Path, manifest: dict) -> dict[str, Camera]:
    """The manifest's cameras in its order, each with its calibration from ``calibration/cameras.json``."""
    calibration_path = Path(raw_root) / "calibration" / "cameras.json"
    calibrated = read_cameras(calibration_path)
    cameras = {}
    for name in json_field(manifest, "cameras", manifest_path):
        if name not in calibrated:
            raise RawDataError(calibration_path, "cameras", f"a camera named {name!r} (listed in the manifest)",
                               f"only {sorted(calibrated)}")
        cameras[name] = calibrated[name]
    return cameras


def frame_offsets(entry: dict, cameras, manifest_path: Path, where: str = "") -> dict[str, int]:
    """``entry["frame_offsets"]``: each camera's offset (global frame = video frame - offset)."""
    offsets = json_field(entry, "frame_offsets", manifest_path, where)
    field = f"{where}.frame_offsets" if where else "frame_offsets"
    found = {}
    for name in cameras:
        offset = json_field(offsets, name, manifest_path, field)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise RawDataError(manifest_path, f"{field}.{name}", "a whole number of frames", repr(offset))
        found[name] = offset
    return found


def read_detections(path: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A camera's ``detections/<camera>.npz``: (its arrays, frames [N], landmarks [N, 33, 3], crop boxes
    [N, 4], confidence [N, 33] in [0, 1] with 0 for missing)."""
    data = load_npz(path)
    frames = npz_field(data, "frames", path, (-1,))
    landmarks = npz_field(data, "landmarks", path, (len(frames), NUM_JOINTS, 3), allow_nan=True)
    boxes = npz_field(data, "crop_boxes", path, (len(frames), 4), allow_nan=True)
    confidence = np.nan_to_num(landmarks[..., 2].astype(np.float64), nan=0.0)
    if np.any((confidence < 0) | (confidence > 1)):
        raise RawDataError(path, "landmarks[..., 2]", "visibilities in [0, 1]",
                           f"range {confidence.min():.3g}..{confidence.max():.3g}")
    return data, frames, landmarks, boxes, confidence


def detected_pose(path: Path, row: int, landmarks: np.ndarray, boxes: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Pixels [33, 2] of a detection (NaN where its visibility is 0), its crop box checked."""
    if not np.isfinite(boxes[row]).all() or np.any(boxes[row, 2:] <= 0):
        raise RawDataError(path, f"crop_boxes[{row}]", "a finite box with positive size for a detected person",
                           str(boxes[row].tolist()))
    uv = landmarks[row, :, :2].astype(np.float64)
    uv[confidence[row] <= 0] = np.nan
    return uv


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
    raw_root = Path(raw_root)
    manifest_path, manifest = read_manifest(raw_root)
    test_from = int(json_field(manifest, "test_from_frame", manifest_path))
    subject = str(json_field(manifest, "subject", manifest_path))
    sequence = str(json_field(manifest, "sequence", manifest_path))
    cameras = manifest_cameras(raw_root, manifest_path, manifest)
    offsets = frame_offsets(manifest, cameras, manifest_path)

    examples = []
    for name, camera in cameras.items():
        path = raw_root / "detections" / f"{name}.npz"
        _, frames, landmarks, boxes, confidence = read_detections(path)
        detected = (confidence > 0).any(axis=-1)
        for i in np.flatnonzero(detected):
            uv = detected_pose(path, i, landmarks, boxes, confidence)
            video_frame = int(frames[i])
            frame = video_frame - offsets[name]
            examples.append(RawExample(
                image_path=raw_root / "images" / name / f"{video_frame:06d}.jpg",
                frame_camera=camera, crop_box=boxes[i].astype(np.float64), pose2d=uv,
                confidence=confidence[i], split="test" if frame >= test_from else "train",
                subject=subject, sequence=sequence, frame=frame, camera=name))
    return examples
