"""Robust multi-view triangulation of 2D joint detections: the pseudo ground truth of multi-view datasets.

``triangulate`` works on all points at once (every frame and joint), with array operations only; the
Python loops run over a fixed number of view pairs, iterations or memory-bounded blocks of points.

1. Observations are undistorted to normalised image coordinates, where the lens-free camera ``[R | t]``
   is linear, and every view contributes a 4x4 DLT normal matrix ``A^T A`` (its two equations,
   weighted by the detector confidence). Summing those matrices over any subset of views gives that
   subset's DLT system, so candidate solutions for many subsets cost one small solve each. The solution
   is the homogeneous least-squares one (the right singular vector of ``A`` with the smallest singular
   value, i.e. the eigenvector of ``A^T A`` with the smallest eigenvalue), found by inverse iteration:
   a batched 4x4 inverse and three matrix-vector products, several times faster than batched SVD.
2. With three or more views, detections can be wrong in a view without being missing (a swapped left
   and right leg, a limb of someone else): every view pair proposes a point, each proposal is scored
   by its reprojection errors in *all* views (MSAC: truncated squared error), and the best proposal's
   views within the pixel threshold become the inliers. Two views can only be checked against each
   other: if they disagree, the point is dropped rather than guessed.
3. The point is re-triangulated from its inliers, with equations rescaled by the camera depth so the
   algebraic DLT error approximates pixel error, and then refined by a few damped Gauss-Newton
   (Levenberg-Marquardt) steps on the distorted-pixel reprojection error.
"""

from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple

import numpy as np

from assets.cameras import Camera, CameraRig

# Inlier threshold as a fraction of the image diagonal: 2% is ~40 px on a 1080x1920 frame, above the
# typical error of a body-keypoint detector on a person filling the frame and well below a left/right
# swap or a wrong person.
DEFAULT_THRESHOLD_FRACTION = 0.02
DEFAULT_REFINE_ITERATIONS = 2
# Re-triangulation rounds after consensus: the first round can win back views that the pair's point
# (noisier than the all-inlier point) reprojected just outside the threshold.
_INLIER_ROUNDS = 2
# Inverse iterations for the smallest eigenvector of the 4x4 DLT normal matrix. Each multiplies the
# error by lambda_min / lambda_2, which is tiny for any point seen from two distinct directions.
_EIGEN_ITERATIONS = 3
# Floats per large working array; bounds the memory of one block of points.
_BLOCK_ELEMENTS = 1 << 23


class Triangulation(NamedTuple):
    points3d: np.ndarray  # [..., 3] world mm; NaN where fewer than ``min_views`` views agree
    reprojection_error: np.ndarray  # [...] px in the original (distorted) images, mean over inlier views
    inlier_views: np.ndarray  # [C, ...] bool, the views the point was triangulated from


def triangulate(
    points2d,
    confidence,
    cameras: Sequence[Camera],
    *,
    threshold_px=None,
    threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION,
    image_sizes=None,
    min_views: int = 2,
    robust: bool = True,
    refine_iterations: int = DEFAULT_REFINE_ITERATIONS,
) -> Triangulation:
    """Triangulate pixel detections seen by calibrated cameras.

    points2d: [C, N, J, 2] pixels in each camera's original (lens-distorted) image; any batch shape
        between the camera axis and the last axis works, e.g. [C, P, 2]. NaN = missing.
    confidence: [C, N, J] detector confidence, weights the views; 0 = missing.
    cameras: C ``Camera`` objects, world -> camera in millimetres.
    threshold_px: inlier threshold in pixels, one for all cameras or one per camera. Default:
        ``threshold_fraction`` of each image's diagonal, with image sizes from ``image_sizes`` ([C, 2]
        as (width, height)) or, failing that, twice the principal point.
    min_views: fewer agreeing views than this leave the point NaN.
    robust: reject outlier views by consensus over view pairs (needs >= 3 views to reject anything);
        False uses every detected view.
    refine_iterations: Levenberg-Marquardt steps on the reprojection error after the linear solution.
    """
    rig = _checked_rig(cameras)
    num_cameras = len(rig)
    uv = np.asarray(points2d, dtype=np.float64)
    if uv.ndim < 3 or uv.shape[0] != num_cameras or uv.shape[-1] != 2:
        raise ValueError(f"points2d: expected shape [{num_cameras} cameras, N, J, 2] (pixels), got {uv.shape}")
    weight = np.asarray(confidence, dtype=np.float64)
    if weight.shape != uv.shape[:-1]:
        raise ValueError(f"confidence: expected shape {uv.shape[:-1]} to match points2d {uv.shape}, "
                         f"got {weight.shape}")
    if not np.all(np.isfinite(weight)):
        raise ValueError(f"confidence: {int(np.sum(~np.isfinite(weight)))} non-finite values (use 0 for missing)")
    if np.any(weight < 0):
        raise ValueError(f"confidence: expected values >= 0, got minimum {weight.min()}")
    if min_views < 2:
        raise ValueError(f"min_views: a point needs at least 2 views, got {min_views}")
    if refine_iterations < 0:
        raise ValueError(f"refine_iterations: expected >= 0, got {refine_iterations}")
    threshold = _thresholds(rig, threshold_px, threshold_fraction, image_sizes)

    batch_shape = uv.shape[1:-1]
    uv = uv.reshape(num_cameras, -1, 2)
    weight = np.where(np.isfinite(uv).all(axis=-1), weight.reshape(num_cameras, -1), 0.0)
    num_points = uv.shape[1]
    solver = _Solver(rig, threshold, min_views, robust, refine_iterations)
    points = np.full((num_points, 3), np.nan)
    error = np.full(num_points, np.nan)
    inliers = np.zeros((num_cameras, num_points), dtype=bool)
    for start in range(0, num_points, solver.block_size):
        block = slice(start, start + solver.block_size)
        points[block], error[block], inliers[:, block] = solver(uv[:, block], weight[:, block])
    return Triangulation(points.reshape(*batch_shape, 3), error.reshape(batch_shape),
                         inliers.reshape(num_cameras, *batch_shape))


def _checked_rig(cameras) -> CameraRig:
    if isinstance(cameras, Camera) or not isinstance(cameras, Sequence):
        raise ValueError(f"cameras: expected a sequence of Camera objects, got {type(cameras).__name__}")
    if len(cameras) < 2:
        raise ValueError(f"cameras: triangulation needs at least 2 cameras, got {len(cameras)}")
    rig = CameraRig(cameras)
    centers = rig.centers
    for a, b in combinations(range(len(rig)), 2):
        if np.allclose(centers[a], centers[b]):
            raise ValueError(f"cameras {a} ({rig.names[a]}) and {b} ({rig.names[b]}) share their optical centre "
                             f"{centers[a].round(3).tolist()}: no baseline to triangulate from")
    return rig


def _thresholds(rig: CameraRig, threshold_px, fraction: float, image_sizes) -> np.ndarray:
    num_cameras = len(rig)
    if threshold_px is not None:
        threshold = np.broadcast_to(np.asarray(threshold_px, dtype=np.float64), (num_cameras,)).copy() \
            if np.ndim(threshold_px) == 0 else np.asarray(threshold_px, dtype=np.float64)
        if threshold.shape != (num_cameras,) or not np.all(np.isfinite(threshold) & (threshold > 0)):
            raise ValueError(f"threshold_px: expected a positive number or {num_cameras} positive numbers, "
                             f"got {threshold_px!r}")
        return threshold
    if image_sizes is None:
        sizes = 2 * rig.K[:, :2, 2]
    else:
        sizes = np.asarray(image_sizes, dtype=np.float64)
        if sizes.shape != (num_cameras, 2) or not np.all(np.isfinite(sizes) & (sizes > 0)):
            raise ValueError(f"image_sizes: expected [{num_cameras}, 2] positive (width, height), got {sizes.tolist()}")
    if not fraction > 0:
        raise ValueError(f"threshold_fraction: expected a positive fraction of the image diagonal, got {fraction}")
    return fraction * np.linalg.norm(sizes, axis=-1)


class _Solver:
    """Triangulates one block of points [C, P] given the rig; holds what all blocks share."""

    def __init__(self, rig: CameraRig, threshold: np.ndarray, min_views: int, robust: bool, refine_iterations: int):
        self.rig, self.threshold, self.min_views = rig, threshold, min_views
        self.refine_iterations = refine_iterations
        num_cameras = len(rig)
        self.pairs = np.array(list(combinations(range(num_cameras), 2))) if robust and num_cameras >= 3 else None
        self.robust = robust
        # DLT in a normalised world frame (camera centroid at the origin, unit mean camera distance): in
        # millimetres the homogeneous coordinate is ~1e-3 of the others, which conditions A^T A badly
        centers = rig.centers
        self.origin = centers.mean(axis=0)
        self.scale = max(float(np.linalg.norm(centers - self.origin, axis=-1).mean()), 1e-9)
        denormalize = np.eye(4)
        denormalize[:3, :3] *= self.scale
        denormalize[:3, 3] = self.origin
        self.projections = rig.extrinsic_matrices @ denormalize  # [C, 3, 4] normalised world -> normalised image
        self.focal = rig.focal_lengths.mean(axis=-1)  # [C]
        candidates = len(self.pairs) if self.pairs is not None else 1
        self.block_size = max(1024, _BLOCK_ELEMENTS // (candidates * (16 + 4 * num_cameras)))

    def __call__(self, uv: np.ndarray, weight: np.ndarray):
        observed = weight > 0
        xy = self.rig.image_to_normalized(np.where(observed[..., None], uv, 0.0))
        # the two DLT equations of each view: (x P3 - P1) . X = 0 and (y P3 - P2) . X = 0
        rows = xy[..., :, None] * self.projections[:, None, 2:3, :] - self.projections[:, None, :2, :]  # [C,P,2,4]
        first, second = rows[..., 0, :], rows[..., 1, :]
        normal = first[..., :, None] * first[..., None, :] + second[..., :, None] * second[..., None, :]  # [C,P,4,4]

        if self.pairs is not None:
            points, inliers = self._consensus(normal, uv, weight)
            for _ in range(_INLIER_ROUNDS):
                points = self._solve_views(normal, weight, inliers, points)
                inliers = self._inliers(points, uv, observed)
        else:
            inliers = observed
            # the first solve cannot divide the equations by depth yet, the second uses its depths
            points = self._solve_views(normal, weight, inliers, None)
            points = self._solve_views(normal, weight, inliers, points)
            if len(self.rig) == 2 and self.robust:
                # two views cannot outvote each other: disagreement beyond the threshold drops the point
                inliers = inliers & self._inliers(points, uv, observed).all(axis=0)
        enough = (inliers.sum(axis=0) >= self.min_views) & np.isfinite(points).all(axis=-1)
        points[~enough] = np.nan
        inliers &= enough
        if self.refine_iterations:
            points = self._refine(points, uv, np.where(inliers, weight, 0.0))
        error = self._mean_error(points, uv, inliers)
        return points, error, inliers

    # -- linear solutions ------------------------------------------------------------------
    def _solve(self, normal: np.ndarray) -> np.ndarray:
        """World points [..., 3] minimising the DLT residual of normal matrices [..., 4, 4]; NaN if none."""
        trace = np.trace(normal, axis1=-2, axis2=-1)
        # a tiny shift keeps every matrix invertible without moving its eigenvectors; an all-zero matrix
        # (no equations) becomes the identity and yields a point that the caller masks out
        shift = np.where(trace > 0, 1e-12 * trace, 1.0)
        shifted = normal + shift[..., None, None] * np.eye(4)
        inverse = np.linalg.inv(shifted)
        # start at the camera centroid (0, 0, 0, 1), which is never orthogonal to a finite point
        vector = np.zeros(normal.shape[:-1])
        vector[..., 3] = 1.0
        for _ in range(_EIGEN_ITERATIONS):
            vector = (inverse @ vector[..., None])[..., 0]
            vector /= np.linalg.norm(vector, axis=-1, keepdims=True)
        homogeneous = vector[..., 3:]
        at_infinity = np.abs(homogeneous[..., 0]) < 1e-9
        points = vector[..., :3] / np.where(at_infinity[..., None], 1.0, homogeneous) * self.scale + self.origin
        points[at_infinity] = np.nan
        return points

    def _solve_views(self, normal: np.ndarray, weight: np.ndarray, use: np.ndarray, points) -> np.ndarray:
        """DLT from the views in ``use`` [C, P]; with ``points`` [P, 3] known, equations are divided by
        their depth so every view counts by its pixel error rather than by its distance."""
        scale = self.focal[:, None] ** 2 * np.where(use, weight, 0.0)
        if points is not None:
            depth = self.rig.world_to_camera(points)[..., 2]
            usable = np.isfinite(depth).all(axis=0) & (depth > 0).all(axis=0, where=use)
            scale = scale / np.where(usable, np.maximum(np.abs(depth), 1e-6), 1.0) ** 2
        points = self._solve((scale[..., None, None] * normal).sum(axis=0))
        points[use.sum(axis=0) < 2] = np.nan  # one view's ray has no unique point on it
        return points

    def _consensus(self, normal: np.ndarray, uv: np.ndarray, weight: np.ndarray):
        """Best view-pair proposal per point (lowest MSAC cost over all views) and its inlier views."""
        observed = weight > 0
        first, second = self.pairs[:, 0], self.pairs[:, 1]
        scale = self.focal[:, None] ** 2 * weight
        pair_normal = scale[first, :, None, None] * normal[first] + scale[second, :, None, None] * normal[second]
        candidates = self._solve(pair_normal)  # [K, P, 3]
        error, in_front = self._errors(candidates, uv)  # [C, K, P]
        within = observed[:, None] & in_front & (error < self.threshold[:, None, None])
        truncated = np.where(within, (error / self.threshold[:, None, None]) ** 2, 1.0)
        cost = np.where(observed[:, None], truncated, 0.0).sum(axis=0)  # [K, P]
        pair_ok = within[first, np.arange(len(first))] & within[second, np.arange(len(second))]
        cost = np.where(pair_ok & np.isfinite(candidates).all(axis=-1), cost, np.inf)
        best = np.argmin(cost, axis=0)
        found = np.isfinite(cost.min(axis=0))
        points = np.take_along_axis(candidates, best[None, :, None], axis=0)[0]
        inliers = np.take_along_axis(within, best[None, None, :], axis=1)[:, 0] & found
        return points, inliers

    # -- reprojection ----------------------------------------------------------------------
    def _errors(self, points: np.ndarray, uv: np.ndarray):
        """Pixel distances [C, ...] of ``points`` [..., P, 3] to the observations [C, P, 2], and whether
        each point is in front of each camera."""
        camera = self.rig.world_to_camera(points)
        in_front = camera[..., 2] > 0
        projected = self.rig.camera_to_image(np.where(in_front[..., None], camera, 1.0))
        observed = uv.reshape(uv.shape[:1] + (1,) * (points.ndim - 2) + uv.shape[1:])
        error = np.linalg.norm(projected - observed, axis=-1)
        return np.where(in_front, error, np.inf), in_front

    def _inliers(self, points: np.ndarray, uv: np.ndarray, observed: np.ndarray) -> np.ndarray:
        error, in_front = self._errors(points, uv)
        return observed & in_front & (error < self.threshold[:, None])

    def _mean_error(self, points: np.ndarray, uv: np.ndarray, inliers: np.ndarray) -> np.ndarray:
        error, _ = self._errors(points, uv)
        count = inliers.sum(axis=0)
        total = np.where(inliers, error, 0.0).sum(axis=0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def _refine(self, points: np.ndarray, uv: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Levenberg-Marquardt on the confidence-weighted squared pixel error, per point, all at once."""
        active = np.isfinite(points).all(axis=-1)
        points = np.where(active[:, None], points, 0.0)
        observed = np.where(weight[..., None] > 0, uv, 0.0)
        damping = np.full(len(points), 1e-3)

        def cost(candidate):
            # the error is infinite behind a camera: such a step is never an improvement
            error, _ = self._errors(candidate, observed)
            return (np.where(weight > 0, error, 0.0) ** 2 * weight).sum(axis=0)

        current = cost(points)
        for _ in range(self.refine_iterations):
            projected, jacobian, _ = self.rig.world_to_image_jacobian(points)
            residual = np.where(weight[..., None] > 0, projected - observed, 0.0)
            weighted = weight[..., None, None] * jacobian  # [C, P, 2, 3]
            hessian = (weighted[..., :, :, None] * jacobian[..., :, None, :]).sum(axis=(0, 2))  # [P, 3, 3]
            gradient = (weighted * residual[..., None]).sum(axis=(0, 2))  # [P, 3]
            diagonal = np.diagonal(hessian, axis1=-2, axis2=-1)
            damped = hessian + (damping[:, None] * np.maximum(diagonal, 1e-12))[:, :, None] * np.eye(3)
            damped[~active] = np.eye(3)
            step = np.linalg.solve(damped, -gradient[..., None])[..., 0]
            candidate = points + step
            candidate_cost = cost(candidate)
            better = active & np.isfinite(candidate_cost) & (candidate_cost < current)
            points = np.where(better[:, None], candidate, points)
            current = np.where(better, candidate_cost, current)
            damping = np.where(better, damping * 0.1, damping * 10.0)
        points[~active] = np.nan
        return points


def estimate_frame_offsets(
    points2d,
    confidence,
    cameras: Sequence[Camera],
    *,
    max_offset: int = 8,
    sweeps: int = 1,
    threshold_px=None,
    image_sizes=None,
) -> np.ndarray:
    """Integer frame offsets [C] that synchronise videos: camera c's frame ``f + offsets[c]`` shows the
    same instant as camera 0's frame ``f``.

    points2d [C, F, J, 2] and confidence [C, F, J] are per-video detections over F frames. A shift is
    scored by the truncated (MSAC) reprojection cost of the robust triangulation over the frames that
    every shifted video has; truncation keeps views that are outliers under any shift (a swapped leg)
    from deciding. Each camera is first synchronised with camera 0 alone (two views cannot outvote each
    other, so a majority of not-yet-synchronised views cannot pull it the wrong way), then ``sweeps``
    passes re-choose each camera's shift against all others. Every shift in ``[-max_offset, max_offset]``
    is tried.
    """
    uv = np.asarray(points2d, dtype=np.float64)
    weight = np.asarray(confidence, dtype=np.float64)
    if uv.ndim != 4 or uv.shape[0] != len(cameras) or uv.shape[-1] != 2:
        raise ValueError(f"points2d: expected shape [{len(cameras)} cameras, F frames, J, 2], got {uv.shape}")
    if weight.shape != uv.shape[:-1]:
        raise ValueError(f"confidence: expected shape {uv.shape[:-1]}, got {weight.shape}")
    num_frames = uv.shape[1]
    if num_frames <= 2 * max_offset:
        raise ValueError(f"points2d: {num_frames} frames leave no overlap for offsets up to +-{max_offset}")
    rig = _checked_rig(cameras)
    threshold = _thresholds(rig, threshold_px, DEFAULT_THRESHOLD_FRACTION, image_sizes)
    shared = np.arange(max_offset, num_frames - max_offset)

    def cost(views: np.ndarray, offsets: np.ndarray) -> float:
        frames = shared[None, :] + offsets[views, None]  # [V, F'] video frame per view
        shifted_uv, shifted_weight = uv[views[:, None], frames], weight[views[:, None], frames]
        view_cameras = [cameras[v] for v in views]
        result = triangulate(shifted_uv, shifted_weight, view_cameras, threshold_px=threshold[views],
                             refine_iterations=0)
        observed = (shifted_weight > 0) & np.isfinite(shifted_uv).all(axis=-1)
        error = np.linalg.norm(CameraRig(view_cameras).world_to_image(result.points3d) - shifted_uv, axis=-1)
        scaled = np.minimum(error / threshold[views].reshape(-1, 1, 1), 1.0)
        truncated = np.where(result.inlier_views, scaled ** 2, 1.0)
        return float(truncated[observed].mean())

    def best_shift(camera: int, views: np.ndarray, offsets: np.ndarray) -> int:
        trials = []
        for shift in range(-max_offset, max_offset + 1):
            candidate = offsets.copy()
            candidate[camera] = shift
            trials.append((cost(views, candidate), abs(shift), shift))  # ties go to the smaller shift
        return min(trials)[2]

    offsets = np.zeros(len(rig), dtype=int)
    for camera in range(1, len(rig)):
        offsets[camera] = best_shift(camera, np.array([0, camera]), offsets)
    every_view = np.arange(len(rig))
    for _ in range(sweeps if len(rig) > 2 else 0):
        for camera in range(1, len(rig)):
            offsets[camera] = best_shift(camera, every_view, offsets)
    return offsets
