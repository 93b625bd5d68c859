"""What `dozens detect` reads: one image, a folder of images or a video, as a stream of RGB frames.

``open_media(path)`` looks at the path (and, for a file, its content: an image Pillow can read, else a
video PyAV can open) and checks it before anything runs; ``Media.frames()`` then yields ``Frame(name,
image)`` tuples one at a time (uint8 RGB [H, W, 3], any size) and ``Media.batches(n)`` lists of up to n
of them, so a long video never sits in memory. Names are the file names of images and ``frame_000123``
(0-based) for the frames of a video. Problems raise ``PredictInputError`` / ``PredictFileNotFoundError``
(model.inference) naming the file and what was expected.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.inference import MAX_IMAGE_PIXELS, PredictFileNotFoundError, PredictInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".mts", ".m2ts", ".3gp", ".ogv"})
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError)


class Frame(NamedTuple):
    name: str  # the image's file name, or frame_000123 for a video's frames
    image: np.ndarray  # uint8 RGB [H, W, 3]


def _listing(suffixes) -> str:
    return ", ".join(sorted(suffixes))


class Media:
    """An image, a folder of images or a video (``kind``), with ``total`` frames (None: unknown; for a
    video read from its header, which may be an estimate: ``total_is_estimate``)."""

    kind: str
    total: int | None
    total_is_estimate: bool = False
    fps: float | None = None

    def __init__(self, path: Path):
        self.path = path

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def batches(self, size: int) -> Iterator[list[Frame]]:
        """Lists of up to ``size`` consecutive frames (the last one shorter)."""
        if size < 1:
            raise PredictInputError(f"--batch-size: expected a positive number of frames, got {size}")
        frames = self.frames()
        try:
            while batch := list(itertools.islice(frames, size)):
                yield batch
        finally:
            frames.close()  # a video's container is closed even when the caller stops early

    def output_stem(self, name: str) -> str:
        """The file name (without suffix) that output files of frame ``name`` get (rendered images)."""
        return name

    def describe(self) -> str:
        raise NotImplementedError


class ImageFiles(Media):
    """One image file, or a folder's image files sorted by name."""

    def __init__(self, path: Path, files: list[Path], kind: str):
        super().__init__(path)
        self.files = files
        self.kind = kind
        self.total = len(files)
        stems = [f.stem for f in files]
        # a.jpg and a.png in one folder would both render to a.jpg: such files keep their suffix (a_png.jpg)
        self._stems = {f.name: (f.stem if stems.count(f.stem) == 1 else f.name.replace(".", "_")) for f in files}

    def frames(self) -> Iterator[Frame]:
        for file in self.files:
            yield Frame(file.name, read_image(file))

    def output_stem(self, name: str) -> str:
        return self._stems.get(name, name)

    def describe(self) -> str:
        if self.kind == "image":
            return f"image {self.path}"
        return f"folder {self.path} ({self.total} image{'s' * (self.total != 1)})"


class VideoFile(Media):
    kind = "video"

    def __init__(self, path: Path, total: int | None, total_is_estimate: bool, fps: float | None,
                 size: tuple[int, int]):
        super().__init__(path)
        self.total, self.total_is_estimate, self.fps, self.size = total, total_is_estimate, fps, size

    def frames(self) -> Iterator[Frame]:
        import av

        index = 0
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise PredictInputError(f"{self.path}: cannot be opened as a video any more ({exc})") from None
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the model
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:
                    raise PredictInputError(
                        f"{self.path}: video frame {index} cannot be decoded ({exc}); {index} frame"
                        f"{'s' * (index != 1)} before it were read") from None
                image = frame.to_ndarray(format="rgb24")
                # phone videos are stored sideways with a rotation to show them upright
                turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
                if turns:
                    image = np.ascontiguousarray(np.rot90(image, turns))
                yield Frame(f"frame_{index:06d}", image)
                index += 1
        finally:
            container.close()
        if index == 0:
            raise PredictInputError(f"{self.path}: the video has no decodable frames")

    def describe(self) -> str:
        count = "unknown number of" if self.total is None else f"{'~' * self.total_is_estimate}{self.total}"
        rate = f", {self.fps:g} fps" if self.fps else ""
        return f"video {self.path} ({self.size[0]}x{self.size[1]}{rate}, {count} frames)"


def open_media(path) -> Media:
    """The frames at ``path``: an image file, a folder of image files (not its subfolders) or a video."""
    path = Path(path)
    if path.is_dir():
        return _open_folder(path)
    if not path.exists():
        parent = path.parent
        hint = "" if parent.is_dir() else f" (nor does the folder {parent})"
        raise PredictFileNotFoundError(f"{path} does not exist{hint}; expected an image file, a folder of "
                                       "images or a video")
    if not path.is_file():
        raise PredictInputError(f"{path} is not a regular file; expected an image file, a folder of images or "
                                "a video")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return _open_video(path)
    if suffix in IMAGE_SUFFIXES:
        check_image(path)
        return ImageFiles(path, [path], "image")
    # another suffix: whatever the content is
    try:
        check_image(path)
    except PredictInputError as image_problem:
        try:
            return _open_video(path)
        except PredictInputError:
            raise PredictInputError(
                f"{path}: neither an image Pillow can read nor a video PyAV can open; expected an image "
                f"({_listing(IMAGE_SUFFIXES)}) or a video ({_listing(VIDEO_SUFFIXES)}, or any other format "
                f"FFmpeg decodes)") from image_problem
    return ImageFiles(path, [path], "image")


def _open_folder(folder: Path) -> Media:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]
    files = sorted((p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)
    if not files:
        videos = sorted(p.name for p in entries if p.suffix.lower() in VIDEO_SUFFIXES)
        hint = (f"; it holds the video{'s' * (len(videos) > 1)} {', '.join(videos[:3])}"
                f"{' ...' if len(videos) > 3 else ''}: pass a video file itself" if videos else "")
        raise PredictFileNotFoundError(f"folder {folder}: no image files ({_listing(IMAGE_SUFFIXES)}) to detect "
                                       f"people in{hint}")
    for file in files:  # headers only (fast): a broken file stops the run before the model does any work
        check_image(file)
    return ImageFiles(folder, files, "folder")


def _open_image(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise PredictInputError(f"{path}: the image is larger than the limit of {MAX_IMAGE_PIXELS} pixels "
                                f"({exc})") from None
    except _DECODE_ERRORS as exc:
        raise PredictInputError(f"{path}: not a readable image ({exc})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise PredictInputError(f"{path}: image size {width}x{height} ({width * height} pixels) exceeds the "
                                f"limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels; shrink it first")
    if width == 0 or height == 0:
        image.close()
        raise PredictInputError(f"{path}: the image is empty ({width}x{height})")
    return image


def check_image(path: Path) -> tuple[int, int]:
    """(width, height) of the image file, read from its header; PredictInputError if it is no image."""
    with _open_image(path) as image:
        return image.size


def read_image(path) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an image file, turned upright as its EXIF orientation says (as viewers show it)."""
    path = Path(path)
    with _open_image(path) as image:
        try:
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
        except _DECODE_ERRORS as exc:
            raise PredictInputError(f"{path}: not a readable image ({exc})") from None


def _open_video(path: Path) -> VideoFile:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise PredictInputError(f"{path}: not a video PyAV (FFmpeg) can open ({exc})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise PredictInputError(f"{path}: the file has no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        total, estimate = (int(stream.frames), False) if stream.frames else (None, True)
        if total is None and fps:
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = container.duration / av.time_base if container.duration else None
            total = max(1, round(seconds * fps)) if seconds and math.isfinite(seconds) else None
        width, height = stream.codec_context.width, stream.codec_context.height
        if not (width and height):
            raise PredictInputError(f"{path}: the video stream has no frame size (a broken or unsupported file)")
    return VideoFile(path, total, estimate and total is not None, fps, (width, height))
