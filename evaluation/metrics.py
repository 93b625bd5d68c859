"""3D pose metrics (numpy, batched). Poses are [N,J,3] millimetres; NaN ground-truth joints are ignored.

Every metric returns one value per example ([N]); an example without any valid joint gets NaN, so
averages over a test set should use ``np.nanmean``.

Root-relative metrics take ``root_index``: one joint index, or a sequence of joint indices whose mean is
the root (``Skeleton.root_joints``: the pelvis, or the hip midpoint in a format without a pelvis). An
example whose root joints are not all labelled has no valid joint for them.
"""

from collections.abc import Sequence

import numpy as np

Root = int | Sequence[int]

AUC_MAX_MM = 150.0
AUC_STEPS = 31  # the classic 3DHP/MuPoTS AUC: thresholds 0, 5, ..., 150 mm


def _validate(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must both have shape [N,J,3]; got pred {pred.shape} and gt {gt.shape}")
    if np.isnan(pred).any():
        raise ValueError("pred contains NaN: a model must predict every joint it is scored on")
    valid = np.isfinite(gt).all(axis=-1)
    return pred, gt, valid


def _masked_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    counts = valid.sum(axis=-1)
    total = np.where(valid, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def root_joint_indices(root_index: Root, num_joints: int) -> np.ndarray:
    """The root's joint indices as an int array, checked: one index or a non-empty sequence in 0..num_joints-1."""
    if root_index is None:
        raise ValueError("root-relative errors need root_index: a joint index or a sequence of joint indices "
                         "(e.g. skeleton.root_joints)")
    joints = np.atleast_1d(np.asarray(root_index))
    if joints.ndim != 1 or joints.size == 0 or joints.dtype == bool or not np.issubdtype(joints.dtype, np.integer):
        raise ValueError(f"root_index must be a joint index or a non-empty sequence of joint indices, "
                         f"got {root_index!r}")
    outside = joints[(joints < 0) | (joints >= num_joints)]
    if outside.size:
        raise ValueError(f"root_index {root_index!r}: joint {int(outside[0])} is outside 0..{num_joints - 1} "
                         f"(the poses have {num_joints} joints)")
    return joints.astype(np.intp)


def root_positions(poses, root_index: Root) -> np.ndarray:
    """The root of each pose [N,3]: the mean of its root joints, NaN where one of them is unlabelled."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[-1] != 3:
        raise ValueError(f"poses must have shape [N,J,3]; got {poses.shape}")
    return poses[:, root_joint_indices(root_index, poses.shape[1])].mean(axis=1)


def joint_errors(pred, gt, *, root_index: Root | None = None, align: str = "root") -> np.ndarray:
    """Per-joint Euclidean errors [N,J] (NaN where gt is missing) after the given alignment.

    align: "root" (subtract each pose's root: the joint ``root_index``, or the mean of the joints
    ``root_index`` lists), "procrustes" (similarity, no reflection) or "none".
    """
    pred, gt, valid = _validate(pred, gt)
    if align == "root":
        root_valid = np.isfinite(root_positions(gt, root_index)).all(axis=-1)
        pred = pred - root_positions(pred, root_index)[:, None]
        gt = gt - root_positions(gt, root_index)[:, None]
        valid = valid & root_valid[:, None]
    elif align == "procrustes":
        pred = procrustes_align(pred, gt, valid)
    elif align != "none":
        raise ValueError(f"align must be 'root', 'procrustes' or 'none', got {align!r}")
    errors = np.linalg.norm(pred - np.where(valid[..., None], gt, 0.0), axis=-1)
    return np.where(valid, errors, np.nan)


def procrustes_align(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``pred`` moved by the similarity transform (rotation, translation, scale; no reflection)
    that best fits it to ``gt`` over the valid joints (Umeyama)."""
    w = valid[..., None].astype(np.float64)
    count = np.maximum(w.sum(axis=1, keepdims=True), 1)
    gt0 = np.where(valid[..., None], gt, 0.0)
    mean_pred = (pred * w).sum(axis=1, keepdims=True) / count
    mean_gt = (gt0 * w).sum(axis=1, keepdims=True) / count
    p = (pred - mean_pred) * w
    g = (gt0 - mean_gt) * w
    covariance = np.einsum("nji,njk->nik", g, p)  # gt^T pred
    u, s, vt = np.linalg.svd(covariance)
    # flip the weakest axis where the best orthogonal fit would be a reflection
    sign = np.sign(np.linalg.det(u @ vt))
    sign[sign == 0] = 1
    d = np.ones_like(s)
    d[:, -1] = sign
    rotation = u @ (d[:, :, None] * vt)
    variance = (p ** 2).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(variance > 0, (s * d).sum(axis=1) / variance, 1.0)
    aligned = scale[:, None, None] * np.einsum("nik,njk->nji", rotation, pred - mean_pred) + mean_gt
    return aligned


def mpjpe(pred, gt, root_index: Root = 0) -> np.ndarray:
    """Mean per-joint position error after subtracting the root (a joint, or the mean of joints) of both poses."""
    return _masked_mean(*_errors_and_valid(joint_errors(pred, gt, root_index=root_index, align="root")))


def pa_mpjpe(pred, gt) -> np.ndarray:
    """MPJPE after similarity Procrustes alignment (rotation, translation, scale; no reflection)."""
    return _masked_mean(*_errors_and_valid(joint_errors(pred, gt, align="procrustes")))


def absolute_mpjpe(pred, gt) -> np.ndarray:
    """MPJPE without any alignment (camera-frame positions)."""
    return _masked_mean(*_errors_and_valid(joint_errors(pred, gt, align="none")))


def pck(pred, gt, threshold: float = 150.0, root_index: Root = 0) -> np.ndarray:
    """Percentage of (root-relative) joints with error below ``threshold`` mm, per example."""
    errors, valid = _errors_and_valid(joint_errors(pred, gt, root_index=root_index, align="root"))
    return 100.0 * _masked_mean((errors < threshold).astype(np.float64), valid)


def auc(pred, gt, root_index: Root = 0, max_threshold: float = AUC_MAX_MM, steps: int = AUC_STEPS) -> np.ndarray:
    """Area under the PCK curve for thresholds 0..max_threshold (classic 31 steps), in percent."""
    errors, valid = _errors_and_valid(joint_errors(pred, gt, root_index=root_index, align="root"))
    thresholds = np.linspace(0.0, max_threshold, steps)
    below = errors[..., None] < thresholds  # [N,J,T]; NaN errors compare False
    per_threshold = np.stack([_masked_mean(below[..., t].astype(np.float64), valid) for t in range(steps)], -1)
    return 100.0 * per_threshold.mean(axis=-1)


def pck_curve(pred, gt, thresholds, root_index: Root = 0) -> np.ndarray:
    """PCK (%) over all valid joints of all examples at each threshold: the data of a PCK plot."""
    errors, valid = _errors_and_valid(joint_errors(pred, gt, root_index=root_index, align="root"))
    flat = errors[valid]
    return np.array([100.0 * np.mean(flat < t) if flat.size else np.nan for t in thresholds])


def cps(pred, gt, threshold: float = 150.0) -> np.ndarray:
    """Correct-pose score: 100 if every valid joint is within ``threshold`` after Procrustes alignment, else 0."""
    errors, valid = _errors_and_valid(joint_errors(pred, gt, align="procrustes"))
    worst = np.where(valid, errors, -np.inf).max(axis=-1)
    return np.where(valid.any(axis=-1), 100.0 * (worst < threshold), np.nan)


def per_joint_mean_errors(pred, gt, root_index: Root = 0) -> np.ndarray:
    """Root-relative error of each joint averaged over the examples where it is labelled [J]."""
    errors, valid = _errors_and_valid(joint_errors(pred, gt, root_index=root_index, align="root"))
    return _masked_mean(errors.T, valid.T)


def consistency_error(poses, reconstruct) -> np.ndarray:
    """Cross-skeleton consistency: how far each predicted pose (all skeletons' joints together, [N,J,3])
    is from its own reconstruction through the autoencoder ``reconstruct``, mean over joints, in mm."""
    poses = np.asarray(poses, dtype=np.float64)
    recon = np.asarray(reconstruct(poses), dtype=np.float64)
    if recon.shape != poses.shape:
        raise ValueError(f"reconstruct returned shape {recon.shape}, expected {poses.shape}")
    valid = np.isfinite(poses).all(axis=-1)
    return _masked_mean(np.linalg.norm(np.nan_to_num(poses - recon), axis=-1), valid)


def _errors_and_valid(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return errors, ~np.isnan(errors)
