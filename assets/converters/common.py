"""What every converter shares: the parsed-example record and the crop-to-canonical-store pipeline.

A converter module only parses its raw annotation files into ``RawExample`` records (``read_examples``).
``convert`` then does the rest the same way for every dataset: load each image file, reproject the
person to a square, undistorted, person-centred virtual camera, move labels into that camera's frame,
and stream everything into an atomically written canonical store.
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, UnidentifiedImageError

from assets.cameras import Camera, reproject_image
from assets.converters.interface import ConverterOptions, resolve_options
from assets.converters.raw_io import RawDataError
from assets.converters.video import VideoFrames
from assets.skeletons import get_skeleton
from assets.store import SPLITS, StoreWriter, fingerprint_paths

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 128
# the square crop side relative to the larger side of the tight box around the labelled joints
BOX_PADDING = 1.3
# Uncalibrated images get a narrow-FOV pinhole, as MeTRAbs does for 2D-only data
ASSUMED_FOV_DEGREES = 8.0
_WRITE_BATCH = 64


@dataclass
class RawExample:
    """One person in one image file, as parsed from raw annotations (before any image is loaded)."""

    image_path: Path  # an image file, or a video when frame_index is set
    frame_camera: Camera  # camera of the original frame; extrinsics meaningful only if world_known
    split: str
    subject: str
    sequence: str
    frame: int
    camera: str
    crop_box: np.ndarray | None = None  # frame region (x, y, w, h) the image file shows; None = whole frame
    pose3d: np.ndarray | None = None  # [J,3] mm in the frame camera's coordinates, NaN = unlabelled
    pose2d: np.ndarray | None = None  # [J,2] frame pixels, NaN = unlabelled
    confidence: np.ndarray | None = None  # [J] detector confidence, 0 = missed
    world_known: bool = True
    assumed_camera: bool = False  # frame_camera was made up from the image size (no calibration)
    frame_index: int | None = None  # 0-based frame of the video at image_path


@dataclass
class ConversionResult:
    path: Path
    num_examples: int
    counts: dict
    seconds: float
    raw_fingerprint: str
    attrs: dict = field(default_factory=dict)


def assumed_camera(width: int, height: int, fov_degrees: float = ASSUMED_FOV_DEGREES) -> Camera:
    focal = max(width, height) / (2 * np.tan(np.radians(fov_degrees) / 2))
    return Camera(K=[[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])


def load_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise RawDataError(path, None, "an existing image file", "no such file")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise RawDataError(path, None, "a decodable image", f"a decode error ({exc})") from None


def image_of(example: RawExample, videos: VideoFrames) -> np.ndarray:
    """The example's whole image: an image file, or a frame decoded from a video."""
    if example.frame_index is not None:
        return videos.frame(example.image_path, example.frame_index)
    return load_image(example.image_path)


def _decode_order(example: RawExample) -> tuple:
    return ("", -1) if example.frame_index is None else (str(example.image_path), example.frame_index)


def _kept(example: RawExample, options: ConverterOptions) -> bool:
    return options.keeps_frame(example.frame) and (not options.cameras or example.camera in options.cameras)


def _labelled_2d(example: RawExample) -> np.ndarray:
    """Frame-pixel positions of the labelled joints (from 3D labels where present)."""
    if example.pose3d is not None and np.isfinite(example.pose3d).all(axis=-1).any():
        uv = np.full((len(example.pose3d), 2), np.nan)
        ok = np.isfinite(example.pose3d).all(axis=-1) & (example.pose3d[:, 2] > 0)
        uv[ok] = example.frame_camera.camera_to_image(example.pose3d[ok])
        return uv
    uv = np.array(example.pose2d, dtype=np.float64)
    if example.confidence is not None:
        uv[~(example.confidence > 0)] = np.nan
    return uv


def person_box(uv: np.ndarray) -> np.ndarray:
    ok = np.isfinite(uv).all(axis=-1)
    lo, hi = uv[ok].min(axis=0), uv[ok].max(axis=0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def canonical_crop(example: RawExample, image: np.ndarray, image_size: int) -> dict:
    """Reproject one example to the canonical square crop and express its labels there."""
    skeleton_uv = _labelled_2d(example)
    if not np.isfinite(skeleton_uv).all(axis=-1).any():
        raise RawDataError(example.image_path, "joints", "at least one labelled joint", "none")
    box = person_box(skeleton_uv)
    h, w = image.shape[:2]
    file_camera = example.frame_camera if example.crop_box is None else example.frame_camera.cropped(
        example.crop_box, (w, h))

    frame_cam = example.frame_camera
    center_uv = box[:2] + box[2:] / 2
    center_ray = np.append(frame_cam.image_to_normalized(center_uv), 1.0)
    side_px = max(box[2], box[3], 1.0) * BOX_PADDING
    # the box's angular size at the principal ray decides the virtual focal length
    half = frame_cam.image_to_normalized(np.array([center_uv - [side_px / 2, 0], center_uv + [side_px / 2, 0]]))
    side_normalized = max(np.linalg.norm(half[1] - half[0]), 1e-6)
    focal = image_size / side_normalized
    virtual = frame_cam.looking_at(center_ray, focal, image_size)
    crop = reproject_image(image, file_camera, virtual, (image_size, image_size))

    rotation = virtual.R @ frame_cam.R.T  # frame camera coords -> virtual camera coords
    num_joints = len(skeleton_uv)
    pose3d = np.full((num_joints, 3), np.nan)
    if example.pose3d is not None:
        pose3d = np.asarray(example.pose3d, dtype=np.float64) @ rotation.T
    pose2d = np.full((num_joints, 2), np.nan)
    labelled3d = np.isfinite(pose3d).all(axis=-1) & (pose3d[:, 2] > 0)
    pose2d[labelled3d] = virtual.camera_to_image(pose3d[labelled3d])
    if example.pose2d is not None:
        # a 2D label of its own wins over the projection of the 3D one, so that the reprojection check
        # compares two independent labels (and catches a camera or axis mistake in either)
        labelled2d = np.isfinite(example.pose2d).all(axis=-1)
        rays = np.concatenate([frame_cam.image_to_normalized(example.pose2d[labelled2d]),
                               np.ones((labelled2d.sum(), 1))], axis=-1) @ rotation.T
        pose2d[labelled2d] = virtual.camera_to_image(rays)
    valid = np.isfinite(pose2d).all(axis=-1)
    if example.confidence is not None:
        valid &= example.confidence > 0
    pose2d[~valid] = np.nan
    extrinsics = virtual.extrinsic_matrix if example.world_known else np.full((4, 4), np.nan)
    return {
        "image": crop,
        "pose3d": pose3d,
        "pose2d": pose2d,
        "joint_valid": valid,
        "intrinsics": virtual.K,
        "distortion": virtual.dist,
        "extrinsics": extrinsics,
        "bbox": box,
    }


def _codes(values: list[str]) -> tuple[list[str], dict]:
    table = sorted(set(values))
    return table, {v: i for i, v in enumerate(table)}


def convert(
    converter: ModuleType,
    raw_root,
    out_path,
    *,
    dataset_name: str | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    progress: Callable[[str], None] | None = None,
    options: ConverterOptions | dict | None = None,
    data_version: str | None = None,
    gate: Callable[[Path], None] | None = None,
) -> ConversionResult:
    """Parse ``raw_root`` with ``converter`` and publish a new version of the canonical store at ``out_path``.

    ``gate`` sees the finished, unpublished version and raises to refuse it (e.g. failed blocking
    checks): the version is discarded and the previous one stays current.
    """
    started = time.perf_counter()
    report = progress or log.info
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise RawDataError(raw_root, None, "a raw dataset folder", "no such folder")
    if not isinstance(options, ConverterOptions):
        options = resolve_options(converter, options)
    examples = [ex for ex in converter.read_examples(raw_root, options) if _kept(ex, options)]
    if not examples:
        raise RawDataError(raw_root, None, "at least one example", "none found")
    skeleton = get_skeleton(converter.SKELETON)
    for ex in examples:
        for name in ("pose3d", "pose2d"):
            arr = getattr(ex, name)
            if arr is not None and arr.shape[0] != skeleton.num_joints:
                raise RawDataError(ex.image_path, name, f"{skeleton.num_joints} joints of {skeleton.name}",
                                   f"{arr.shape[0]}")
    unknown_splits = sorted({ex.split for ex in examples} - set(SPLITS))
    if unknown_splits:
        raise ValueError(f"converter {converter.NAME}: unknown splits {unknown_splits}; expected {SPLITS}")

    fingerprint = fingerprint_paths([raw_root], extra=f"{converter.NAME}:{converter.VERSION}:{image_size}:"
                                                      f"{json.dumps(options.as_dict(), sort_keys=True)}")
    code_tables, code_maps = {}, {}
    for key in ("subject", "sequence", "camera"):
        code_tables[key], code_maps[key] = _codes([getattr(ex, key) for ex in examples])
    has_confidence = any(ex.confidence is not None for ex in examples)
    attrs = {
        "dataset": dataset_name or converter.NAME,
        "skeleton": skeleton.name,
        "converter": converter.NAME,
        "converter_version": converter.VERSION,
        "raw_fingerprint": fingerprint,
        "raw_root": str(raw_root),
        "image_size": image_size,
        "codes": {**code_tables, "split": list(SPLITS)},
        "has_pose3d": any(ex.pose3d is not None for ex in examples),
        "intrinsics_assumed": any(ex.assumed_camera for ex in examples),
        "converter_options": options.as_dict(),
    }
    report(f"{attrs['dataset']}: {len(examples)} examples parsed from {raw_root}")
    optional = ("confidence2d",) if has_confidence else ()
    # video frames decode fastest in file order
    examples.sort(key=_decode_order)
    videos = VideoFrames()
    with videos, StoreWriter(out_path, len(examples), attrs, optional_arrays=optional,
                             data_version=data_version) as writer:
        for start in range(0, len(examples), _WRITE_BATCH):
            batch = examples[start:start + _WRITE_BATCH]
            crops = [canonical_crop(ex, image_of(ex, videos), image_size) for ex in batch]
            columns = {k: np.stack([c[k] for c in crops]) for k in crops[0]}
            columns["split"] = np.array([SPLITS.index(ex.split) for ex in batch])
            columns["frame"] = np.array([ex.frame for ex in batch])
            for key in ("subject", "sequence", "camera"):
                columns[key] = np.array([code_maps[key][getattr(ex, key)] for ex in batch])
            if has_confidence:
                columns["confidence2d"] = np.stack([
                    ex.confidence if ex.confidence is not None else np.ones(skeleton.num_joints) for ex in batch])
            writer.write(start, **columns)
            done = start + len(batch)
            if done == len(examples) or (done // _WRITE_BATCH) % 8 == 0:
                report(f"{attrs['dataset']}: {done}/{len(examples)} examples "
                       f"({time.perf_counter() - started:.1f} s)")
        path = writer.commit(gate)
        counts = dict(writer.attrs["counts"])
    seconds = time.perf_counter() - started
    report(f"{attrs['dataset']}: wrote {path} in {seconds:.1f} s ({counts})")
    return ConversionResult(path=Path(path), num_examples=len(examples), counts=counts, seconds=seconds,
                            raw_fingerprint=fingerprint, attrs=attrs)
