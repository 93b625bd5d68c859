"""Frames decoded straight from videos: the right frame for each index, in any order, with seeks."""

import numpy as np
import pytest

from assets.converters.raw_io import RawDataError
from assets.converters.video import VideoFrameReader, VideoFrames

av = pytest.importorskip("av")


def write_numbered_video(path, num_frames=120, fps=50, size=(64, 48), gop=25):
    """Frame i is a flat grey of level 2*i (mod 256): its index can be read back from any pixel."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"qscale": "1"}
        for i in range(num_frames):
            image = np.full((size[1], size[0], 3), (2 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def level_of(frame):
    return float(np.median(frame))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_numbered_video(tmp_path_factory.mktemp("video") / "numbered.mp4")


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [5, 60, 61, 110], [100, 7, 99, 30, 30], [119, 0]])
def test_each_index_gives_its_frame_in_any_order(video, order):
    reader = VideoFrameReader(video)
    for index in order:
        frame = reader.frame(index)
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert abs(level_of(frame) - (2 * index) % 256) <= 3, index  # mpeg4 at best quality: within 3 levels
    reader.close()


def test_many_videos_share_a_bounded_set_of_decoders(video, tmp_path):
    other = write_numbered_video(tmp_path / "other.mp4", num_frames=30)
    frames = VideoFrames(max_open=1)
    assert abs(level_of(frames.frame(video, 40)) - 80) <= 3
    assert abs(level_of(frames.frame(other, 10)) - 20) <= 3
    assert abs(level_of(frames.frame(video, 41)) - 82) <= 3
    frames.close()


def test_errors_name_the_video_and_the_frame(video, tmp_path):
    with pytest.raises(RawDataError, match=r"numbered\.mp4: field 'frame 500'.*ends at frame"):
        VideoFrameReader(video).frame(500)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 50)
    with pytest.raises(RawDataError, match=r"broken\.mp4.*decodable video"):
        VideoFrameReader(broken)
    with pytest.raises(RawDataError, match=r"missing\.mp4.*no such file"):
        VideoFrameReader(tmp_path / "missing.mp4")
