"""Training augmentation of person crops, as MeTRAbs does it: a perspective-correct re-crop and colour jitter.

Geometry. A stored crop is the image of a pinhole camera (intrinsics K, lens distortion, identity
rotation) at some optical centre. Augmenting it renders the scene through a *virtual* camera at the same
centre: turned so that a randomly shifted point of the crop becomes the new image centre, rolled about
its optical axis, zoomed, and optionally mirrored. With the centre fixed there is no parallax, so the new
image is an exact resampling of the old one and the labels transform exactly: 3D points by the rotation,
2D points along their viewing rays. Output crops are always undistorted, so their 3×3 intrinsics describe
them completely, and projecting the output pose3d through them gives the output pose2d.

Mirroring uses the model's flip-test functions (``model.reconstruction``): pixel u ↦ S - 1 - u,
camera-frame x ↦ -x, intrinsics by ``flip_intrinsics``, joints relabelled left ↔ right.

Colour. Brightness, contrast, hue and saturation changes in random order, each of them affine in RGB,
so the four compose into one 3×3 matrix plus offset applied once per pixel. Unlike TensorFlow's
HSV-based ops, values are clipped once at the end instead of after each op, and hue turns colours about
the grey axis of RGB space (the same angle on the hue circle for saturated colours).

Pixel centres sit at integer coordinates, as everywhere in this project; a crop of side S spans
[-0.5, S - 0.5].
"""

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from assets.cameras import Camera
from model.reconstruction import flip_intrinsics, mirror_pose_2d, mirror_pose_3d

COLOUR_OPS = ("brightness", "contrast", "hue", "saturation")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the grey of saturation changes (as PIL and torchvision)


@dataclass(frozen=True)
class AugmentationSettings:
    """Ranges of the random augmentation (defaults: MeTRAbs')."""

    shift_fraction: float = 0.1  # the new centre lies uniformly in a disc of this radius, in crop sides
    zoom_range: tuple[float, float] = (0.75, 1.25)  # focal length factor; > 1 magnifies
    roll_degrees: float = 20.0  # rotation about the optical axis, uniform in ±this
    flip_probability: float = 0.5
    brightness: float = 0.125  # added intensity, uniform in ±this, in units of full scale
    contrast_range: tuple[float, float] = (0.5, 1.5)  # factor on the deviation from each channel's mean
    hue_degrees: float = 72.0  # hue rotation, uniform in ±this
    saturation_range: tuple[float, float] = (0.5, 1.5)  # factor on the deviation from grey

    def __post_init__(self):
        for name in ("shift_fraction", "roll_degrees", "brightness", "hue_degrees"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if not 0 <= self.flip_probability <= 1:
            raise ValueError(f"flip_probability: expected a probability in [0, 1], got {self.flip_probability!r}")
        for name, smallest in (("zoom_range", 1e-3), ("contrast_range", 0.0), ("saturation_range", 0.0)):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high) and smallest <= low <= high):
                raise ValueError(f"{name}: expected (low, high) with {smallest} <= low <= high, got {(low, high)!r}")

    @classmethod
    def geometry_only(cls, **overrides) -> "AugmentationSettings":
        """Settings that leave colours as they are (for checking geometry against the pixels)."""
        neutral = {"brightness": 0.0, "contrast_range": (1.0, 1.0), "hue_degrees": 0.0, "saturation_range": (1.0, 1.0)}
        return cls(**{**neutral, **overrides})


@dataclass(frozen=True)
class CropAugmentation:
    """One draw of the geometric augmentation. The default is the identity re-crop (centred, unzoomed)."""

    shift_px: tuple[float, float] = (0.0, 0.0)  # where the new centre lies, relative to the crop centre
    zoom: float = 1.0
    roll_radians: float = 0.0
    flip: bool = False


@dataclass(frozen=True)
class ColourJitter:
    """One draw of the colour augmentation; ``apply`` runs the ops in ``order``."""

    brightness: float = 0.0  # in units of full scale
    contrast: float = 1.0
    hue_radians: float = 0.0
    saturation: float = 1.0
    order: tuple[str, ...] = field(default=COLOUR_OPS)

    def __post_init__(self):
        if sorted(self.order) != sorted(COLOUR_OPS):
            raise ValueError(f"order: expected a permutation of {COLOUR_OPS}, got {self.order!r}")

    def affine(self, channel_means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A [3, 3], b [3]) such that the jittered pixel is A @ rgb + b, rgb in [0, 1].

        ``channel_means`` (the image's per-channel means in [0, 1]) fix what contrast scales about; with
        no clipping between ops, the mean after earlier ops is their affine map of the original mean.
        """
        A, b = np.eye(3), np.zeros(3)
        for op in self.order:
            if op == "brightness":
                b = b + self.brightness
            elif op == "contrast":
                current_means = A @ channel_means + b
                A, b = self.contrast * A, self.contrast * b + (1 - self.contrast) * current_means
            else:
                M = _hue_rotation(self.hue_radians) if op == "hue" else _saturation_matrix(self.saturation)
                A, b = M @ A, M @ b
        return A, b

    def apply(self, image: Tensor) -> Tensor:
        """uint8 [H, W, 3] → jittered uint8 [H, W, 3]."""
        pixels = image.numpy().reshape(-1, 3).astype(np.float32)
        A, b = self.affine(pixels.mean(axis=0, dtype=np.float64) / 255)
        out = pixels @ A.T.astype(np.float32) + (b * 255).astype(np.float32)
        return torch.from_numpy(_to_uint8(out).reshape(image.shape))


def _hue_rotation(angle: float) -> np.ndarray:
    """Rotation of RGB space about the grey axis (Rodrigues' formula): turns hue, keeps grey and intensity."""
    axis = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(axis, axis)


def _saturation_matrix(factor: float) -> np.ndarray:
    """Blend with the pixel's grey value: factor 0 gives grey, 1 the identity."""
    return factor * np.eye(3) + (1 - factor) * np.outer(np.ones(3), _LUMA)


def sample_augmentation(
    rng: np.random.Generator, settings: AugmentationSettings, image_size: int
) -> tuple[CropAugmentation, ColourJitter]:
    """Draw the augmentation of one example (always the same number of draws, in the same order)."""
    radius = settings.shift_fraction * image_size * np.sqrt(rng.uniform())
    direction = rng.uniform(0, 2 * np.pi)
    crop = CropAugmentation(
        shift_px=(float(radius * np.cos(direction)), float(radius * np.sin(direction))),
        zoom=float(rng.uniform(*settings.zoom_range)),
        roll_radians=float(np.deg2rad(rng.uniform(-settings.roll_degrees, settings.roll_degrees))),
        flip=bool(rng.uniform() < settings.flip_probability),
    )
    colour = ColourJitter(
        brightness=float(rng.uniform(-settings.brightness, settings.brightness)),
        contrast=float(rng.uniform(*settings.contrast_range)),
        hue_radians=float(np.deg2rad(rng.uniform(-settings.hue_degrees, settings.hue_degrees))),
        saturation=float(rng.uniform(*settings.saturation_range)),
        order=tuple(COLOUR_OPS[i] for i in rng.permutation(len(COLOUR_OPS))),
    )
    return crop, colour


# ---------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------
def resize_matrix(source_size: int, target_size: int) -> np.ndarray:
    """Pixel map of resizing a square image with its edges kept: u ↦ (u + 0.5) · T/S - 0.5."""
    r = target_size / source_size
    return np.array([[r, 0, (r - 1) / 2], [0, r, (r - 1) / 2], [0, 0, 1.0]])


def virtual_camera(
    intrinsics: np.ndarray, distortion: np.ndarray, source_size: int, image_size: int,
    crop: CropAugmentation | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(R, K): rotation (new camera frame from the stored crop's) and intrinsics of the output crop,
    before any mirroring (``mirror_crop`` does that).

    ``crop`` None keeps the view: R = I, K resized to ``image_size``. Otherwise the camera turns towards
    the crop centre plus ``shift_px`` (no roll, as ``Camera.looking_at``), rolls by ``roll_radians`` and
    scales the focal lengths (and skew) by ``zoom`` with the principal point at the output centre.
    """
    K_base = resize_matrix(source_size, image_size) @ np.asarray(intrinsics, dtype=np.float64)
    if crop is None:
        return np.eye(3), K_base
    centre = (image_size - 1) / 2
    base = Camera(K_base, distortion)
    target = base.image_to_normalized(np.array([centre + crop.shift_px[0], centre + crop.shift_px[1]]))
    turned = base.looking_at(np.append(target, 1.0), focal=1.0, size=image_size).R
    c, s = np.cos(crop.roll_radians), np.sin(crop.roll_radians)
    roll = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])
    K = np.array([
        [crop.zoom * K_base[0, 0], crop.zoom * K_base[0, 1], centre],
        [0, crop.zoom * K_base[1, 1], centre],
        [0, 0, 1.0],
    ])
    return roll @ turned, K


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> np.ndarray:
    """Homogeneous pixel centres (u, v, 1) of a square image, row by row: [size², 3], read-only."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.stack([u.ravel(), v.ravel(), np.ones(size * size)], axis=-1)
    grid.flags.writeable = False
    return grid


def source_pixels(
    intrinsics: np.ndarray, distortion: np.ndarray, rotation: np.ndarray, new_intrinsics: np.ndarray, image_size: int
) -> np.ndarray:
    """Where each pixel of the output crop lies in the stored crop: [image_size, image_size, 2] (u, v).

    Pixels whose ray points behind the stored camera get positions far outside it (so they are filled).
    """
    rays = _pixel_grid(image_size) @ (rotation.T @ np.linalg.inv(new_intrinsics)).T  # in the stored camera's frame
    if np.any(distortion):
        uv = Camera(intrinsics, distortion).camera_to_image(rays)
    else:
        projected = rays @ np.asarray(intrinsics, dtype=np.float64).T
        uv = projected[:, :2] / projected[:, 2:]
    uv[rays[:, 2] <= 0] = -1e6
    return uv.reshape(image_size, image_size, 2)


def resample(image: np.ndarray, uv: np.ndarray) -> Tensor:
    """Bilinear samples of ``image`` (uint8 [H, W, 3]) at ``uv`` [h, w, 2] → uint8 [h, w, 3]; black outside.

    The values of ``assets.cameras.bilinear_sample`` with fill 0 (up to rounding), ten times faster.
    """
    height, width = image.shape[:2]
    scale = np.array([2.0 / width, 2.0 / height])
    grid = torch.from_numpy(((uv + 0.5) * scale - 1).astype(np.float32))[None]  # align_corners=False coordinates
    source = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32))[None]
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.from_numpy(_to_uint8(out[0].numpy().transpose(1, 2, 0)))


def transform_labels(
    pose3d: np.ndarray, pose2d: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray,
    rotation: np.ndarray, new_intrinsics: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels as the virtual camera sees them: pose3d rotated, pose2d moved along its (undistorted) rays.

    Each label keeps its own source (2D labels are not replaced by projected 3D ones), so a store whose
    2D labels match its 3D ones stays consistent and a pseudo-GT store keeps its detections. NaN stays NaN.
    """
    pose3d_out = np.asarray(pose3d, dtype=np.float64) @ rotation.T
    normalized = Camera(intrinsics, distortion).image_to_normalized(pose2d)
    rays = np.concatenate([normalized, np.ones_like(normalized[:, :1])], axis=-1) @ rotation.T
    projected = rays @ new_intrinsics.T
    return pose3d_out.astype(np.float32), (projected[:, :2] / projected[:, 2:]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# Whole crops
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crop:
    """A person crop and its labels, in one skeleton's joint order; undistorted, so K describes it fully."""

    image: Tensor  # uint8 [S, S, 3]
    intrinsics: Tensor  # float32 [3, 3]
    pose3d: Tensor  # float32 [J, 3] camera frame, mm; NaN = unlabelled
    pose2d: Tensor  # float32 [J, 2] pixels; NaN = unlabelled
    joint_valid: Tensor  # bool [J]

    @property
    def image_size(self) -> int:
        return self.image.shape[0]


def render_crop(
    image: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray, pose3d: np.ndarray, pose2d: np.ndarray,
    joint_valid: np.ndarray, *, image_size: int, crop: CropAugmentation | None = None,
    mirror_indices: np.ndarray | None = None,
) -> Crop:
    """The stored crop as seen by the virtual camera of ``crop`` (None: the stored view), ``image_size`` px.

    The stored view of an undistorted crop at its own size is returned unchanged (no resampling).
    ``mirror_indices`` (the skeleton's left ↔ right permutation) is needed when ``crop.flip`` is set.
    """
    distortion = np.asarray(distortion, dtype=np.float64)
    source_size = image.shape[0]
    if crop is None and source_size == image_size and not np.any(distortion):
        result = Crop(_tensor(image), _tensor(intrinsics, np.float32), _tensor(pose3d, np.float32),
                      _tensor(pose2d, np.float32), _tensor(joint_valid, bool))
    else:
        rotation, K = virtual_camera(intrinsics, distortion, source_size, image_size, crop)
        uv = source_pixels(intrinsics, distortion, rotation, K, image_size)
        new_pose3d, new_pose2d = transform_labels(pose3d, pose2d, intrinsics, distortion, rotation, K)
        result = Crop(resample(np.ascontiguousarray(image), uv), torch.from_numpy(K.astype(np.float32)),
                      torch.from_numpy(new_pose3d), torch.from_numpy(new_pose2d), _tensor(joint_valid, bool))
    if crop is not None and crop.flip:
        if mirror_indices is None:
            raise ValueError("mirror_indices: needed to relabel joints of a flipped crop, got None")
        result = mirror_crop(result, mirror_indices)
    return result


def mirror_crop(crop: Crop, mirror_indices) -> Crop:
    """The horizontally mirrored crop with joints relabelled left ↔ right (an involution)."""
    permutation = torch.as_tensor(np.asarray(mirror_indices), dtype=torch.long)
    size = crop.image_size
    return replace(
        crop,
        image=torch.from_numpy(np.ascontiguousarray(crop.image.numpy()[:, ::-1])),
        intrinsics=flip_intrinsics(crop.intrinsics[None], size)[0],
        pose3d=mirror_pose_3d(crop.pose3d[None], permutation)[0],
        pose2d=mirror_pose_2d(crop.pose2d[None], size, permutation)[0],
        joint_valid=crop.joint_valid[permutation],
    )


# Per-pixel work on a single crop runs in numpy: torch splits element-wise ops of this size across its
# intra-op threads, which costs milliseconds per op whenever the cores are busy (training, other workers).
def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 255)).astype(np.uint8)


def _tensor(array, dtype=None) -> Tensor:
    # a copy: these arrays are the dataset's own labels, which a caller editing a batch in place must not change
    return torch.from_numpy(np.array(array, dtype=dtype, copy=True))
