"""Poses of everyone in a whole image: detect people, crop each with a virtual camera, estimate, map back.

``estimator.detect_poses(image, skeleton="smpl_24")`` follows the interface of the paper's released
models. Each person box is cut out with the same perspective-correct virtual camera the converters use
for training crops (``assets.person_crops``): a square, undistorted pinhole at the original camera's
optical centre, turned towards the box. The network's camera-frame prediction is rotated back into the
original camera's frame, and its 2D pose is that 3D pose projected through the original camera,
lens distortion included.

The person detector is any callable ``detector(image uint8 [H, W, 3]) -> [N, 5]`` (x_left, y_top,
width, height, confidence; or [N, 4] without confidence). The built-in one is MediaPipe's BlazePose
person detector (``assets.real.blazepose_tflite``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assets.cameras import Camera, reproject_image
from assets.person_crops import BOX_PADDING, person_crop_camera
from model.inference import DEFAULT_FOV_DEGREES

if TYPE_CHECKING:
    from model.estimator import PoseEstimator

Detector = Callable[[np.ndarray], np.ndarray]
DEFAULT_DETECTION_THRESHOLD = 0.5
PREDICT_BATCH = 64


class DetectionInputError(ValueError):
    """An input of ``detect_poses`` that cannot be used; the message names it and what was expected."""


_default_detector: Detector | None = None


def default_detector() -> Detector:
    """The built-in person detector, created once per process (loading its model takes a while)."""
    global _default_detector
    if _default_detector is None:
        from assets.real.blazepose_tflite import PersonDetector

        _default_detector = PersonDetector()
    return _default_detector


def load_image(image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from an array of that shape or an image file's path."""
    if isinstance(image, (str, Path)):
        from model.inference import MAX_IMAGE_PIXELS, PredictFileNotFoundError

        from PIL import Image, UnidentifiedImageError

        path = Path(image)
        if not path.is_file():
            raise PredictFileNotFoundError(f"image {path} does not exist")
        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise DetectionInputError(f"{path}: {img.width}x{img.height} exceeds the limit of "
                                              f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels; shrink it first")
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DetectionInputError(f"{path}: not a readable image ({exc})") from None
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
        raise DetectionInputError(f"image: expected a uint8 RGB array [H, W, 3] or a path, got "
                                  f"{array.dtype} array of shape {array.shape}")
    return array


def image_camera(size_wh: tuple[int, int], intrinsics=None, distortion=None,
                 fov_degrees: float = DEFAULT_FOV_DEGREES) -> Camera:
    """The camera of a whole image: the given intrinsics, or a pinhole of ``fov_degrees`` across its larger side."""
    from model.inference import check_fov

    if intrinsics is None:
        focal = max(size_wh) / (2 * math.tan(math.radians(check_fov(fov_degrees)) / 2))
        intrinsics = [[focal, 0, (size_wh[0] - 1) / 2], [0, focal, (size_wh[1] - 1) / 2], [0, 0, 1]]
    K = np.asarray(intrinsics, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise DetectionInputError(f"intrinsics: expected a finite 3x3 matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]], "
                                  f"got {np.asarray(intrinsics).tolist()}")
    if distortion is not None:
        distortion = np.asarray(distortion, dtype=np.float64).reshape(-1)
        if distortion.size > 5 or not np.isfinite(distortion).all():
            raise DetectionInputError(f"distortion: expected up to 5 finite coefficients (k1, k2, p1, p2, k3), "
                                      f"got {distortion.tolist()}")
    try:
        return Camera(K=K, dist=distortion)
    except ValueError as exc:
        raise DetectionInputError(f"intrinsics: {exc}") from None


def checked_boxes(boxes, where: str = "boxes") -> np.ndarray:
    """[N, 5] float64 (x, y, w, h, confidence) from [N, 4] or [N, 5]; confidence 1 when not given."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 5))
    if array.ndim != 2 or array.shape[1] not in (4, 5):
        raise DetectionInputError(f"{where}: expected [N, 4] or [N, 5] (x_left, y_top, width, height[, confidence]), "
                                  f"got shape {array.shape}")
    if not np.isfinite(array).all() or np.any(array[:, 2:4] <= 0):
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1) | np.any(array[:, 2:4] <= 0, axis=1))[0]
        raise DetectionInputError(f"{where}[{bad}]: expected finite numbers with positive width and height, "
                                  f"got {array[bad].tolist()}")
    if array.shape[1] == 4:
        array = np.concatenate([array, np.ones((len(array), 1))], axis=1)
    return array


class _Pyramid:
    """An image and its 2x box-averaged reductions, made on demand.

    A crop that shrinks the person a lot would alias under bilinear sampling, so it is sampled from the
    reduction that leaves it between 1x and 2x, as the real recordings' crops are.
    """

    def __init__(self, image: np.ndarray, camera: Camera):
        self.levels = [(image, camera)]

    def level(self, index: int) -> tuple[np.ndarray, Camera]:
        while len(self.levels) <= index:
            image, camera = self.levels[-1]
            h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
            if h < 2 or w < 2:
                return self.levels[-1]
            total = image[0:h:2, 0:w:2].astype(np.uint16)  # four uint8 values fit; ~10x faster than a float mean
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                total += image[dy:h:2, dx:w:2]
            smaller = ((total + 2) >> 2).astype(np.uint8)  # the rounded mean
            # pixel i of the reduction averages pixels 2i and 2i + 1, so it sits at 2i + 0.5
            self.levels.append((smaller, camera.cropped((0.5, 0.5, w, h), (w // 2, h // 2))))
        return self.levels[index]

    def crop(self, virtual: Camera, size: int, box_side_px: float) -> np.ndarray:
        level = max(0, int(math.floor(math.log2(max(box_side_px, 1.0) / size)))) if box_side_px > size else 0
        image, camera = self.level(level)
        return reproject_image(image, camera, virtual, (size, size))


def _people(image: np.ndarray, boxes, detector: Detector | None, threshold: float, max_people: int | None,
            where: str) -> np.ndarray:
    if boxes is not None:
        found = checked_boxes(boxes, where)
    else:
        found = checked_boxes((detector or default_detector())(image), f"{where} (from the detector)")
        found = found[found[:, 4] >= threshold]
        found = found[np.argsort(-found[:, 4], kind="stable")]
    return found if max_people is None else found[:max_people]


def detect_poses_batched(
    estimator: PoseEstimator,
    images: Sequence,
    skeleton: str | None = None,
    *,
    intrinsics=None,
    distortion=None,
    fov_degrees: float = DEFAULT_FOV_DEGREES,
    boxes: Sequence | None = None,
    detector: Detector | None = None,
    detection_threshold: float = DEFAULT_DETECTION_THRESHOLD,
    max_people: int | None = None,
    flip_test: bool = True,
    box_padding: float = BOX_PADDING,
) -> list[dict[str, np.ndarray]]:
    """``detect_poses`` for several images (e.g. video frames) with one network pass per batch of people.

    ``intrinsics`` / ``distortion`` apply to every image; ``boxes``, when given, is one box array per
    image (then no detector runs).
    """
    from model.inference import check_skeleton

    check_skeleton(estimator, skeleton)
    if boxes is not None and len(boxes) != len(images):
        raise DetectionInputError(f"boxes: expected one box array per image ({len(images)}), got {len(boxes)}")
    size = estimator.network.config.image_size
    crops, crop_cameras, frame_cameras, found = [], [], [], []
    for i, item in enumerate(images):
        image = load_image(item)
        camera = image_camera((image.shape[1], image.shape[0]), intrinsics, distortion, fov_degrees)
        people = _people(image, None if boxes is None else boxes[i], detector, detection_threshold, max_people,
                         "boxes" if boxes is None or len(images) == 1 else f"boxes[{i}]")
        pyramid = _Pyramid(image, camera)
        for box in people:
            virtual = person_crop_camera(camera, box[:4], size, box_padding)
            crops.append(pyramid.crop(virtual, size, max(box[2], box[3]) * box_padding))
            crop_cameras.append(virtual)
        frame_cameras.append(camera)
        found.append(people)

    num_joints = len(estimator.joint_names) if skeleton is None else \
        len(_skeleton_joint_indices(estimator, skeleton))
    poses_virtual = np.zeros((0, num_joints, 3), np.float32)
    if crops:
        stacked = np.stack(crops)
        K = np.stack([c.K for c in crop_cameras]).astype(np.float32)
        poses_virtual = np.concatenate([estimator.predict(stacked[i:i + PREDICT_BATCH], K[i:i + PREDICT_BATCH],
                                                          skeleton, flip_test=flip_test)
                                        for i in range(0, len(stacked), PREDICT_BATCH)])
    results, start = [], 0
    for camera, people in zip(frame_cameras, found):
        count = len(people)
        poses3d = np.zeros((count, num_joints, 3))
        for k in range(count):
            virtual = crop_cameras[start + k]
            rotation = virtual.R @ camera.R.T  # original camera coordinates -> virtual camera coordinates
            poses3d[k] = poses_virtual[start + k].astype(np.float64) @ rotation
        start += count
        with np.errstate(invalid="ignore", divide="ignore"):
            poses2d = camera.camera_to_image(poses3d) if count else np.zeros((0, num_joints, 2))
        results.append({"boxes": people.astype(np.float32), "poses3d": poses3d.astype(np.float32),
                        "poses2d": poses2d.astype(np.float32)})
    return results


def _skeleton_joint_indices(estimator: PoseEstimator, skeleton: str) -> list[int]:
    from assets.joint_names import skeleton_joint_indices

    return skeleton_joint_indices(estimator.joint_names, skeleton)


def detect_poses(estimator: PoseEstimator, image, skeleton: str | None = None, *, boxes=None,
                 **options) -> dict[str, np.ndarray]:
    """Everyone's pose in one image of any size: ``{"boxes": [N, 5], "poses3d": [N, J, 3] mm in the image's
    camera frame, "poses2d": [N, J, 2] pixels of the image}``; zero people gives empty arrays of these shapes.

    ``image``: uint8 RGB [H, W, 3] or a path. ``skeleton``: a format the model was trained on (None: all
    its joints). ``intrinsics`` [3, 3] and ``distortion`` (k1, k2, p1, p2, k3) of the image's camera, or a
    pinhole with ``fov_degrees`` across the larger side. ``boxes`` [N, 4 or 5]: people to estimate (then no
    detector runs); otherwise ``detector`` (default: the built-in BlazePose person detector) finds them,
    keeping those with confidence >= ``detection_threshold`` (at most ``max_people``). ``flip_test``
    averages the prediction with that of the mirrored crop.
    """
    return detect_poses_batched(estimator, [image], skeleton, boxes=None if boxes is None else [boxes],
                                **options)[0]
