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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from assets.cameras import distort_normalized, undistort_normalized
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
        return torch.from_numpy(jitter_colours(image.numpy()[None], [self])[0])


def jitter_colours(images: np.ndarray, jitters: Sequence[ColourJitter]) -> np.ndarray:
    """uint8 images [N, H, W, 3], each jittered by its own draw → uint8 [N, H, W, 3]."""
    pixels = images.reshape(len(images), -1, 3).astype(np.float32)
    affines = [jitter.affine(means / 255) for jitter, means in zip(jitters, pixels.mean(axis=1, dtype=np.float64))]
    A = np.stack([A.T for A, _ in affines]).astype(np.float32)
    b = np.stack([b * 255 for _, b in affines]).astype(np.float32)
    return _to_uint8(pixels @ A + b[:, None]).reshape(images.shape)


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
# Geometry. Every function works on a batch of crops (leading axis N); the single-crop forms wrap them.
# ---------------------------------------------------------------------------------------------------
def resize_matrix(source_size: int, target_size: int) -> np.ndarray:
    """Pixel map of resizing a square image with its edges kept: u ↦ (u + 0.5) · T/S - 0.5."""
    r = target_size / source_size
    return np.array([[r, 0, (r - 1) / 2], [0, r, (r - 1) / 2], [0, 0, 1.0]])


def _stacked_distortion(distortion: np.ndarray) -> np.ndarray:
    """[N, 5] coefficients as the five [N, 1] arrays ``assets.cameras``' distortion model unpacks."""
    return np.asarray(distortion, dtype=np.float64).T[:, :, None]


def _image_to_normalized(intrinsics: np.ndarray, distortion: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Undistorted normalised coordinates of pixels ``uv`` [N, P, 2] of cameras [N]."""
    K = np.asarray(intrinsics, dtype=np.float64)
    y = (uv[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
    x = (uv[..., 0] - K[:, None, 0, 2] - K[:, None, 0, 1] * y) / K[:, None, 0, 0]
    return undistort_normalized(np.stack([x, y], axis=-1), _stacked_distortion(distortion))


def virtual_cameras(
    intrinsics: np.ndarray, distortion: np.ndarray, source_size: int, image_size: int,
    crops: Sequence[CropAugmentation | None],
) -> tuple[np.ndarray, np.ndarray]:
    """(R [N, 3, 3], K [N, 3, 3]): rotations (new camera frame from the stored crop's) and intrinsics of
    the output crops, before any mirroring.

    A crop None keeps the view: R = I, K resized to ``image_size``. Otherwise the camera turns towards
    the crop centre plus ``shift_px`` (no roll, as ``Camera.looking_at``), rolls by ``roll_radians`` and
    scales the focal lengths (and skew) by ``zoom`` with the principal point at the output centre.
    """
    K_base = resize_matrix(source_size, image_size) @ np.asarray(intrinsics, dtype=np.float64)
    rotations = np.repeat(np.eye(3)[None], len(K_base), axis=0)
    K = K_base.copy()
    moved = np.array([i for i, crop in enumerate(crops) if crop is not None], dtype=int)
    if len(moved) == 0:
        return rotations, K
    shift = np.array([crops[i].shift_px for i in moved], dtype=np.float64)
    zoom = np.array([crops[i].zoom for i in moved], dtype=np.float64)
    roll = np.array([crops[i].roll_radians for i in moved], dtype=np.float64)
    centre = (image_size - 1) / 2
    target = _image_to_normalized(K_base[moved], np.asarray(distortion)[moved], (centre + shift)[:, None])[:, 0]
    forward = np.concatenate([target, np.ones((len(moved), 1))], axis=-1)
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(np.array([0.0, 1.0, 0.0]), forward)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    turned = np.stack([right, np.cross(forward, right), forward], axis=1)  # rows: the new axes
    c, s = np.cos(roll), np.sin(roll)
    rolled = np.zeros((len(moved), 3, 3))
    rolled[:, 0, 0], rolled[:, 0, 1], rolled[:, 1, 0], rolled[:, 1, 1], rolled[:, 2, 2] = c, s, -s, c, 1.0
    rotations[moved] = rolled @ turned
    K[moved] = 0.0
    K[moved, 0, 0], K[moved, 0, 1] = zoom * K_base[moved, 0, 0], zoom * K_base[moved, 0, 1]
    K[moved, 1, 1] = zoom * K_base[moved, 1, 1]
    K[moved, 0, 2] = K[moved, 1, 2] = centre
    K[moved, 2, 2] = 1.0
    return rotations, K


def virtual_camera(
    intrinsics: np.ndarray, distortion: np.ndarray, source_size: int, image_size: int,
    crop: CropAugmentation | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``virtual_cameras`` of one crop: (R [3, 3], K [3, 3])."""
    rotations, K = virtual_cameras(np.asarray(intrinsics)[None], np.asarray(distortion)[None], source_size,
                                   image_size, [crop])
    return rotations[0], K[0]


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> np.ndarray:
    """Homogeneous pixel centres (u, v, 1) of a square image, row by row: [size², 3], read-only."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.stack([u.ravel(), v.ravel(), np.ones(size * size)], axis=-1)
    grid.flags.writeable = False
    return grid


def sources_pixels(
    intrinsics: np.ndarray, distortion: np.ndarray, rotations: np.ndarray, new_intrinsics: np.ndarray,
    image_size: int,
) -> np.ndarray:
    """Where each pixel of the output crops lies in the stored ones: [N, image_size, image_size, 2] (u, v).

    Pixels whose ray points behind the stored camera get positions far outside it (so they are filled).
    """
    to_stored = np.swapaxes(rotations, 1, 2) @ np.linalg.inv(new_intrinsics)
    rays = _pixel_grid(image_size)[None] @ np.swapaxes(to_stored, 1, 2)  # in the stored cameras' frames
    xy = rays[..., :2] / rays[..., 2:]
    distorted = np.flatnonzero(np.any(distortion, axis=-1))
    if len(distorted):
        xy[distorted] = distort_normalized(xy[distorted], _stacked_distortion(np.asarray(distortion)[distorted]))
    K = np.asarray(intrinsics, dtype=np.float64)
    uv = np.stack([K[:, None, 0, 0] * xy[..., 0] + K[:, None, 0, 1] * xy[..., 1] + K[:, None, 0, 2],
                   K[:, None, 1, 1] * xy[..., 1] + K[:, None, 1, 2]], axis=-1)
    uv[rays[..., 2] <= 0] = -1e6
    return uv.reshape(len(K), image_size, image_size, 2)


def source_pixels(
    intrinsics: np.ndarray, distortion: np.ndarray, rotation: np.ndarray, new_intrinsics: np.ndarray, image_size: int
) -> np.ndarray:
    """``sources_pixels`` of one crop: [image_size, image_size, 2]."""
    return sources_pixels(np.asarray(intrinsics)[None], np.asarray(distortion)[None], np.asarray(rotation)[None],
                          np.asarray(new_intrinsics)[None], image_size)[0]


def resample_batch(images: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``images`` (uint8 [N, H, W, 3]) at ``uv`` [N, h, w, 2] → uint8 [N, h, w, 3];
    black outside. The values of ``assets.cameras.bilinear_sample`` with fill 0 (up to rounding), ten
    times faster."""
    height, width = images.shape[1:3]
    scale = np.array([2.0 / width, 2.0 / height])
    grid = torch.from_numpy(((uv + 0.5) * scale - 1).astype(np.float32))  # align_corners=False coordinates
    source = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32))
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _to_uint8(out.numpy().transpose(0, 2, 3, 1))


def resample(image: np.ndarray, uv: np.ndarray) -> Tensor:
    """``resample_batch`` of one image (uint8 [H, W, 3]) at ``uv`` [h, w, 2] → uint8 tensor [h, w, 3]."""
    return torch.from_numpy(resample_batch(np.asarray(image)[None], np.asarray(uv)[None])[0])


def transform_labels_batch(
    pose3d: np.ndarray, pose2d: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray,
    rotations: np.ndarray, new_intrinsics: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels [N, J, ·] as the virtual cameras see them: pose3d rotated, pose2d moved along its
    (undistorted) rays.

    Each label keeps its own source (2D labels are not replaced by projected 3D ones), so a store whose
    2D labels match its 3D ones stays consistent and a pseudo-GT store keeps its detections. NaN stays NaN.
    """
    pose3d_out = np.einsum("njk,nik->nij", rotations, np.asarray(pose3d, dtype=np.float64))
    normalized = _image_to_normalized(intrinsics, distortion, np.asarray(pose2d, dtype=np.float64))
    rays = np.concatenate([normalized, np.ones_like(normalized[..., :1])], axis=-1)
    projected = np.einsum("njk,nik->nij", new_intrinsics @ rotations, rays)
    return pose3d_out.astype(np.float32), (projected[..., :2] / projected[..., 2:]).astype(np.float32)


def transform_labels(
    pose3d: np.ndarray, pose2d: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray,
    rotation: np.ndarray, new_intrinsics: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``transform_labels_batch`` of one crop."""
    out3d, out2d = transform_labels_batch(*(np.asarray(a)[None] for a in (pose3d, pose2d, intrinsics, distortion,
                                                                             rotation, new_intrinsics)))
    return out3d[0], out2d[0]


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


def render_crops(
    images: Sequence[np.ndarray], intrinsics: np.ndarray, distortion: np.ndarray, pose3d: np.ndarray,
    pose2d: np.ndarray, joint_valid: np.ndarray, *, image_size: int, crops: Sequence[CropAugmentation | None],
    colours: Sequence[ColourJitter | None] | None = None, mirror_indices: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """A batch of stored crops as seen by the virtual cameras of ``crops`` (None: the stored view), each
    ``image_size`` px, then colour-jittered by ``colours`` (None: unchanged).

    All examples share one joint layout (``mirror_indices`` is its left ↔ right permutation, needed
    when a crop is flipped); source images may differ in size. Returns numpy arrays ``image`` uint8
    [N, S, S, 3], ``intrinsics`` float32 [N, 3, 3], ``pose3d``, ``pose2d``, ``joint_valid``. The stored
    view of an undistorted crop at its own size is returned unchanged (no resampling). One resampling
    call per source size: per-example work is a few small matrix products.
    """
    n = len(images)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    distortion = np.asarray(distortion, dtype=np.float64)
    crops = list(crops)
    out = {"image": np.empty((n, image_size, image_size, 3), np.uint8),
           "intrinsics": np.empty((n, 3, 3), np.float32), "pose3d": np.empty(np.shape(pose3d), np.float32),
           "pose2d": np.empty(np.shape(pose2d), np.float32), "joint_valid": np.array(joint_valid, dtype=bool)}
    for size in sorted({image.shape[0] for image in images}):
        members = [i for i in range(n) if images[i].shape[0] == size]
        kept = [i for i in members
                if crops[i] is None and size == image_size and not np.any(distortion[i])]
        for i in kept:
            out["image"][i], out["intrinsics"][i] = images[i], intrinsics[i]
            out["pose3d"][i], out["pose2d"][i] = pose3d[i], pose2d[i]
        moved = np.array([i for i in members if i not in set(kept)], dtype=int)
        if len(moved) == 0:
            continue
        rotations, K = virtual_cameras(intrinsics[moved], distortion[moved], size, image_size,
                                       [crops[i] for i in moved])
        uv = sources_pixels(intrinsics[moved], distortion[moved], rotations, K, image_size)
        out["image"][moved] = resample_batch(np.stack([images[i] for i in moved]), uv)
        out["intrinsics"][moved] = K
        out["pose3d"][moved], out["pose2d"][moved] = transform_labels_batch(
            np.asarray(pose3d)[moved], np.asarray(pose2d)[moved], intrinsics[moved], distortion[moved], rotations, K)
    flipped = np.array([i for i, crop in enumerate(crops) if crop is not None and crop.flip], dtype=int)
    if len(flipped):
        if mirror_indices is None:
            raise ValueError("mirror_indices: needed to relabel joints of a flipped crop, got None")
        _mirror_in_place(out, flipped, np.asarray(mirror_indices), image_size)
    jittered = [i for i, colour in enumerate(colours or ()) if colour is not None]
    if jittered:
        out["image"][jittered] = jitter_colours(out["image"][jittered], [colours[i] for i in jittered])
    return out


def _mirror_in_place(batch: dict, rows: np.ndarray, permutation: np.ndarray, size: int) -> None:
    """Mirror crops ``rows`` of a rendered batch horizontally and relabel their joints left ↔ right (as
    ``mirror_crop``, the model's flip-test convention)."""
    batch["image"][rows] = batch["image"][rows, :, ::-1]
    K = batch["intrinsics"][rows]
    K[:, 0, 1], K[:, 0, 2] = -K[:, 0, 1], (size - 1) - K[:, 0, 2]
    batch["intrinsics"][rows] = K
    pose3d, pose2d = batch["pose3d"][rows], batch["pose2d"][rows]
    pose3d[..., 0] = -pose3d[..., 0]
    pose2d[..., 0] = (size - 1) - pose2d[..., 0]
    batch["pose3d"][rows], batch["pose2d"][rows] = pose3d[:, permutation], pose2d[:, permutation]
    batch["joint_valid"][rows] = batch["joint_valid"][rows][:, permutation]


def render_crop(
    image: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray, pose3d: np.ndarray, pose2d: np.ndarray,
    joint_valid: np.ndarray, *, image_size: int, crop: CropAugmentation | None = None,
    mirror_indices: np.ndarray | None = None,
) -> Crop:
    """``render_crops`` of one crop (no colour jitter)."""
    batch = render_crops([np.asarray(image)], np.asarray(intrinsics)[None], np.asarray(distortion)[None],
                         np.asarray(pose3d)[None], np.asarray(pose2d)[None], np.asarray(joint_valid)[None],
                         image_size=image_size, crops=[crop], mirror_indices=mirror_indices)
    return Crop(*(torch.from_numpy(batch[name][0]) for name in ("image", "intrinsics", "pose3d", "pose2d",
                                                                  "joint_valid")))


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


# Per-pixel work runs in numpy: torch splits element-wise ops of this size across its intra-op threads,
# which costs milliseconds per op whenever the cores are busy (training, other workers).
def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 255)).astype(np.uint8)

