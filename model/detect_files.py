"""Everyone's 3D pose in an image, a folder of images or a video (the `dozens detect` command).

``detect_path(estimator, path, ...)`` streams the frames (``model.media``) in batches through
``estimator.detect_poses_batched`` (person detector, crops, network) and writes one JSON file::

    {"units": "mm", "frame": "camera", "skeleton": "smpl_24", "joint_names": [...], "source": "clip.mp4",
     "camera": {"fov_degrees": 55.0} or {"intrinsics_file": ..., "K": [[...]], "dist": [...]},
     "frames": [{"name": "frame_000000", "boxes": [[x_left, y_top, width, height, confidence], ...],
                 "poses3d": [[[x, y, z], ...], ...], "poses2d": [[[u, v], ...], ...]}, ...]}

(millimetres rounded to 0.1, pixels to 0.01, confidences to 0.0001; a frame without people has empty
lists), and with ``render_dir`` one JPEG per frame (``model.drawing``). The JSON is written frame by frame
to a temporary file beside the target, which replaces it only once every frame is done, so neither a long
video's results nor its frames are ever held in memory, and a failed run leaves the old file as it was.
Decoding runs a batch ahead in a thread and rendering in a few threads, beside the model.

In a video, people are followed from frame to frame (``video_tracker``: each person's landmarks lead to
the next frame's region, so a person the detector misses in a frame is still found); images and folders,
whose images need not be related, get the stateless person detector.
"""

from __future__ import annotations

import io
import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assets.atomic_files import write_atomically
from model.inference import (
    DEFAULT_FOV_DEGREES, PredictInputError, _intrinsic_matrix, check_fov, check_skeleton, read_intrinsics_json,
)
from model.detection import DEFAULT_DETECTION_THRESHOLD as DEFAULT_THRESHOLD
from model.media import Frame, Media, open_media

DEFAULT_BATCH_SIZE = 8  # frames per model call; 8 decoded 4K frames are ~200 MB
JPEG_QUALITY = 90
PROGRESS_EVERY_SECONDS = 0.25
# None: detect_poses' built-in person detector (or a video's tracker). Tests (and other callers) may set a
# stand-in callable image uint8 [H, W, 3] -> boxes [N, 5] here instead of passing ``detector`` to detect_path.
DETECTOR = None


def video_tracker(threshold: float):
    """A fresh person tracker for one video's frames, in order (``blazepose_tflite.PersonTracker``, its
    defaults: the detector every 4th frame, on the whole frame and on square tiles): a detection scoring
    ``threshold`` starts following a person; the score it reports is the landmark model's presence."""
    from assets.real.blazepose_tflite import PersonTracker

    return PersonTracker(score_threshold=threshold)


@dataclass(frozen=True)
class CameraSettings:
    """The camera assumed for every frame: a field of view, or a matrix (and distortion) from a file."""

    fov_degrees: float = DEFAULT_FOV_DEGREES
    K: np.ndarray | None = None
    dist: np.ndarray | None = None
    source: Path | None = None

    def options(self) -> dict:
        return {"fov_degrees": self.fov_degrees, "intrinsics": self.K, "distortion": self.dist}

    def to_json(self) -> dict:
        if self.K is None:
            return {"fov_degrees": self.fov_degrees}
        return {"intrinsics_file": str(self.source), "K": self.K.tolist(),
                "dist": None if self.dist is None else self.dist.tolist()}

    def check_frame(self, name: str, image: np.ndarray) -> None:
        """PredictInputError when the matrix cannot be for a frame of this size (principal point outside)."""
        if self.K is None:
            return
        height, width = image.shape[:2]
        cx, cy = self.K[0, 2], self.K[1, 2]
        if not (0 <= cx <= width and 0 <= cy <= height):
            raise PredictInputError(
                f"intrinsics file {self.source}: the principal point (cx, cy) = ({cx:g}, {cy:g}) lies outside the "
                f"{width}x{height} image {name}; K must be for the frames at their stored resolution")


def read_camera(intrinsics_file=None, fov_degrees=None) -> CameraSettings:
    """The camera settings of --intrinsics FILE (JSON ``{"K": 3x3, "dist": [k1, k2, p1, p2(, k3)]}``, dist
    optional) or --fov (default 55 degrees); not both."""
    if intrinsics_file is not None and fov_degrees is not None:
        raise PredictInputError(f"--fov {fov_degrees} and --intrinsics {intrinsics_file}: give one or the other "
                                "(the field of view would be ignored)")
    if intrinsics_file is None:
        return CameraSettings(DEFAULT_FOV_DEGREES if fov_degrees is None else check_fov(fov_degrees))
    source = Path(intrinsics_file)
    table = read_intrinsics_json(source)
    expected = ('expected a JSON object {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "dist": [k1, k2, p1, p2, '
                'k3]} (dist optional) for every frame')
    if not isinstance(table, dict):
        raise PredictInputError(f"intrinsics file {source}: {expected}, got a JSON {type(table).__name__}")
    if "K" not in table:
        keys = ", ".join(repr(k) for k in list(table)[:5]) + (" ..." if len(table) > 5 else "")
        hint = (" (a file of one matrix per image name is what `dozens predict` reads; detect takes one camera)"
                if table and all(isinstance(v, list) for v in table.values()) else "")
        raise PredictInputError(f"intrinsics file {source}: no key 'K'; {expected}, got keys {keys or 'none'}{hint}")
    unknown = sorted(set(table) - {"K", "dist"})
    if unknown:
        raise PredictInputError(f"intrinsics file {source}: unknown keys {unknown}; {expected}")
    K = _intrinsic_matrix(source, "K", table["K"])
    dist = table.get("dist")
    if dist is not None:
        numbers = isinstance(dist, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                 for x in dist)
        if not numbers or len(dist) not in (4, 5) or not np.isfinite(np.array(dist, dtype=np.float64)).all():
            raise PredictInputError(f"intrinsics file {source}, entry 'dist': expected 4 or 5 finite distortion "
                                    f"coefficients [k1, k2, p1, p2, k3], got {json.dumps(dist)[:80]}")
        dist = np.array(dist, dtype=np.float64)
        if not dist.any():
            dist = None
    return CameraSettings(K=K, dist=dist, source=source)


def check_threshold(threshold) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise PredictInputError(f"--threshold: expected a detector confidence between 0 and 1, got {threshold!r}") \
            from None
    if not 0 <= value <= 1:
        raise PredictInputError(f"--threshold: expected a detector confidence between 0 and 1, got {threshold!r}")
    return value


@dataclass
class DetectSummary:
    source: str
    frames: int
    people: int
    frames_without_people: int
    seconds: float
    skeleton: str | None
    joints: int
    out: str | None
    render_dir: Path | None
    announced_frames: int | None = None  # a video's frame count from its header, when exact

    def describe(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        per_frame = self.people / self.frames if self.frames else 0.0
        lines = [f"{self.source}: {self.people} people in {self.frames} frame{'s' * (self.frames != 1)} "
                 f"({per_frame:.2f} per frame, {self.frames_without_people} without anyone) in "
                 f"{self.seconds:.1f} s ({rate:.1f} frames/s)"]
        if self.announced_frames is not None and self.frames < self.announced_frames:
            lines.append(f"note: the video's header announces {self.announced_frames} frames, but only "
                         f"{self.frames} could be read (a truncated file?)")
        if self.out is not None:
            where = "stdout" if self.out == "-" else self.out
            lines.append(f"wrote {self.skeleton or 'all'} poses ({self.joints} joints) to {where}")
        if self.render_dir is not None:
            lines.append(f"wrote {self.frames} rendered image{'s' * (self.frames != 1)} to {self.render_dir}")
        return "\n".join(lines)


def detect_frames(estimator, batches: Iterable[list[Frame]], *, skeleton: str | None, camera: CameraSettings,
                  threshold: float = DEFAULT_THRESHOLD, flip_test: bool = True,
                  detector=None) -> Iterator[tuple[Frame, dict]]:
    """(frame, detections) for every frame of ``batches``, one ``detect_poses_batched`` call per batch."""
    options = camera.options()
    for batch in batches:
        for name, image in batch:
            camera.check_frame(name, image)
        results = estimator.detect_poses_batched([image for _, image in batch], skeleton=skeleton,
                                                 detector=detector, detection_threshold=threshold,
                                                 flip_test=flip_test, **options)
        if len(results) != len(batch):
            raise RuntimeError(f"detect_poses_batched returned {len(results)} results for {len(batch)} images")
        yield from zip(batch, results)


def detect_path(estimator, path, *, skeleton: str | None = "smpl_24", out=None, render_dir=None,
                fov_degrees=None, intrinsics_file=None, threshold: float = DEFAULT_THRESHOLD,
                flip_test: bool = True, batch_size: int = DEFAULT_BATCH_SIZE,
                progress: Callable[[str], None] | None = None, detector=None,
                tracking: bool = True) -> DetectSummary:
    """Detect everyone in every image or video frame at ``path`` (or an opened ``Media``) in the ``skeleton``
    format (None or "all": every joint of the model); write the JSON to ``out`` (a file; "-": stdout once
    all frames are done; None: none) and rendered JPEGs to ``render_dir``.

    ``progress`` is called with a one-line status (frames done/total, frames/s, people, time left) at most
    every ``PROGRESS_EVERY_SECONDS`` and after the last frame. ``detector``: a callable image ->
    boxes [N, 5] used instead of the built-in person detector (default: the module's ``DETECTOR``); when
    there is none, a video gets a fresh ``video_tracker`` unless ``tracking`` is False.
    Inputs are all checked before the model runs; problems raise PredictInputError (a ValueError).
    """
    media = path if isinstance(path, Media) else open_media(path)
    skeleton = None if skeleton == "all" else skeleton
    check_skeleton(estimator, skeleton)
    camera = read_camera(intrinsics_file, fov_degrees)
    threshold = check_threshold(threshold)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PredictInputError(f"--batch-size: expected a positive whole number of frames, got {batch_size!r}")
    if out is not None and out != "-":
        out = Path(out)
        if out.is_dir():
            raise PredictInputError(f"--out {out}: is a folder; expected the path of the JSON file to write")
    render_dir = None if render_dir is None else Path(render_dir)
    if render_dir is not None:
        if render_dir.exists() and not render_dir.is_dir():
            raise PredictInputError(f"--render {render_dir}: is a file; expected a folder for the rendered images")
        render_dir.mkdir(parents=True, exist_ok=True)
    from assets.skeletons import get_skeleton

    joint_names = list(estimator.joint_names if skeleton is None else get_skeleton(skeleton).joint_names)
    header = {"units": "mm", "frame": "camera", "skeleton": skeleton or "all", "joint_names": joint_names,
              "source": str(media.path), "camera": camera.to_json()}
    detector = detector if detector is not None else DETECTOR
    if detector is None and tracking and media.kind == "video":
        # stateful, so it must see the frames in order: batches arrive in order, and detect_poses_batched
        # calls the detector on a batch's images in order, once each
        detector = video_tracker(threshold)
    run = _Run(estimator, media, skeleton, camera, threshold, flip_test, batch_size, progress, detector,
               render_dir, header)
    if out is None:
        run(None)
    elif out == "-":
        with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:  # stdout gets a whole document or none
            run(spool)
            spool.seek(0)
            shutil.copyfileobj(spool, sys.stdout)
            sys.stdout.flush()
    else:
        _write_atomically(out, run)
    return DetectSummary(str(media.path), run.done, run.people, run.empty, time.perf_counter() - run.started,
                         skeleton, len(joint_names), None if out is None else str(out), render_dir,
                         None if media.total_is_estimate or media.kind != "video" else media.total)


def _write_atomically(path: Path, write: Callable) -> None:
    """``write`` gets a text handle; what it wrote replaces ``path`` in one step (``assets.atomic_files``)."""
    def binary(handle) -> None:
        text = io.TextIOWrapper(handle, encoding="utf-8")
        write(text)
        text.flush()
        text.detach()  # the binary handle stays open for the fsync that follows

    write_atomically(path, binary)


class _Run:
    """One detection run: frames in, JSON entries, rendered images and progress out."""

    def __init__(self, estimator, media: Media, skeleton, camera, threshold, flip_test, batch_size, progress,
                 detector, render_dir, header):
        self.estimator, self.media, self.skeleton, self.camera = estimator, media, skeleton, camera
        self.threshold, self.flip_test, self.batch_size = threshold, flip_test, batch_size
        self.progress, self.detector, self.render_dir, self.header = progress, detector, render_dir, header
        self.done = self.people = self.empty = 0
        self.started = time.perf_counter()

    def __call__(self, handle) -> None:
        self.started = time.perf_counter()
        if handle is not None:
            handle.write(json.dumps(self.header)[:-1] + ', "frames": [')
        layout = None
        if self.render_dir is not None:
            from model.drawing import layout_for

            layout = layout_for(self.estimator, self.skeleton)
        renderer = _Renderer(self.render_dir, layout, self.media) if layout is not None else None
        reader = _Prefetch(self.media.batches(self.batch_size), depth=2)
        shown = 0.0
        try:
            results = detect_frames(self.estimator, reader, skeleton=self.skeleton, camera=self.camera,
                                    threshold=self.threshold, flip_test=self.flip_test, detector=self.detector)
            for frame, found in results:
                count = len(found["boxes"])
                if handle is not None:
                    handle.write(("\n" if self.done == 0 else ",\n") + _frame_json(frame.name, found))
                if renderer is not None:
                    renderer.submit(frame, found)
                self.done += 1
                self.people += count
                self.empty += count == 0
                now = time.perf_counter()
                if self.progress is not None and (now - shown >= PROGRESS_EVERY_SECONDS
                                                  or self.done == self.media.total):
                    self.progress(self._status())
                    shown = now
            if renderer is not None:
                renderer.finish()
        finally:
            reader.close()
            if renderer is not None:
                renderer.close()
        if handle is not None:
            handle.write("\n]}\n")

    def _status(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        total = self.media.total
        text = f"detect {self.media.path.name}: {self.done}"
        if total and self.done <= total:
            text += f"/{'~' * self.media.total_is_estimate}{total} frames ({100 * self.done / total:.0f}%)"
        else:
            text += " frames"
        text += f", {rate:.1f} frames/s, {self.people} people"
        if total and self.done < total and rate > 0:
            text += f", {_duration((total - self.done) / rate)} left"
        return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _rounded(values, decimals: int) -> list:
    array = np.round(np.asarray(values, dtype=np.float64), decimals)
    if np.isfinite(array).all():
        return array.tolist()
    return np.where(np.isfinite(array), array, None).tolist()  # JSON has no NaN: null


def _frame_json(name: str, found: dict) -> str:
    boxes = np.asarray(found["boxes"], dtype=np.float64).reshape(-1, 5)
    rounded_boxes = [xywh + [confidence] for xywh, confidence in zip(_rounded(boxes[:, :4], 2),
                                                                     _rounded(boxes[:, 4], 4))]
    entry = {"name": name, "boxes": rounded_boxes, "poses3d": _rounded(found["poses3d"], 1),
             "poses2d": _rounded(found["poses2d"], 2)}
    return json.dumps(entry, separators=(",", ":"), allow_nan=False)


class _Prefetch:
    """Iterates ``batches`` in a thread, up to ``depth`` ahead (frame decoding overlaps the model)."""

    _END = object()

    def __init__(self, batches: Iterator, depth: int):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(batches,), name="dozens-detect-frames",
                                        daemon=True)
        self._thread.start()

    def _read(self, batches: Iterator) -> None:
        try:
            for batch in batches:
                if not self._put((batch, None)):
                    return
            self._put((self._END, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put((None, exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # in this thread, which ran the generator: closes a video's container

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            batch, error = self._queue.get()
            if error is not None:
                raise error
            if batch is self._END:
                return
            yield batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Renderer:
    """Draws and saves frames in a few threads; at most a few frames wait, so memory stays bounded."""

    def __init__(self, folder: Path, layout, media: Media):
        self.folder, self.layout, self.media = folder, layout, media
        workers = max(1, min(4, (os.cpu_count() or 2) - 1))
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dozens-render")
        self._pending: deque[Future] = deque()
        self._limit = 2 * workers

    def submit(self, frame: Frame, found: dict) -> None:
        while len(self._pending) >= self._limit:
            self._pending.popleft().result()  # raises a failed render's error
        self._pending.append(self._pool.submit(self._render, frame, found))

    def _render(self, frame: Frame, found: dict) -> None:
        from model.drawing import render

        target = self.folder / f"{self.media.output_stem(frame.name)}.jpg"
        try:
            render(frame.image, found, self.layout).save(target, "JPEG", quality=JPEG_QUALITY)
        except OSError as exc:
            raise OSError(f"--render: cannot write {target} ({exc})") from exc

    def finish(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
