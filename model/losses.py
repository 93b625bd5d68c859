"""MeTRAbs training losses (Sárándi et al.; as in the reference implementation isarandi/metrabs).

All terms are L1 and in metres (millimetre inputs divided by 1000; pixel errors scaled by B / S, the
millimetres one crop pixel spans in the metric box, then by 1/1000), so the terms are comparable. Each
term is the mean over the valid (example, joint) entries of the whole batch, as the reference's masked
means: an example with few labelled joints counts for fewer entries. A term with no valid entry is 0.

A joint of a 3D-labelled example is valid where its ground truth is finite (NaN = unlabelled) and the
optional ``joint_valid`` mask allows it. Ground truth is zeroed at invalid joints *before* any
arithmetic, so NaN labels give neither NaN losses nor NaN gradients.

    L_3D batch = L_rel + L_proj + w_abs(step) · L_abs      w_abs = 0.1 from ``abs_start_step`` on, else 0
    L_2D batch = L1 of the projected prediction against 2D labels
    total      = L_3D batch + 0.2 · L_2D batch
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from model.reconstruction import MIN_DEPTH_MM, is_within_fov, project

MIN_GT_DEPTH_MM = 300.0  # joints closer to the camera than this are ignored by L_abs and L_proj
FAR_DEPTH_MM = 10_000.0  # beyond this ground-truth depth, L_abs down-weights depth errors by FAR/z
GT_FOV_BORDER_FACTOR = -20.0  # L_proj and L_2D use labels up to 20 strides outside the crop


@dataclass(frozen=True)
class LossSettings:
    image_size: int = 128
    stride: int = 16
    box_size_mm: float = 2200.0
    abs_weight: float = 0.1
    abs_start_step: int = 5000  # the paper's; a demo run sets a small value
    weight_2d: float = 0.2

    @classmethod
    def from_config(cls, config, **overrides) -> "LossSettings":
        """Crop geometry from a ``MetrabsConfig`` (anything with image_size, stride, box_size_mm)."""
        geometry = {"image_size": config.image_size, "stride": config.stride, "box_size_mm": config.box_size_mm}
        return cls(**{**geometry, **overrides})

    @property
    def metres_per_pixel(self) -> float:
        return self.box_size_mm / (1000.0 * self.image_size)

    def abs_weight_at(self, step: int) -> float:
        return self.abs_weight if step >= self.abs_start_step else 0.0


def _check_pair(pred: Tensor, target: Tensor, pred_name: str, target_name: str, target_dims: int) -> None:
    if pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"{pred_name}: expected shape [B, J, 3], got {tuple(pred.shape)}")
    if target.shape != (*pred.shape[:2], target_dims):
        raise ValueError(
            f"{target_name}: expected shape [{pred.shape[0]}, {pred.shape[1]}, {target_dims}] to match "
            f"{pred_name}, got {tuple(target.shape)}"
        )


def label_validity(labels: Tensor, joint_valid: Tensor | None = None) -> Tensor:
    """Bool [B, J]: the label is finite and ``joint_valid`` (if given) allows it."""
    valid = torch.isfinite(labels).all(dim=-1)
    if joint_valid is not None:
        if joint_valid.shape != valid.shape:
            raise ValueError(f"joint_valid: expected shape {tuple(valid.shape)}, got {tuple(joint_valid.shape)}")
        valid = valid & joint_valid.to(device=valid.device, dtype=torch.bool)
    return valid


def _masked_mean(errors: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-joint errors [B, J] over mask [B, J]; 0 (still part of the graph) when nothing is valid."""
    weights = mask.to(errors.dtype)
    return (errors * weights).sum() / weights.sum().clamp_min(1.0)


def _zero_invalid(labels: Tensor, valid: Tensor) -> Tensor:
    return torch.where(valid[..., None], labels, torch.zeros((), dtype=labels.dtype, device=labels.device))


def _centered(poses: Tensor, valid: Tensor) -> Tensor:
    weights = valid.to(poses.dtype)[..., None]
    centre = (poses * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    return poses - centre


def relative_pose_loss(pred_mm: Tensor, gt_mm: Tensor, valid: Tensor) -> Tensor:
    """L_rel: L1 between poses each centred on the mean of its valid joints (gt's validity for both)."""
    gt = _zero_invalid(gt_mm, valid)
    errors = (_centered(pred_mm, valid) - _centered(gt, valid)).abs().mean(dim=-1)
    return _masked_mean(errors, valid) / 1000


def absolute_pose_loss(pred_mm: Tensor, gt_mm: Tensor, valid: Tensor) -> Tensor:
    """L_abs: camera-frame L1, (|Δx| + |Δy| + |Δz| · min(1, 10 m / z_gt)) / 3, for joints beyond 30 cm."""
    gt = _zero_invalid(gt_mm, valid)
    mask = valid & (gt[..., 2] > MIN_GT_DEPTH_MM)
    diff = (pred_mm - gt).abs()
    far_factor = (FAR_DEPTH_MM / gt[..., 2].abs().clamp_min(MIN_GT_DEPTH_MM)).clamp_max(1.0)
    errors = (diff[..., 0] + diff[..., 1] + diff[..., 2] * far_factor) / 3
    return _masked_mean(errors, mask) / 1000


def _image_loss(pred_mm: Tensor, target_px: Tensor, intrinsics: Tensor, mask: Tensor, settings: LossSettings) -> Tensor:
    """L1 in pixels × metres-per-pixel between the projected prediction and 2D targets, masked where the
    projection is in front of the camera and inside the crop's field of view (the heatmap range) and the
    target lies within 20 strides of the crop."""
    proj_pred = project(pred_mm, intrinsics)
    mask = (
        mask
        & (pred_mm[..., 2] > MIN_DEPTH_MM)
        & is_within_fov(proj_pred, settings.image_size, settings.stride)
        & is_within_fov(target_px, settings.image_size, settings.stride, GT_FOV_BORDER_FACTOR)
    )
    errors = (proj_pred - target_px).abs().mean(dim=-1) * settings.metres_per_pixel
    return _masked_mean(errors, mask)


def projection_loss(pred_mm: Tensor, gt_mm: Tensor, intrinsics: Tensor, valid: Tensor, settings: LossSettings) -> Tensor:
    """L_proj: image-plane error of the absolute prediction against the projected 3D labels."""
    gt = _zero_invalid(gt_mm, valid)
    in_front = valid & (gt[..., 2] > MIN_GT_DEPTH_MM)
    return _image_loss(pred_mm, project(gt, intrinsics), intrinsics, in_front, settings)


def loss_3d_batch(
    pred_abs_mm: Tensor,
    gt_mm: Tensor,
    intrinsics: Tensor,
    *,
    settings: LossSettings,
    step: int,
    joint_valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """Losses of absolute predictions [B, J, 3] against 3D labels [B, J, 3] (camera frame, mm, NaN =
    unlabelled): dict(rel, proj, abs, total) with total = rel + proj + w_abs(step) · abs."""
    _check_pair(pred_abs_mm, gt_mm, "pred_abs_mm", "gt_mm", 3)
    valid = label_validity(gt_mm, joint_valid)
    terms = {
        "rel": relative_pose_loss(pred_abs_mm, gt_mm, valid),
        "proj": projection_loss(pred_abs_mm, gt_mm, intrinsics, valid, settings),
        "abs": absolute_pose_loss(pred_abs_mm, gt_mm, valid),
    }
    terms["total"] = terms["rel"] + terms["proj"] + settings.abs_weight_at(step) * terms["abs"]
    return terms


def loss_2d_batch(
    pred_abs_mm: Tensor,
    gt2d_px: Tensor,
    intrinsics: Tensor,
    *,
    settings: LossSettings,
    joint_valid: Tensor | None = None,
) -> Tensor:
    """Loss of absolute predictions [B, J, 3] of examples with only 2D labels [B, J, 2] (pixels, NaN =
    unlabelled). The caller passes the predictions of the labels' own skeleton (its joints in the
    model's union, ``MetrabsModel.joint_indices``)."""
    _check_pair(pred_abs_mm, gt2d_px, "pred_abs_mm", "gt2d_px", 2)
    valid = label_validity(gt2d_px, joint_valid)
    return _image_loss(pred_abs_mm, _zero_invalid(gt2d_px, valid), intrinsics, valid, settings)


def combined_loss(loss_3d: Tensor, loss_2d: Tensor, settings: LossSettings) -> Tensor:
    """The training objective: the 3D-batch total plus ``weight_2d`` (0.2) times the 2D-batch loss."""
    return loss_3d + settings.weight_2d * loss_2d


def consistency_loss(pred_union_mm: Tensor, acae_reconstruction_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Mean |P − R(P)| in metres: how far predicted union-joint poses [..., J, 3] lie from what a frozen
    affine-combining autoencoder reconstructs of them (``ACAE.reconstruct``), i.e. from the space of
    poses consistent across skeleton formats. Gradients flow through both P and R(P)."""
    reconstructed = acae_reconstruction_fn(pred_union_mm)
    if reconstructed.shape != pred_union_mm.shape:
        raise ValueError(
            f"acae_reconstruction_fn: returned shape {tuple(reconstructed.shape)}, expected "
            f"{tuple(pred_union_mm.shape)} like its input"
        )
    return (pred_union_mm - reconstructed).abs().mean() / 1000
