"""Absolute 3D pose from a 2D pose and a root-agnostic metric 3D pose (MeTRAbs, Sárándi et al. 2020).

The network predicts, per joint, a pixel position in the crop and a metric offset (mm) from an unknown
reference point. The reference point's camera-frame position T follows from requiring the offsets, once
moved by T, to project onto the 2D prediction:

    p_j · (z_j + T_z) = x_j + T_xy      for every joint j,   p_j = K⁻¹ [u_j, v_j, 1]  (normalised 2D)
    ⇔ [1, 0, -p_jx] · T = p_jx z_j − x_j,   [0, 1, -p_jy] · T = p_jy z_j − y_j

which is linear in T and solved by weighted least squares per example. Joints the 2D head places near or
beyond the crop border are unreliable in 2D (the heatmap cannot reach outside the image), so they get a
tiny weight. Camera conventions are those of ``assets/cameras.py``: x right, y down, z forward,
millimetres, pixel centres at integer coordinates; intrinsics are upper-triangular with last row
[0, 0, 1] (the store's crops come from undistorted virtual cameras).

Everything here is batched over a leading example axis, differentiable, and runs in at least float32
with autocast disabled: the 3×3 solves and the perspective divisions lose too much precision in half.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

FOV_BORDER_FACTOR = 0.75  # joints closer than this many strides to the crop edge count as out of view
OUT_OF_FOV_WEIGHT = 1e-4  # least-squares weight of such joints (not 0: keeps the system well posed)
DEFAULT_REGULARIZATION = 1e-2  # Tikhonov term on the normalised normal equations, as in the reference
MIN_DEPTH_MM = 1.0  # projections divide by at least this depth, so points at or behind the camera stay finite
_TINY = 1e-12


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_points(tensor: Tensor, name: str, last: int) -> None:
    if not isinstance(tensor, Tensor) or tensor.ndim != 3 or tensor.shape[-1] != last:
        shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(f"{name}: expected a tensor of shape [B, J, {last}], got {shape}")


def check_intrinsics(intrinsics: Tensor, batch_size: int | None = None, name: str = "intrinsics") -> None:
    """Raise ValueError unless ``intrinsics`` is [B, 3, 3], finite, with last row [0, 0, 1] and fx, fy > 0.

    This reads the values, so on a GPU it synchronises; callers validate once per batch, not per joint.
    """
    if not isinstance(intrinsics, Tensor):
        raise ValueError(f"{name}: expected a torch tensor of shape [B, 3, 3], got {type(intrinsics).__name__}")
    expected = f"[{batch_size}, 3, 3]" if batch_size is not None else "[B, 3, 3]"
    if intrinsics.ndim != 3 or intrinsics.shape[1:] != (3, 3) or (
        batch_size is not None and intrinsics.shape[0] != batch_size
    ):
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(intrinsics.shape)}")
    if not intrinsics.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {intrinsics.dtype}")
    finite = torch.isfinite(intrinsics).all(dim=(1, 2))
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()[:10].tolist()
        raise ValueError(f"{name}: expected finite camera matrices, got non-finite values in examples {bad}")
    last_row = intrinsics[:, 2].new_tensor([0.0, 0.0, 1.0])
    well_formed = (intrinsics[:, 2] == last_row).all(dim=1) & (intrinsics[:, 0, 0] > 0) & (intrinsics[:, 1, 1] > 0)
    if not bool(well_formed.all()):
        bad = torch.nonzero(~well_formed).flatten()[:10].tolist()
        raise ValueError(
            f"{name}: expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0; examples {bad} are not"
        )


def image_to_normalized(coords2d_px: Tensor, intrinsics: Tensor) -> Tensor:
    """Pixels [B, J, 2] → normalised image coordinates K⁻¹[u, v, 1] (x/z, y/z) [B, J, 2]."""
    K = intrinsics[:, None]
    y = (coords2d_px[..., 1] - K[..., 1, 2]) / K[..., 1, 1]
    x = (coords2d_px[..., 0] - K[..., 0, 2] - K[..., 0, 1] * y) / K[..., 0, 0]
    return torch.stack([x, y], dim=-1)


def project(points_mm: Tensor, intrinsics: Tensor, *, min_depth_mm: float = MIN_DEPTH_MM) -> Tensor:
    """Camera-frame points [B, J, 3] → pixels [B, J, 2]; depths below ``min_depth_mm`` are clamped to it."""
    K = intrinsics[:, None]
    depth = points_mm[..., 2].clamp_min(min_depth_mm)
    x, y = points_mm[..., 0] / depth, points_mm[..., 1] / depth
    u = K[..., 0, 0] * x + K[..., 0, 1] * y + K[..., 0, 2]
    v = K[..., 1, 1] * y + K[..., 1, 2]
    return torch.stack([u, v], dim=-1)


def fov_bounds(image_size: int, stride: int, border_factor: float = FOV_BORDER_FACTOR) -> tuple[float, float]:
    """Lowest and highest pixel coordinate counted as inside a square crop's field of view.

    The image spans [-0.5, S - 0.5] (pixel centres at integers); the border is ``border_factor · stride``
    pixels inside that, or outside for a negative factor. The interval is symmetric about the crop centre
    (S - 1) / 2, so a horizontal flip maps in-view joints to in-view joints.
    """
    border = border_factor * stride
    return -0.5 + border, image_size - 0.5 - border


def is_within_fov(coords2d_px: Tensor, image_size: int, stride: int, border_factor: float = FOV_BORDER_FACTOR) -> Tensor:
    """Bool [B, J]: both pixel coordinates lie within ``fov_bounds``."""
    lower, upper = fov_bounds(image_size, stride, border_factor)
    return ((coords2d_px >= lower) & (coords2d_px <= upper)).all(dim=-1)


def flip_intrinsics(intrinsics: Tensor, image_size: int) -> Tensor:
    """Intrinsics of horizontally mirrored crops (pixel u ↦ S - 1 - u).

    The mirrored image shows the scene mirrored in the camera frame (x ↦ -x) through this matrix:
    principal point cx ↦ S - 1 - cx and skew s ↦ -s.
    """
    flipped = intrinsics.clone()
    flipped[:, 0, 1] = -intrinsics[:, 0, 1]
    flipped[:, 0, 2] = (image_size - 1) - intrinsics[:, 0, 2]
    return flipped


def _rms(x: Tensor, present: Tensor | None = None) -> Tensor:
    """Per-example root mean square over the last axis (its ``present`` entries), [B, 1]; clamped so zeros
    give no NaN gradient."""
    if present is None:
        return x.square().mean(dim=-1, keepdim=True).clamp_min(_TINY).sqrt()
    mask = present.to(x.dtype)
    mean_square = (x.square() * mask).sum(dim=-1, keepdim=True) / mask.sum(dim=-1, keepdim=True).clamp_min(1.0)
    return mean_square.clamp_min(_TINY).sqrt()


def _reference_full_perspective(normalized2d: Tensor, coords3d_rel: Tensor, weights: Tensor, regularization: float,
                                present: Tensor | None = None) -> Tensor:
    """Reference point T [B, 3] by weighted, Tikhonov-regularised least squares (see module docstring);
    ``present`` [B, J] leaves padding out of the scales too, so padding changes nothing.

    The unknowns are badly scaled (T_xy in mm multiplies 1, T_z multiplies p ≈ 0.1), so the p column and
    the right-hand side are each divided by their RMS before solving and the scales undone afterwards;
    this also makes the regulariser's strength independent of units and distance.
    """
    batch, joints = normalized2d.shape[:2]
    p = normalized2d.reshape(batch, 2 * joints)  # rows alternate x, y for each joint
    rows_present = None if present is None else present.repeat_interleave(2, dim=1)
    scale_p = _rms(p, rows_present)
    rhs = (normalized2d * coords3d_rel[..., 2:] - coords3d_rel[..., :2]).reshape(batch, 2 * joints)
    scale_rhs = _rms(rhs, rows_present)
    row_weights = weights.repeat_interleave(2, dim=1)
    is_x_row = torch.arange(2 * joints, device=p.device) % 2 == 0
    e_x = is_x_row.to(p.dtype).expand(batch, -1)
    e_y = 1 - e_x
    A = torch.stack([e_x, e_y, -p / scale_p], dim=-1) * row_weights[..., None]  # [B, 2J, 3]
    b = (rhs / scale_rhs * row_weights)[..., None]  # [B, 2J, 1]
    At = A.transpose(1, 2)
    eye = torch.eye(3, dtype=p.dtype, device=p.device)
    solution = torch.linalg.solve(At @ A + regularization * eye, At @ b)[..., 0]
    return torch.cat([solution[:, :2], solution[:, 2:] / scale_p], dim=1) * scale_rhs


def _reference_weak_perspective(normalized2d: Tensor, coords3d_rel: Tensor, weights: Tensor) -> Tensor:
    """Reference point T [B, 3] assuming all joints at one depth: that depth is the ratio of the metric to
    the normalised 2D spread, and the pose's (weighted) centroid is placed on the ray of the 2D centroid.

    Used for the first training steps, when the 2D and 3D heads still disagree so much that the full
    perspective solve is numerically erratic.
    """
    w = (weights / weights.sum(dim=1, keepdim=True))[..., None]  # [B, J, 1]
    mean3d = (w * coords3d_rel).sum(dim=1)  # [B, 3]
    mean2d = (w * normalized2d).sum(dim=1)  # [B, 2]
    spread3d = (w * (coords3d_rel[..., :2] - mean3d[:, None, :2]).square()).sum(dim=(1, 2))
    spread2d = (w * (normalized2d - mean2d[:, None]).square()).sum(dim=(1, 2))
    depth = (spread3d.clamp_min(_TINY) / spread2d.clamp_min(_TINY)).sqrt()[:, None]
    centroid = torch.cat([mean2d, torch.ones_like(mean2d[:, :1])], dim=1) * depth
    return centroid - mean3d


def reconstruct_absolute(
    coords2d_px: Tensor,
    coords3d_rel_mm: Tensor,
    intrinsics: Tensor,
    *,
    is_in_fov: Tensor | None = None,
    mix_3d_inside_fov: float | Tensor = 0.5,
    weak_perspective: bool = False,
    regularization: float = DEFAULT_REGULARIZATION,
    joint_present: Tensor | None = None,
) -> Tensor:
    """Camera-frame absolute pose [B, J, 3] (mm) from 2D pixels [B, J, 2] and reference-relative 3D [B, J, 3].

    ``is_in_fov`` (bool [B, J], e.g. from ``is_within_fov``) marks joints whose 2D prediction is trusted;
    None trusts all. The reference point T is solved with weight 1 for trusted joints and
    ``OUT_OF_FOV_WEIGHT`` for the others. Then every joint has two estimates:

    - 3D-based: ``coords3d_rel + T``;
    - 2D-based: the 2D prediction back-projected to the depth ``z_rel + T_z``.

    Trusted joints get ``mix · 3D-based + (1 - mix) · 2D-based``, the others the 3D-based estimate.
    ``mix_3d_inside_fov`` is a number or a [B] tensor (training draws it from U(0, 1) per example, so
    both heads learn to be right on their own). ``regularization=0`` solves the plain least squares; the
    default (the reference's) damps ill-conditioned examples at the cost of shrinking T slightly: about
    0.05 % of the distance for a 17-joint person centred in the crop (1.5 mm at 2.5 m, 6 mm at 10 m),
    less with more joints, far below the network's own error. ``joint_present`` (bool [B, J]; None: all)
    leaves out padding entries, which then weigh nothing in T.
    """
    _check_points(coords2d_px, "coords2d_px", 2)
    _check_points(coords3d_rel_mm, "coords3d_rel_mm", 3)
    batch, joints = coords2d_px.shape[:2]
    if coords3d_rel_mm.shape[:2] != (batch, joints):
        raise ValueError(
            f"coords3d_rel_mm: expected shape [{batch}, {joints}, 3] to match coords2d_px, "
            f"got {tuple(coords3d_rel_mm.shape)}"
        )
    if not isinstance(intrinsics, Tensor) or intrinsics.shape != (batch, 3, 3):
        shape = tuple(intrinsics.shape) if isinstance(intrinsics, Tensor) else type(intrinsics).__name__
        raise ValueError(f"intrinsics: expected shape [{batch}, 3, 3], got {shape}")
    if is_in_fov is not None and tuple(is_in_fov.shape) != (batch, joints):
        raise ValueError(f"is_in_fov: expected shape [{batch}, {joints}], got {tuple(is_in_fov.shape)}")

    dtype = _compute_dtype(coords2d_px, coords3d_rel_mm, intrinsics)
    with torch.autocast(device_type=coords2d_px.device.type, enabled=False):
        coords2d = coords2d_px.to(dtype)
        rel = coords3d_rel_mm.to(dtype)
        normalized2d = image_to_normalized(coords2d, intrinsics.to(dtype))
        if is_in_fov is None:
            is_in_fov = torch.ones(batch, joints, dtype=torch.bool, device=coords2d.device)
        weights = torch.where(is_in_fov, 1.0, OUT_OF_FOV_WEIGHT).to(dtype)
        if joint_present is not None:
            weights = torch.where(joint_present, weights, torch.zeros((), dtype=dtype, device=weights.device))

        if weak_perspective:
            reference = _reference_weak_perspective(normalized2d, rel, weights)
        else:
            reference = _reference_full_perspective(normalized2d, rel, weights, regularization, joint_present)

        abs_3d_based = rel + reference[:, None]
        depth = abs_3d_based[..., 2:]
        abs_2d_based = torch.cat([normalized2d * depth, depth], dim=-1)
        mix = torch.as_tensor(mix_3d_inside_fov, dtype=dtype, device=coords2d.device)
        if mix.ndim == 1:
            mix = mix[:, None, None]
        mixed = mix * abs_3d_based + (1 - mix) * abs_2d_based
        return torch.where(is_in_fov[..., None], mixed, abs_3d_based)


def mirror_pose_2d(coords2d_px: Tensor, image_size: int, permutation: Sequence[int] | Tensor) -> Tensor:
    """2D poses [B, J, 2] as seen in horizontally flipped crops, joints relabelled left ↔ right."""
    mirrored = torch.stack([(image_size - 1) - coords2d_px[..., 0], coords2d_px[..., 1]], dim=-1)
    return mirrored[:, torch.as_tensor(permutation, device=coords2d_px.device)]


def mirror_pose_3d(coords3d: Tensor, permutation: Sequence[int] | Tensor) -> Tensor:
    """Camera-frame 3D poses [B, J, 3] mirrored (x ↦ -x), joints relabelled left ↔ right."""
    mirrored = torch.stack([-coords3d[..., 0], coords3d[..., 1], coords3d[..., 2]], dim=-1)
    return mirrored[:, torch.as_tensor(permutation, device=coords3d.device)]
