"""BlazePose (MediaPipe Pose): its 33-landmark format and a runner that detects people in a video.

Detection runs ``blazepose_worker.py`` under the MediaPipe virtualenv's interpreter (see
``assets.real.cache``) so the project's environment never needs MediaPipe; the worker's output files are
the cached result that later stages read.
"""

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from assets.converters.raw_io import RawDataError
from assets.skeletons import Skeleton, register_skeleton

WORKER = Path(__file__).with_name("blazepose_worker.py")
SKELETON_NAME = "blazepose_33"
# MediaPipe's PoseLandmark names, in landmark order, converted to the project's convention (lowercase,
# l/r prefix for sided joints so mirror pairs are found)
MEDIAPIPE_NAMES = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE", "RIGHT_EYE_OUTER",
    "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_ELBOW",
    "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY", "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX",
    "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE",
    "LEFT_HEEL", "RIGHT_HEEL", "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX",
)
JOINT_NAMES = (
    "nose", "leye_inner", "leye", "leye_outer", "reye_inner", "reye", "reye_outer",
    "lear", "rear", "lmouth", "rmouth", "lsho", "rsho", "lelb",
    "relb", "lwri", "rwri", "lpinky", "rpinky", "lindex", "rindex",
    "lthumb", "rthumb", "lhip", "rhip", "lkne", "rkne", "lank", "rank",
    "lhee", "rhee", "lfoo_index", "rfoo_index",
)
# mediapipe.solutions.pose.POSE_CONNECTIONS (mediapipe 0.10.14), sorted
EDGES = (
    (0, 1), (0, 4), (1, 2), (2, 3), (3, 7), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (11, 23),
    (12, 14), (12, 24), (13, 15), (14, 16), (15, 17), (15, 19), (15, 21), (16, 18), (16, 20), (16, 22),
    (17, 19), (18, 20), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (27, 31), (28, 30),
    (28, 32), (29, 31), (30, 32),
)
BLAZEPOSE_33 = Skeleton(
    name=SKELETON_NAME, joint_names=JOINT_NAMES, edges=EDGES,
    source="MediaPipe Pose (BlazePose GHUM 3D) PoseLandmark enum and POSE_CONNECTIONS, mediapipe 0.10.14",
    note="2D landmarks of BlazePose (MediaPipe Pose); foot_index is MediaPipe's toe landmark",
)


def register() -> Skeleton:
    """Make ``blazepose_33`` known to the skeleton registry (a no-op once it is)."""
    return register_skeleton(BLAZEPOSE_33)


@dataclass(frozen=True)
class DetectionSettings:
    model_complexity: int = 1  # 1 = pose_landmark_full, the largest model the wheel bundles
    smooth_landmarks: bool = True  # MediaPipe's video-mode default: temporal filtering of the landmarks
    crop_size: int = 256
    crop_padding: float = 1.5  # crop side relative to the larger side of the landmarks' box

    def as_dict(self) -> dict:
        return {"model_complexity": self.model_complexity, "smooth_landmarks": self.smooth_landmarks,
                "crop_size": self.crop_size, "crop_padding": self.crop_padding}


DEFAULT_SETTINGS = DetectionSettings()


def detect_video(
    python: Path,
    video: Path,
    landmarks_path: Path,
    images_dir: Path,
    *,
    settings: DetectionSettings = DEFAULT_SETTINGS,
    max_frames: int | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Run BlazePose on ``video`` with the MediaPipe interpreter ``python``; returns the worker's summary.

    A video that cannot be decoded raises ``RawDataError`` naming it; any other worker failure raises
    ``RuntimeError`` with the end of its log.
    """
    command = [str(python), str(WORKER), "--video", str(video), "--landmarks", str(landmarks_path),
               "--images", str(images_dir), "--crop-size", str(settings.crop_size),
               "--crop-padding", str(settings.crop_padding), "--model-complexity", str(settings.model_complexity)]
    if not settings.smooth_landmarks:
        command.append("--no-smoothing")
    if max_frames is not None:
        command += ["--max-frames", str(max_frames)]
    # MediaPipe logs a lot on stderr; it goes to a file so a full pipe can never block the worker
    log_path = landmarks_path.with_suffix(".log")
    summary = failure = None
    with (open(log_path, "w") as log,
          subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True) as process):
        for line in process.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # a library printing on stdout
            event = message.get("event")
            if event == "progress" and progress is not None:
                progress(message)
            elif event == "done":
                summary = message
            elif event == "error":
                failure = message.get("message")
    if failure is not None:
        raise RawDataError(video, None, "a decodable video", failure)
    if process.returncode != 0 or summary is None:
        tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-10:])
        raise RuntimeError(f"BlazePose worker failed on {video} (exit {process.returncode}):\n{tail}")
    log_path.unlink()
    return summary
