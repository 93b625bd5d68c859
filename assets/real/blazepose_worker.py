"""BlazePose on every frame of one video, with a JPEG crop around the person per frame.

Runs under the MediaPipe virtualenv's interpreter (see ``assets.real.cache``), as a script file, so it
imports nothing from the project: only the standard library, NumPy, OpenCV and MediaPipe. It reports on
stdout, one JSON object per line: ``{"event": "progress" | "done" | "error", ...}``.

Outputs (paths chosen by the caller):
- ``--landmarks`` .npz: ``frames`` int32 [F]; ``landmarks`` float32 [F, 33, 3] = (u, v, visibility), u, v
  in pixels of the original frame with pixel centres at integer coordinates (the project's convention;
  MediaPipe's normalised x, y run from the image's left/top edge, i.e. u = x * W - 0.5); NaN u, v and
  visibility 0 in frames without a detected person;
  ``crop_boxes`` float32 [F, 4] (x, y, w, h), NaN without a person; ``video_size`` int32 (W, H); ``fps``.
- ``--images`` folder: ``<frame:06d>.jpg``, the square region ``crop_box`` resampled to ``--crop-size``.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

NUM_LANDMARKS = 33
JPEG_QUALITY = 90
PROGRESS_EVERY = 25


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def fail(message: str) -> None:
    emit("error", message=message)
    sys.exit(2)


def person_crop_box(uv: np.ndarray, padding: float) -> np.ndarray:
    """Square box around all landmarks (BlazePose predicts occluded and out-of-frame ones too)."""
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    centre = (lo + hi) / 2
    side = max(float((hi - lo).max()) * padding, 16.0)
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side, side])


def crop(frame: np.ndarray, box: np.ndarray, size: int, cv2) -> np.ndarray:
    """``frame``'s region ``box`` resampled to size x size, black outside the frame.

    Output pixel i shows frame point x0 + i * w / size, the map ``Camera.cropped`` describes (pixel
    centres at integer coordinates, as in OpenCV). Large downscales first halve the frame with
    ``pyrDown`` (a Gaussian pyramid level, whose pixel i sits at pixel 2i of the level below) so bilinear
    sampling does not alias.
    """
    x0, y0, w, h = (float(v) for v in box)
    levels = max(0, int(math.floor(math.log2(max(w, h) / size))))
    image = frame
    for _ in range(levels):
        image = cv2.pyrDown(image)
    factor = 2.0 ** levels
    inverse = np.array([[w / size / factor, 0.0, x0 / factor], [0.0, h / size / factor, y0 / factor]])
    return cv2.warpAffine(image, inverse, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, type=Path)
    parser.add_argument("--landmarks", required=True, type=Path)
    parser.add_argument("--images", required=True, type=Path)
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--crop-padding", type=float, default=1.5)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--model-complexity", type=int, default=1)
    parser.add_argument("--no-smoothing", action="store_true")
    args = parser.parse_args()

    import cv2
    import mediapipe as mp

    capture = cv2.VideoCapture(str(args.video))
    if not capture.isOpened():
        fail(f"cannot open {args.video} as a video")
    reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    wanted = reported if args.max_frames is None else min(args.max_frames, reported)
    args.images.mkdir(parents=True, exist_ok=True)
    pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=args.model_complexity,
                                  smooth_landmarks=not args.no_smoothing, enable_segmentation=False)
    landmarks, boxes = [], []
    size = None
    started = time.perf_counter()
    while args.max_frames is None or len(landmarks) < args.max_frames:
        ok, bgr = capture.read()
        if not ok:
            break
        height, width = bgr.shape[:2]
        if size is None:
            size = (width, height)
        elif size != (width, height):
            fail(f"{args.video}: frame {len(landmarks)} is {width}x{height}, earlier frames {size[0]}x{size[1]}")
        result = pose.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        values = np.full((NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
        values[:, 2] = 0.0
        box = np.full(4, np.nan, dtype=np.float32)
        if result.pose_landmarks is not None:
            values = np.array([(lm.x * width - 0.5, lm.y * height - 0.5, lm.visibility)
                               for lm in result.pose_landmarks.landmark], dtype=np.float32)
            box = person_crop_box(values[:, :2].astype(np.float64), args.crop_padding).astype(np.float32)
            image = crop(bgr, box, args.crop_size, cv2)
            path = args.images / f"{len(landmarks):06d}.jpg"
            if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                fail(f"cannot write {path}")
        landmarks.append(values)
        boxes.append(box)
        done = len(landmarks)
        if done % PROGRESS_EVERY == 0 or done == wanted:
            emit("progress", frames=done, total=wanted, fps=done / (time.perf_counter() - started))
    capture.release()
    pose.close()
    if not landmarks:
        fail(f"no frame of {args.video} could be decoded")
    if args.max_frames is None and reported > 0 and len(landmarks) < reported:
        fail(f"{args.video}: decoded {len(landmarks)} frames but the container reports {reported} (truncated?)")
    np.savez(args.landmarks, frames=np.arange(len(landmarks), dtype=np.int32), landmarks=np.stack(landmarks),
             crop_boxes=np.stack(boxes), video_size=np.array(size, dtype=np.int32), fps=np.float64(fps))
    emit("done", frames=len(landmarks), seconds=time.perf_counter() - started, video_size=list(size), fps=fps)


if __name__ == "__main__":
    main()
