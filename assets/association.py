"""Several people in calibrated views: which detection is which person, across views and over time.

Detections are a flat table, one row per person detected in one view at one instant: ``instant`` [D],
``view`` [D] (index into the cameras), ``uv`` [D, J, 2] pixels of the original (distorted) image and
``confidence`` [D, J]. Nothing here knows the detector or the recording.

1. ``associate`` (per instant, like Pose2Sim's personAssociation): two detections in different views can
   be the same person only if their joints lie near each other's epipolar lines (a necessary condition,
   cheap to test for every pair, that keeps the sets to triangulate few); every set of mutually
   compatible detections (at most one per view, at least two views) is triangulated, and each of its
   views scored by the median reprojection error of its confident joints. A set is consistent when every
   view is within the threshold; greedily, the consistent set with the most views (then the lowest
   error) becomes a person, its detections leave the pool, and so on until no consistent set is left.
   A person can be missing in any view; a detection no other view confirms stays unassociated. Two
   sets of disjoint views whose bodies coincide in 3D are one person (two bodies cannot overlap).
2. ``track`` links the people of consecutive instants: Hungarian assignment on the median 3D distance of
   their joints, gated by how far a body can move in the time between them; a track survives a few
   instants without a match, unmatched people start tracks, and tracks shorter than a minimum are dropped.
3. ``identity_checks`` measures what would reveal a wrong identity: a tracked detection that is closer
   to another person's reprojection than to its own person's (triangulated without that view, so the
   detection cannot vouch for itself), and 3D tracks whose torso moves faster than a body can.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from assets.cameras import Camera, CameraRig
from assets.triangulation import DEFAULT_THRESHOLD_FRACTION, triangulate

# joints below this confidence do not vote on whether two detections are one person: an occluded
# joint's guess is often far off while the visible ones agree
DEFAULT_MIN_CONFIDENCE = 0.5
# fewer confident joints than this shared by two detections cannot show that they are one person
MIN_SHARED_JOINTS = 4
# torso joints and their speed limit: a sprinter's body moves at ~10 m/s, a person walking, dancing or
# on a treadmill well under 3 m/s; limbs are faster, so the checks use the torso (or all joints' median)
MAX_TORSO_SPEED_MM_S = 5000.0
# 3D noise of a triangulated joint median (mm) that every gate tolerates on top of the motion
POSITION_NOISE_MM = 100.0
# two bodies cannot be closer than this (median distance of corresponding joints, mm): people standing
# shoulder to shoulder are ~0.5 m apart, while one person's two inconsistent view sets land within
# centimetres to a few decimetres of each other
MERGE_DISTANCE_MM = 300.0


@dataclass
class Association:
    """People found at each instant (groups of detections, at most one per view)."""

    group_of_detection: np.ndarray  # [D] index into the groups, -1 = unassociated
    instant: np.ndarray  # [G] instant of each group
    detection: np.ndarray  # [G, C] detection row per view, -1 = the person is not detected in that view
    points3d: np.ndarray  # [G, J, 3] world mm from the group's views (a merged group: its best set's)
    view_error: np.ndarray  # [G, C] median reprojection error (px) of the confident joints, NaN: no view
    candidates: int  # sets of mutually compatible detections that were triangulated

    @property
    def num_views(self) -> np.ndarray:
        return (self.detection >= 0).sum(axis=1)


def pixel_thresholds(cameras: Sequence[Camera], image_sizes=None, threshold_px=None,
                     fraction: float = DEFAULT_THRESHOLD_FRACTION) -> np.ndarray:
    """Per-camera pixel threshold: ``threshold_px``, else ``fraction`` of each image's diagonal."""
    if threshold_px is not None:
        return np.broadcast_to(np.asarray(threshold_px, dtype=np.float64), (len(cameras),)).copy()
    sizes = np.asarray(image_sizes, dtype=np.float64) if image_sizes is not None else \
        np.stack([2 * c.K[:2, 2] for c in cameras])
    return fraction * np.linalg.norm(sizes, axis=-1)


def _essential_matrices(rig: CameraRig) -> np.ndarray:
    """[C, C, 3, 3] E[a, b] with x_b^T E[a, b] x_a = 0 for normalised homogeneous points of one 3D point."""
    num = len(rig)
    essential = np.zeros((num, num, 3, 3))
    for a in range(num):
        for b in range(num):
            if a == b:
                continue
            rotation = rig.R[b] @ rig.R[a].T
            translation = rig.t[b] - rotation @ rig.t[a]
            cross = np.array([[0, -translation[2], translation[1]], [translation[2], 0, -translation[0]],
                              [-translation[1], translation[0], 0]])
            essential[a, b] = cross @ rotation
    return essential


def epipolar_distances(xy_a: np.ndarray, xy_b: np.ndarray, essential_ab: np.ndarray, essential_ba: np.ndarray,
                       focal_a: np.ndarray, focal_b: np.ndarray) -> np.ndarray:
    """Symmetric epipolar distance (px) of matched normalised points [..., J, 2] in views a and b.

    Each point's distance to the other's epipolar line, scaled by its camera's focal length, averaged over
    the two directions. essential_*: [..., 3, 3]; focal_*: [...].
    """
    ha = np.concatenate([xy_a, np.ones(xy_a.shape[:-1] + (1,))], axis=-1)
    hb = np.concatenate([xy_b, np.ones(xy_b.shape[:-1] + (1,))], axis=-1)
    line_b = np.einsum("...ij,...kj->...ki", essential_ab, ha)  # lines in view b, [..., J, 3]
    line_a = np.einsum("...ij,...kj->...ki", essential_ba, hb)
    with np.errstate(invalid="ignore", divide="ignore"):
        in_b = np.abs((hb * line_b).sum(-1)) / np.linalg.norm(line_b[..., :2], axis=-1)
        in_a = np.abs((ha * line_a).sum(-1)) / np.linalg.norm(line_a[..., :2], axis=-1)
    return (in_b * focal_b[..., None] + in_a * focal_a[..., None]) / 2


def associate(
    instant,
    view,
    uv,
    confidence,
    cameras: Sequence[Camera],
    *,
    image_sizes=None,
    threshold_px=None,
    threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_views: int = 2,
    joints: Sequence[int] | None = None,
    merge_distance_mm: float | None = MERGE_DISTANCE_MM,
) -> Association:
    """Group the detections of each instant into people (see the module's docstring).

    joints: the joints that decide (default all); ``points3d`` of the result has these joints only. A
    dozen well-spread body joints tell people apart as well as all of them, at a fraction of the cost
    (every candidate set is triangulated).
    merge_distance_mm: two people of one instant seen by different views whose bodies nearly coincide
    (median joint distance below this) are one person whose views do not agree well enough to form one
    set (videos out of sync during a fast move, a poorly detected view): they are merged. None: never.

    threshold: the largest median reprojection error (px) of a view of one person, per camera; by default
    ``threshold_fraction`` of each image's diagonal (2%: ~44 px on 1088x1920 frames, a fraction of the
    distance between two people side by side, and above a body-keypoint detector's typical error).
    """
    instant = np.asarray(instant, dtype=np.int64)
    view = np.asarray(view, dtype=np.int64)
    uv = np.asarray(uv, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    if joints is not None:
        uv, confidence = uv[:, list(joints)], confidence[:, list(joints)]
    num_detections, num_joints = uv.shape[:2] if uv.ndim == 3 else (len(uv), 0)
    if uv.ndim != 3 or uv.shape[-1] != 2 or confidence.shape != uv.shape[:-1] or instant.shape != (num_detections,) \
            or view.shape != (num_detections,):
        raise ValueError(f"expected instant [D], view [D], uv [D, J, 2], confidence [D, J]; got {instant.shape}, "
                         f"{view.shape}, {uv.shape}, {confidence.shape}")
    rig = CameraRig(cameras)
    num_cameras = len(rig)
    if num_detections and (view.min() < 0 or view.max() >= num_cameras):
        raise ValueError(f"view: expected camera indices 0..{num_cameras - 1}, got {view.min()}..{view.max()}")
    if min_views < 2:
        raise ValueError(f"min_views: a person needs at least 2 views to be triangulated, got {min_views}")
    threshold = pixel_thresholds(cameras, image_sizes, threshold_px, threshold_fraction)
    observed = np.isfinite(uv).all(axis=-1) & (confidence > 0)
    confident = observed & (confidence >= min_confidence)
    weight = np.where(observed, confidence, 0.0)

    # normalised (undistorted) coordinates of every detection, for the epipolar geometry
    xy = np.full(uv.shape, np.nan)
    for c in range(num_cameras):
        rows = view == c
        xy[rows] = rig[c].image_to_normalized(np.where(observed[rows, :, None], uv[rows], 0.0))
    essential = _essential_matrices(rig)
    focal = rig.focal_lengths.mean(axis=-1)

    groups = _candidate_groups(instant, view, xy, confident, essential, focal, threshold, num_cameras, min_views)
    if not len(groups):
        return Association(np.full(num_detections, -1), np.zeros(0, dtype=np.int64), np.zeros((0, num_cameras), int),
                           np.zeros((0, num_joints, 3)), np.zeros((0, num_cameras)), 0)
    in_group = groups >= 0  # [K, C]
    rows = np.where(in_group, groups, 0)
    points2d = np.where(in_group[..., None, None], uv[rows], np.nan).transpose(1, 0, 2, 3)  # [C, K, J, 2]
    weights = np.where(in_group[..., None], weight[rows], 0.0).transpose(1, 0, 2)
    # the linear solution (its depth-weighted second pass) scores a set as well as a refined one
    result = triangulate(points2d, weights, cameras, robust=False, refine_iterations=0)
    error = np.linalg.norm(rig.world_to_image(result.points3d) - points2d, axis=-1)  # [C, K, J]
    voting = np.where(in_group[..., None], confident[rows], False).transpose(1, 0, 2) & np.isfinite(error)
    view_error = _masked_median(error, voting).T  # [K, C]
    consistent = (np.where(in_group, view_error < threshold, True).all(axis=1)
                  & (np.where(in_group, np.isfinite(view_error), True).all(axis=1)))

    num_views = in_group.sum(axis=1)
    score = np.nanmean(np.where(in_group, view_error / threshold, np.nan), axis=1)
    group_instant = instant[groups.max(axis=1)]
    order = np.lexsort((score, -num_views, group_instant))
    used = np.zeros(num_detections, dtype=bool)
    chosen = []  # per person: candidate sets (more than one when merged)
    now = []  # the people of the instant being taken (``order`` goes instant by instant)
    for k in order:
        if not consistent[k]:
            continue
        members = groups[k][in_group[k]]
        if used[members].any():
            continue
        used[members] = True
        if now and group_instant[now[0][0]] != group_instant[k]:
            now = []
        same = None
        if merge_distance_mm is not None:
            same = next((person for person in now if not (in_group[person].any(axis=0) & in_group[k]).any()
                         and pose_distance(result.points3d[person[0]], result.points3d[k]) < merge_distance_mm), None)
        if same is not None:
            same.append(k)
        else:
            chosen.append([k])
            now.append(chosen[-1])
    chosen.sort(key=lambda person: (group_instant[person[0]], groups[person].max()))
    group_of_detection = np.full(num_detections, -1)
    detection = np.full((len(chosen), num_cameras), -1)
    view_errors = np.full((len(chosen), num_cameras), np.nan)
    for g, person in enumerate(chosen):
        for k in person:
            group_of_detection[groups[k][in_group[k]]] = g
            detection[g][in_group[k]] = groups[k][in_group[k]]
            view_errors[g][in_group[k]] = view_error[k][in_group[k]]
    firsts = np.array([person[0] for person in chosen], dtype=np.int64)
    # a merged person keeps the 3D of its best set (the one with the most views, then the smallest error)
    return Association(group_of_detection=group_of_detection, instant=group_instant[firsts], detection=detection,
                       points3d=result.points3d[firsts].reshape(len(chosen), num_joints, 3), view_error=view_errors,
                       candidates=len(groups))


def _nanmedian(values: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice gives the NaN it should
        return np.nanmedian(values, axis=axis)


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median over the last axis of the entries where ``mask`` holds; NaN where none does."""
    return _nanmedian(np.where(mask, values, np.nan), axis=-1)


def _candidate_groups(instant, view, xy, confident, essential, focal, threshold, num_cameras, min_views):
    """[K, C] detection rows of every set of mutually epipolar-compatible detections of one instant."""
    found = []
    order = np.argsort(instant, kind="stable")
    bounds = np.flatnonzero(np.diff(instant[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows) < 2:
            continue
        compatible = _compatibility(rows, view, xy, confident, essential, focal, threshold)
        by_view = [[i for i in range(len(rows)) if view[rows[i]] == c] for c in range(num_cameras)]
        # depth-first over the views: each view adds one of its detections (compatible with every one
        # chosen so far) or none
        stack = [(0, [])]
        while stack:
            c, chosen = stack.pop()
            if c == num_cameras:
                if len(chosen) >= min_views:
                    group = np.full(num_cameras, -1)
                    group[view[rows[chosen]]] = rows[chosen]
                    found.append(group)
                continue
            if len(chosen) + (num_cameras - c) < min_views:
                continue  # too few views left to reach min_views
            stack.append((c + 1, chosen))
            for i in by_view[c]:
                if all(compatible[i, j] for j in chosen):
                    stack.append((c + 1, chosen + [i]))
    return np.array(found, dtype=np.int64).reshape(-1, num_cameras)


def _compatibility(rows, view, xy, confident, essential, focal, threshold) -> np.ndarray:
    """[n, n] bool: detections ``rows`` (one instant) whose confident joints lie near each other's epipolar
    lines (median over the joints both detections are confident about)."""
    n = len(rows)
    compatible = np.zeros((n, n), dtype=bool)
    first, second = (np.array(index) for index in zip(*combinations(range(n), 2)))
    va, vb = view[rows[first]], view[rows[second]]
    keep = va != vb
    first, second, va, vb = first[keep], second[keep], va[keep], vb[keep]
    if not len(first):
        return compatible
    distance = epipolar_distances(xy[rows[first]], xy[rows[second]], essential[va, vb], essential[vb, va],
                                  focal[va], focal[vb])
    shared = confident[rows[first]] & confident[rows[second]] & np.isfinite(distance)
    median = _masked_median(distance, shared)
    # the two views' reprojection errors of a triangulated pair add up to about its epipolar distance, so a
    # pair whose views are each within the threshold is within twice the threshold of the epipolar lines
    ok = (shared.sum(axis=1) >= MIN_SHARED_JOINTS) & (median < threshold[va] + threshold[vb])
    compatible[first, second] = ok
    compatible[second, first] = ok
    return compatible


# -- tracking over time ------------------------------------------------------------------------------------

def pose_distance(a: np.ndarray, b: np.ndarray, min_joints: int = 3) -> np.ndarray:
    """Median 3D distance (mm) over the joints triangulated in both of poses a [..., J, 3] and b [..., J, 3];
    inf where they share fewer than ``min_joints``."""
    distance = np.linalg.norm(a - b, axis=-1)
    finite = np.isfinite(distance)
    median = _masked_median(distance, finite)
    return np.where(finite.sum(axis=-1) >= min_joints, median, np.inf)


def track(
    instant,
    points3d,
    *,
    max_step_mm: float,
    noise_mm: float = POSITION_NOISE_MM,
    max_gap: int = 5,
    min_length: int = 1,
) -> np.ndarray:
    """Track id [G] of every person (group) found at instants ``instant`` [G] with poses ``points3d`` [G, J, 3].

    Instants are integers (consecutive ones one sampling interval apart). A track's last pose matches a
    person ``gap`` instants later only within ``noise_mm + max_step_mm * gap`` (median joint distance);
    the Hungarian assignment (``scipy.optimize.linear_sum_assignment``) minimises the summed distance of
    the matches. A track not matched for more than ``max_gap`` instants ends; a person no track takes
    starts one. Tracks seen at fewer than ``min_length`` instants are dropped (id -1): a detector's ghost
    or a bystander glimpsed in two views is no one to learn from. Ids are numbered by decreasing length
    (ties: first instant), so track 0 is the best-tracked person.
    """
    instant = np.asarray(instant, dtype=np.int64)
    points3d = np.asarray(points3d, dtype=np.float64)
    if points3d.ndim != 3 or points3d.shape[-1] != 3 or instant.shape != points3d.shape[:1]:
        raise ValueError(f"expected instant [G] and points3d [G, J, 3], got {instant.shape} and {points3d.shape}")
    raw_track = np.full(len(instant), -1)
    last_pose, last_instant = [], []  # per track
    order = np.argsort(instant, kind="stable")
    for people in np.split(order, np.flatnonzero(np.diff(instant[order])) + 1) if len(order) else []:
        now = instant[people[0]]
        alive = [k for k in range(len(last_pose)) if now - last_instant[k] <= max_gap + 1]
        matched = set()
        if alive:
            previous = np.stack([last_pose[k] for k in alive])
            cost = pose_distance(previous[:, None], points3d[people][None, :])  # [alive, people]
            gap = now - np.array([last_instant[k] for k in alive])
            gate = noise_mm + max_step_mm * gap
            allowed = cost <= gate[:, None]
            # disallowed pairs get a cost no set of allowed matches can reach, and are dropped afterwards
            big = (np.where(allowed, cost, 0).sum() + 1) * 2
            rows, cols = linear_sum_assignment(np.where(allowed, cost, big))
            for r, c in zip(rows, cols):
                if allowed[r, c]:
                    k = alive[r]
                    raw_track[people[c]] = k
                    last_pose[k] = _merged(last_pose[k], points3d[people[c]])
                    last_instant[k] = now
                    matched.add(c)
        for c in range(len(people)):
            if c not in matched:
                raw_track[people[c]] = len(last_pose)
                last_pose.append(points3d[people[c]].copy())
                last_instant.append(now)
    ids, lengths = np.unique(raw_track[raw_track >= 0], return_counts=True)
    firsts = np.array([instant[raw_track == k].min() for k in ids], dtype=np.int64)
    kept = [(k, n, f) for k, n, f in zip(ids, lengths, firsts) if n >= min_length]
    kept.sort(key=lambda entry: (-entry[1], entry[2]))
    renumber = {k: new for new, (k, _, _) in enumerate(kept)}
    return np.array([renumber.get(k, -1) for k in raw_track], dtype=np.int64)


def _merged(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The track's latest pose: the new one, with joints it lacks kept from before (so a momentarily
    untriangulated joint does not shrink the joints the next match can compare)."""
    return np.where(np.isfinite(current), current, previous)


# -- checks of the identities ------------------------------------------------------------------------------

def dense_tracks(track_of_detection, instant, view, uv, confidence, num_tracks: int, num_cameras: int,
                 instants: np.ndarray):
    """Tracked detections as arrays [C, P, I, J, 2] and [C, P, I, J] over ``instants`` [I] (NaN / 0 where a
    track has no detection)."""
    num_joints = uv.shape[1]
    points = np.full((num_cameras, num_tracks, len(instants), num_joints, 2), np.nan)
    weights = np.zeros(points.shape[:-1])
    rows = np.flatnonzero(track_of_detection >= 0)
    slot = np.searchsorted(instants, instant[rows])
    if np.any(instants[np.minimum(slot, len(instants) - 1)] != instant[rows]):
        raise ValueError("instant: a tracked detection's instant is not in 'instants'")
    points[view[rows], track_of_detection[rows], slot] = uv[rows]
    weights[view[rows], track_of_detection[rows], slot] = confidence[rows]
    return points, weights


def leave_one_view_out(points2d, confidence, cameras: Sequence[Camera]) -> np.ndarray:
    """[C, ...] pixels: each view's reprojection of the point triangulated from the *other* views (NaN where
    they are fewer than two). points2d: [C, ..., 2]; confidence: [C, ...]."""
    num_cameras = len(cameras)
    rig = CameraRig(cameras)
    out = np.full(np.shape(points2d), np.nan)
    for c in range(num_cameras):
        others = [o for o in range(num_cameras) if o != c]
        if len(others) < 2:
            continue
        result = triangulate(points2d[others], confidence[others], [cameras[o] for o in others], robust=False,
                             refine_iterations=1)
        out[c] = CameraRig([rig[c]]).world_to_image(result.points3d)[0]
    return out


def identity_checks(
    points2d,
    confidence,
    cameras: Sequence[Camera],
    points3d,
    *,
    interval_s: float,
    torso_joints: Sequence[int] | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    max_speed_mm_s: float = MAX_TORSO_SPEED_MM_S,
    noise_mm: float = POSITION_NOISE_MM,
) -> dict:
    """Counts of what a wrong identity would show, for tracks over consecutive instants.

    points2d [C, P, I, J, 2], confidence [C, P, I, J]: each track's detections (P tracks, I instants
    ``interval_s`` apart); points3d [P, I, J, 3]: their triangulation (world mm).

    - 2D: a tracked detection (view, track, instant) is checked where the track has at least two other
      views then; it is a *switch* when the median distance of its confident joints to another track's
      reprojection (that track triangulated from all its views) is smaller than to its own track's
      reprojection triangulated from the other views only.
    - 3D: a *jump* is a pair of consecutive instants where a track's torso (median of ``torso_joints``,
      default all joints) moves more than ``noise_mm + max_speed_mm_s * interval_s``.
    """
    points2d = np.asarray(points2d, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    num_cameras, num_tracks, num_instants = points2d.shape[:3]
    rig = CameraRig(cameras)
    detected = np.isfinite(points2d).all(axis=-1).any(axis=-1) & (confidence > 0).any(axis=-1)  # [C, P, I]
    confident = np.isfinite(points2d).all(axis=-1) & (confidence >= min_confidence)
    own = leave_one_view_out(points2d, confidence, cameras)  # [C, P, I, J, 2]
    own_distance = _masked_median(np.linalg.norm(own - points2d, axis=-1), confident)  # [C, P, I]
    others_seen = detected.sum(axis=0)[None] - detected  # views of the track besides this one
    checked = detected & (others_seen >= 2) & np.isfinite(own_distance)
    switched = np.zeros_like(checked)
    if num_tracks > 1:
        projected = rig.world_to_image(points3d)  # [C, P, I, J, 2]
        for other in range(num_tracks):
            distance = _masked_median(np.linalg.norm(projected[:, other:other + 1] - points2d, axis=-1), confident)
            closer = np.isfinite(distance) & (distance < own_distance)
            closer[:, other] = False
            switched |= closer & checked

    torso = list(torso_joints) if torso_joints is not None else list(range(points3d.shape[2]))
    centre = _nanmedian(points3d[:, :, torso], axis=2)  # [P, I, 3]
    step = np.linalg.norm(np.diff(centre, axis=1), axis=-1)  # [P, I-1]
    measured = np.isfinite(step)
    limit = noise_mm + max_speed_mm_s * interval_s
    jumps = measured & (step > limit)
    names = [camera.name or f"#{c}" for c, camera in enumerate(cameras)]
    return {
        "switches_2d": int(switched.sum()),
        "checked_2d": int(checked.sum()),
        "switches_2d_per_view": {names[c]: int(switched[c].sum()) for c in range(num_cameras)},
        "checked_2d_per_view": {names[c]: int(checked[c].sum()) for c in range(num_cameras)},
        "jumps_3d": int(jumps.sum()),
        "checked_3d": int(measured.sum()),
        "jump_limit_mm": float(limit),
        "max_torso_step_mm": float(step[measured].max()) if measured.any() else None,
        "switch_detections": [[names[c], int(p), int(i)] for c, p, i in np.argwhere(switched)],
        "jump_instants": [[int(p), int(i)] for p, i in np.argwhere(jumps)],
    }
