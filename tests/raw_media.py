"""Media files the converter tests write in a release's layout: videos encoded with PyAV."""

from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames, rate=50, *, gop_size: int = 4, bit_rate: int | None = None,
                qscale: int | None = 1) -> None:
    """``frames`` (RGB uint8 arrays of one size) as an MPEG-4 video; near-lossless by default (``qscale`` 1),
    or at ``bit_rate`` bits/s for textured frames; ``rate`` may be a Fraction (29.97 fps as 30000/1001)."""
    frames = list(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop_size
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        elif qscale is not None:
            stream.options = {"qscale": str(qscale)}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
