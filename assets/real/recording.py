"""What the builds of the Pose2Sim demo recordings share (``pose2sim`` one person, ``pose2sim_multi`` several).

Both read a calibration and four videos from the cached Pose2Sim wheel, write ``calibration/`` the same
way (docs/pose2sim_demo.md), synchronise the videos by the frame offsets that minimise the triangulation's
reprojection cost, hold out the same tail of global frames, and leave an existing raw folder alone when its
manifest says it was built with the same settings.
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from assets.converters.raw_io import RawDataError
from assets.real.cache import read_member
from assets.real.qca import QcaCamera, read_qca
from assets.triangulation import estimate_frame_offsets

CAMERAS = ("cam01", "cam02", "cam03", "cam04")
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_MAX_SYNC_OFFSET = 8  # frames (at 60 fps: +-133 ms)


def check_build_arguments(test_fraction: float, max_frames: int | None) -> None:
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction: expected a fraction in [0, 1), got {test_fraction}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames: expected a positive number of frames, got {max_frames}")


def already_built(out: Path, request: dict) -> bool:
    """Whether ``out`` holds a complete build made with the settings ``request`` (its manifest's ``build``);
    a damaged manifest is no build."""
    manifest_path = Path(out) / "manifest.json"
    if not manifest_path.is_file():
        return False
    try:
        return json.loads(manifest_path.read_text()).get("build") == request
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def read_calibration(wheel: Path, member: str, cameras=CAMERAS) -> tuple[bytes, list[QcaCamera]]:
    """The ``.qca.txt`` member of the wheel (its bytes, to copy) and its cameras, which must be ``cameras``."""
    qca_bytes = read_member(wheel, member)
    parsed = read_qca(qca_bytes, f"{wheel}!{member}")
    names = [q.name for q in parsed]
    if names != list(cameras):
        raise RawDataError(f"{wheel}!{member}", "cameras/camera@serial", f"cameras {list(cameras)}", str(names))
    return qca_bytes, parsed


def calibration_json(cameras: list[QcaCamera], video_sizes: dict, source: str) -> dict:
    """``calibration/cameras.json`` (docs/pose2sim_demo.md): each camera in the project's conventions."""
    return {
        "source": source,
        "units": "mm",
        "convention": "x_cam = R @ x_world + t; OpenCV camera axes and distortion (k1, k2, p1, p2, k3); "
                      "pixel centres at integer coordinates",
        "cameras": [{
            "name": q.name,
            "image_size": list(video_sizes[q.name]),
            "calibration_image_size": list(q.image_size),
            "K": q.camera.K.tolist(),
            "dist": q.camera.dist.tolist(),
            "R": q.camera.R.tolist(),
            "t": q.camera.t.tolist(),
            "avg_residual_mm": q.avg_residual,
        } for q in cameras],
    }


def write_calibration(folder: Path, qca_bytes: bytes, cameras: list[QcaCamera], video_sizes: dict, source: str) -> None:
    """``calibration/``: the original Qualisys file byte for byte, and ``cameras.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Calib.qca.txt").write_bytes(qca_bytes)
    (folder / "cameras.json").write_text(json.dumps(calibration_json(cameras, video_sizes, source), indent=1))


def sync_offsets(landmarks: np.ndarray, cameras: list[QcaCamera], max_offset: int, report) -> list[int] | None:
    """Frame offsets [C] (global frame = video frame - offset, all <= 0) from one person's landmarks
    [C, F, J, 3] (u, v, visibility per video frame; NaN / 0 where not detected), or None where there are
    too few frames to tell shifts apart (the videos are then taken as synchronised)."""
    frames = landmarks.shape[1]
    # fewer frames than this leave too little overlap to tell shifts apart
    if max_offset <= 0 or frames < 4 * max_offset:
        report(f"frame offsets: not estimated ({frames} frames, max offset {max_offset}); assuming synchronised")
        return None
    offsets = estimate_frame_offsets(landmarks[..., :2], landmarks[..., 2], [q.camera for q in cameras],
                                     max_offset=max_offset, image_sizes=[q.image_size for q in cameras])
    # global frame = video frame - offset; offsets <= 0 put global frame 0 at the earliest-starting video
    offsets = offsets - offsets.max()
    report("frame offsets (global frame = video frame - offset): "
           + ", ".join(f"{q.name} {int(o):+d}" for q, o in zip(cameras, offsets)))
    return [int(o) for o in offsets]


def test_from_frame(num_frames: int, test_fraction: float) -> int:
    """First global frame of the held-out tail: the last ``test_fraction`` of the frames."""
    return int(np.ceil(num_frames * (1 - test_fraction)))


def build_arguments(module: str, description: str, default_out: str) -> argparse.ArgumentParser:
    """The options every recording's build command has; each adds its own."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--out", type=Path, default=Path(default_out))
    parser.add_argument("--cache", type=Path, default=None,
                        help="download cache (default: $DOZENS_CACHE or data/cache)")
    parser.add_argument("--max-frames", type=int, default=None, help="read only the first N frames of each video")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                        help="held-out tail of the recording (default: %(default)s)")
    parser.add_argument("--max-sync-offset", type=int, default=DEFAULT_MAX_SYNC_OFFSET,
                        help="largest frame offset between videos to search; 0 assumes synchronised videos")
    parser.add_argument("--force", action="store_true", help="rebuild even if built with the same settings")
    return parser


def run_build_command(build: Callable[[], object], report: Callable[[], object] | None) -> int:
    """Run a build command's work; a problem with the data or the tools is one line on stderr and exit 1."""
    try:
        build()
        if report is not None:
            report()
    except (RawDataError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
