"""Reading chosen frames straight from a video file (PyAV), for releases that ship videos, not images.

A converter keeps every n-th frame; decoding a whole 50 fps video for that wastes most of the work. The
reader seeks to the keyframe before a requested frame when the frame is far ahead (or behind) the
decoder's position, and decodes forward from there; nearby frames are reached by decoding on.
"""

from collections import OrderedDict
from pathlib import Path

import numpy as np

from assets.converters.raw_io import RawDataError

# beyond this many frames ahead, a seek (to the keyframe before the target) beats decoding on
_SEEK_AHEAD_FRAMES = 48


class VideoFrameReader:
    """Frames of one video by 0-based index, as RGB uint8 arrays [H, W, 3]."""

    def __init__(self, path):
        import av  # an optional, compiled dependency: only converters of video releases need it

        self.path = Path(path)
        if not self.path.is_file():
            raise RawDataError(self.path, None, "an existing video file", "no such file")
        try:
            self._container = av.open(str(self.path))
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as exc:
            raise RawDataError(self.path, None, "a decodable video with a video stream", f"{exc}") from None
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        if not rate:
            raise RawDataError(self.path, "frame rate", "a video with a known frame rate", "none")
        self.fps = float(rate)
        self._time_base = float(self._stream.time_base)
        self._start = self._stream.start_time or 0
        self._frames = None  # the decoder's iterator
        self._position = -1  # index of the frame the decoder returned last
        self._last = None

    @property
    def num_frames(self) -> int:
        return int(self._stream.frames)

    def _index_of(self, frame) -> int:
        return int(round((frame.pts - self._start) * self._time_base * self.fps))

    def _seek(self, index: int) -> None:
        target = int(self._start + index / self.fps / self._time_base)
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._position = -1

    def frame(self, index: int) -> np.ndarray:
        import av

        if index < 0:
            raise RawDataError(self.path, "frame", "a frame index >= 0", str(index))
        if index == self._position and self._last is not None:
            return self._last
        if self._frames is None or index < self._position or index > self._position + _SEEK_AHEAD_FRAMES:
            self._seek(index)
        try:
            for decoded in self._frames:
                if decoded.pts is None:
                    continue
                self._position = self._index_of(decoded)
                if self._position >= index:
                    if self._position > index:  # the seek landed past it (a keyframe gap): start over
                        self._container.seek(self._start, stream=self._stream, backward=True, any_frame=False)
                        self._frames = self._container.decode(self._stream)
                        self._position = -1
                        return self._decode_forward_to(index)
                    self._last = decoded.to_ndarray(format="rgb24")
                    return self._last
        except av.error.FFmpegError as exc:
            raise RawDataError(self.path, f"frame {index}", "a decodable frame", f"{exc}") from None
        raise RawDataError(self.path, f"frame {index}", "a frame inside the video",
                           f"the video ends at frame {self._position}")

    def _decode_forward_to(self, index: int) -> np.ndarray:
        for decoded in self._frames:
            if decoded.pts is None:
                continue
            self._position = self._index_of(decoded)
            if self._position >= index:
                self._last = decoded.to_ndarray(format="rgb24")
                return self._last
        raise RawDataError(self.path, f"frame {index}", "a frame inside the video",
                           f"the video ends at frame {self._position}")

    def close(self) -> None:
        self._container.close()


class VideoFrames:
    """Frames of many videos; keeps the few most recently used decoders open."""

    def __init__(self, max_open: int = 4):
        self._readers: OrderedDict[Path, VideoFrameReader] = OrderedDict()
        self._max_open = max_open

    def frame(self, path, index: int) -> np.ndarray:
        path = Path(path)
        reader = self._readers.pop(path, None) or VideoFrameReader(path)
        self._readers[path] = reader
        while len(self._readers) > self._max_open:
            self._readers.popitem(last=False)[1].close()
        return reader.frame(index)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


class ExtractedFramesOrVideo:
    """Where the frames of one camera's take come from: the release's extracted images where present,
    otherwise frames decoded from its video (which also fills gaps in an extraction).

    ``frame_name`` formats a frame number into an image file name; ``missing`` is what the error names as
    expected when neither the folder nor the video exists.
    """

    def __init__(self, folder: Path, video: Path, frame_name: str, missing: str):
        self.folder, self.video, self.frame_name = Path(folder), Path(video), frame_name
        self.present = {p.name for p in self.folder.iterdir()} if self.folder.is_dir() else None
        self.has_video = self.video.is_file()
        if self.present is None and not self.has_video:
            raise RawDataError(self.video, None, missing, "no such file")

    @staticmethod
    def available(folder: Path, video: Path) -> bool:
        return Path(folder).is_dir() or Path(video).is_file()

    def locate(self, frame: int) -> tuple[Path, int | None]:
        """(image file, None) for an extracted frame, else (video, frame index)."""
        name = self.frame_name.format(frame)
        if self.present is not None and name in self.present:
            return self.folder / name, None
        if self.has_video:
            return self.video, frame
        raise RawDataError(self.folder / name, None, f"an extracted frame (or the video {self.video})",
                           "no such file")
