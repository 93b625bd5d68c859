"""What every converter shares: the parsed-example record and the crop-to-canonical-store pipeline.

A converter module only parses its raw annotation files into ``RawExample`` records (``read_examples``).
``convert`` then does the rest the same way for every dataset: load each image file, reproject the
person to a square, undistorted, person-centred virtual camera, move labels into that camera's frame,
and stream everything into an atomically written canonical store.
"""

import json
import logging
import multiprocessing
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, UnidentifiedImageError

from assets.cameras import Camera, reproject_image
from assets.person_crops import person_crop_camera
from assets.converters.interface import ConverterOptions, converter_skeleton, resolve_options
from assets.converters.raw_io import RawDataError
from assets.converters.video import VideoFrames
from assets.skeletons import get_skeleton
from assets.file_hashes import FileHashCache, fingerprint_paths
from assets.store import IMAGES_PER_SHARD, SPLITS, StoreWriter

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 128
# Uncalibrated images get a narrow-FOV pinhole, as MeTRAbs does for 2D-only data
ASSUMED_FOV_DEGREES = 8.0


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
    virtual = person_crop_camera(frame_cam, box, image_size)
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


@dataclass
class _Survey:
    """What the annotations say before any image is read: counts and code tables, no per-example data."""

    count: int = 0
    values: dict = field(default_factory=lambda: {key: set() for key in CODED_KEYS})
    has_confidence: bool = False
    has_pose3d: bool = False
    intrinsics_assumed: bool = False

    def add(self, example: RawExample) -> None:
        self.count += 1
        for key in CODED_KEYS:
            self.values[key].add(getattr(example, key))
        self.has_confidence |= example.confidence is not None
        self.has_pose3d |= example.pose3d is not None
        self.intrinsics_assumed |= example.assumed_camera

    def code_maps(self) -> dict[str, dict[str, int]]:
        return {key: {value: i for i, value in enumerate(sorted(values))} for key, values in self.values.items()}


CODED_KEYS = ("subject", "sequence", "camera")


def _examples(converter: ModuleType, raw_root: Path, options: ConverterOptions, skeleton):
    """The converter's examples that the options keep, each checked against the schema's expectations."""
    for example in converter.read_examples(raw_root, options):
        if not _kept(example, options):
            continue
        for name in ("pose3d", "pose2d"):
            arr = getattr(example, name)
            if arr is not None and arr.shape[0] != skeleton.num_joints:
                raise RawDataError(example.image_path, name, f"{skeleton.num_joints} joints of {skeleton.name}",
                                   f"{arr.shape[0]}")
        if example.split not in SPLITS:
            raise RawDataError(example.image_path, "split", f"one of {SPLITS}", repr(example.split))
        yield example


def sample_examples(converter: ModuleType, raw_root, options: ConverterOptions | dict | None = None,
                    count: int = 3) -> list[tuple[RawExample, np.ndarray]]:
    """The first ``count`` examples with their images: a cheap check that a raw folder fits its converter."""
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise RawDataError(raw_root, None, "a raw dataset folder", "no such folder")
    if not isinstance(options, ConverterOptions):
        options = resolve_options(converter, options)
    sample = []
    with VideoFrames() as videos:
        for example in _examples(converter, raw_root, options, get_skeleton(converter_skeleton(converter, raw_root))):
            sample.append((example, image_of(example, videos)))
            if len(sample) == count:
                break
    if not sample:
        raise RawDataError(raw_root, None, "at least one example", "none found")
    return sample


def _batches(examples, size: int, skip: int = 0):
    batch = []
    for i, example in enumerate(examples):
        if i < skip:
            continue
        batch.append(example)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_worker_videos: VideoFrames | None = None


def _crop_batch(batch: list[RawExample], image_size: int) -> list[dict]:
    """Decode and crop one batch (in a worker process, or in this one)."""
    global _worker_videos
    if _worker_videos is None:
        _worker_videos = VideoFrames()
    return [canonical_crop(ex, image_of(ex, _worker_videos), image_size) for ex in batch]


def _batch_columns(batch: list[RawExample], crops: list[dict], code_maps: dict, survey: _Survey, num_joints: int):
    columns = {k: np.stack([c[k] for c in crops]) for k in crops[0]}
    columns["split"] = np.array([SPLITS.index(ex.split) for ex in batch])
    columns["frame"] = np.array([ex.frame for ex in batch])
    for key in CODED_KEYS:
        columns[key] = np.array([code_maps[key][getattr(ex, key)] for ex in batch])
    if survey.has_confidence:
        columns["confidence2d"] = np.stack([
            ex.confidence if ex.confidence is not None else np.ones(num_joints) for ex in batch])
    return columns


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
    workers: int = 0,
    hash_cache: FileHashCache | None = None,
) -> ConversionResult:
    """Parse ``raw_root`` with ``converter`` and publish a new version of the canonical store at ``out_path``.

    Streams: the annotations are read twice (once to count and to build the code tables, once to write),
    and images are decoded, cropped and written one shard (``IMAGES_PER_SHARD`` examples) at a time, by
    ``workers`` processes (0: in this process), so memory does not grow with the dataset. A conversion of
    the same inputs (``data_version``) that was killed goes on from the shards already written.
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
    skeleton = get_skeleton(converter_skeleton(converter, raw_root))
    survey = _Survey()
    for example in _examples(converter, raw_root, options, skeleton):
        survey.add(example)
    if not survey.count:
        raise RawDataError(raw_root, None, "at least one example", "none found")

    fingerprint = fingerprint_paths([raw_root], extra=f"{converter.NAME}:{converter.VERSION}:{image_size}:"
                                                      f"{json.dumps(options.as_dict(), sort_keys=True)}",
                                    cache=hash_cache)
    code_maps = survey.code_maps()
    attrs = {
        "dataset": dataset_name or converter.NAME,
        "skeleton": skeleton.name,
        "converter": converter.NAME,
        "converter_version": converter.VERSION,
        "raw_fingerprint": fingerprint,
        "raw_root": str(raw_root),
        "image_size": image_size,
        "codes": {**{key: list(table) for key, table in code_maps.items()}, "split": list(SPLITS)},
        "has_pose3d": survey.has_pose3d,
        "intrinsics_assumed": survey.intrinsics_assumed,
        "converter_options": options.as_dict(),
    }
    total = survey.count
    report(f"{attrs['dataset']}: {total} examples in the annotations of {raw_root}")
    optional = ("confidence2d",) if survey.has_confidence else ()
    with StoreWriter(out_path, total, attrs, optional_arrays=optional, data_version=data_version,
                     resume=data_version is not None) as writer:
        done = writer.resume_from
        if done:
            report(f"{attrs['dataset']}: going on from example {done} of {total}, written by a conversion that stopped")
        batches = _batches(_examples(converter, raw_root, options, skeleton), IMAGES_PER_SHARD, skip=done)
        resumed_at, write_started = done, time.perf_counter()
        for batch, crops in _cropped(batches, image_size, workers):
            writer.write(done, **_batch_columns(batch, crops, code_maps, survey, skeleton.num_joints))
            done += len(batch)
            writer.mark_written(done)
            rate = (done - resumed_at) / max(time.perf_counter() - write_started, 1e-9)
            report(f"{attrs['dataset']}: {done}/{total} examples, {rate:.0f}/s, "
                   f"ETA {(total - done) / max(rate, 1e-9):.0f} s")
        if done != total:
            raise RawDataError(raw_root, None, f"the same {total} examples on a second read of the annotations",
                               f"{done} (did the raw folder change during the conversion?)")
        path = writer.commit(gate)
        counts = dict(writer.attrs["counts"])
    seconds = time.perf_counter() - started
    report(f"{attrs['dataset']}: wrote {path} in {seconds:.1f} s ({counts})")
    return ConversionResult(path=path, num_examples=total, counts=counts, seconds=seconds,
                            raw_fingerprint=fingerprint, attrs=attrs)


def _cropped(batches, image_size: int, workers: int):
    """(batch, crops) in order; with workers, a few batches ahead at most, so memory stays bounded."""
    if workers <= 0:
        for batch in batches:
            yield batch, _crop_batch(batch, image_size)
        return
    # spawn: the parent may hold threads (Dagster) and open decoders that a fork would copy
    with _sigterm_not_ignored():
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_terminable)
    finished = False
    try:
        pending = deque()
        for batch in batches:
            pending.append((batch, pool.apply_async(_crop_batch, (batch, image_size))))
            if len(pending) > 2 * workers:
                done_batch, result = pending.popleft()
                yield done_batch, result.get()
        while pending:
            done_batch, result = pending.popleft()
            yield done_batch, result.get()
        finished = True
    finally:
        # a finished pool's workers exit at their end-of-work marker; only a failed one is killed
        if finished:
            pool.close()
        else:
            pool.terminate()
        pool.join()


# Workers must end on SIGTERM (``Pool.terminate``), or ``terminate`` waits for them forever. Where the
# parent ignores SIGTERM (Dagster gives SIGTERM the SIGINT handler, which is "ignore" in a background job)
# spawned processes inherit that: they are started with SIGTERM at its default, and reset it themselves
# (for a pool started outside the main thread, where the parent's handler cannot be changed).
@contextmanager
def _sigterm_not_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminable() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
