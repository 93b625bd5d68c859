"""Pseudo ground truth for multi-view datasets that have 2D detections but no 3D labels.

A detections store (one example per camera view and frame) is regrouped into synchronised views,
triangulated robustly (``assets.triangulation``), and the 3D result is written back per example, in
the camera frame of each stored crop, into a new canonical store.

Every crop has its own virtual camera, but all crops of one physical camera share its optical centre,
so each view's 2D points are re-expressed in one reference pinhole camera per physical camera (the
first crop's) before triangulation: a rotation and a change of intrinsics, exact for rays.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.store import StoreWriter, open_store
from assets.triangulation import DEFAULT_THRESHOLD_FRACTION, triangulate

PSEUDO_GT_VERSION = "1"
_CENTRE_TOLERANCE_MM = 1.0
_COPY_BATCH = 256
_FAR_OFF_RATIO = 1.5


class PseudoGTError(ValueError):
    pass


@dataclass
class PseudoGT:
    """Triangulated poses of one detections store, per example and per synchronised instant."""

    pose3d: np.ndarray  # [N examples, J, 3] camera frame of each example's crop, mm; NaN = not triangulated
    world: np.ndarray  # [I instants, J, 3] world mm
    instant_of_example: np.ndarray  # [N] index into ``world``
    reprojection_error: np.ndarray  # [I, J] px of the reference crops, NaN where not triangulated
    inlier_views: np.ndarray  # [V, I, J] bool, V = (sequence, camera) pairs
    detected_views: np.ndarray  # [V, I, J] bool: the view had a detection
    camera_names: list[str]  # "<sequence>/<camera>" for each row of the view axes
    stats: dict = field(default_factory=dict)


def _example_cameras(store) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    K = store.load("intrinsics").astype(np.float64)
    dist = store.load("distortion").astype(np.float64)
    extrinsics = store.load("extrinsics").astype(np.float64)
    if not np.isfinite(extrinsics).all():
        bad = np.flatnonzero(~np.isfinite(extrinsics).all(axis=(1, 2)))
        raise PseudoGTError(f"store {store.path}: array 'extrinsics' must be known for triangulation, "
                            f"but is NaN at examples {bad[:10].tolist()}")
    return K, dist, extrinsics[:, :3, :3], extrinsics[:, :3, 3]


def triangulate_store(store, *, threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION, min_views: int = 2,
                      refine_iterations: int = 2, progress=None) -> PseudoGT:
    """Triangulate the detections of a multi-view store (pose2d + confidence2d + extrinsics).

    Each sequence is triangulated on its own: a calibration (and a camera's name) belongs to a sequence.
    """
    K, dist, R, t = _example_cameras(store)
    uv = store.load("pose2d").astype(np.float64)
    valid = store.load("joint_valid")
    confidence = store.load("confidence2d").astype(np.float64) if "confidence2d" in store else valid.astype(float)
    confidence = np.where(valid & np.isfinite(uv).all(-1), confidence, 0.0)
    normalised = np.stack([Camera(K=K[i], dist=dist[i]).image_to_normalized(uv[i]) for i in range(len(uv))]) \
        if np.any(dist) else _pinhole_normalised(uv, K)
    rays = np.concatenate([normalised, np.ones(normalised.shape[:-1] + (1,))], axis=-1)
    world_dirs = np.einsum("nkj,nlk->nlj", R, rays)  # R^T @ ray: viewing directions in the world frame

    sequences, frames, camera_codes = store.load("sequence"), store.load("frame"), store.load("camera")
    camera_table, sequence_table = store.attrs["codes"]["camera"], store.attrs["codes"]["sequence"]
    size = int(store.attrs["image_size"])
    num_joints = uv.shape[1]
    instant_keys = np.stack([sequences, frames], axis=1)
    instants, instant_of_example = np.unique(instant_keys, axis=0, return_inverse=True)
    instant_of_example = instant_of_example.reshape(-1)
    world = np.full((len(instants), num_joints, 3), np.nan)
    reprojection_error = np.full((len(instants), num_joints), np.nan)
    view_names = sorted({f"{sequence_table[s]}/{camera_table[c]}" for s, c in zip(sequences, camera_codes)})
    inlier_views = np.zeros((len(view_names), len(instants), num_joints), dtype=bool)
    detected_views = np.zeros_like(inlier_views)

    for sequence in np.unique(sequences):
        members = np.flatnonzero(sequences == sequence)
        used_cameras = np.unique(camera_codes[members])
        where = f"store {store.path}, sequence {sequence_table[sequence]!r}"
        if len(used_cameras) < 2:
            raise PseudoGTError(f"{where}: triangulation needs at least 2 cameras, found {len(used_cameras)}")
        view_of_member = np.searchsorted(used_cameras, camera_codes[members])
        references = [_reference_camera(R, t, K, members[view_of_member == v], f"{where}, camera "
                                        f"{camera_table[c]!r}", camera_table[c])
                      for v, c in enumerate(used_cameras)]
        # one reference pinhole per physical camera: rotate each crop's rays into it and project
        ref_R = np.stack([c.R for c in references])[view_of_member]
        ref_K = np.stack([c.K for c in references])[view_of_member]
        ref_rays = np.einsum("njk,nlk->nlj", ref_R, world_dirs[members])
        with np.errstate(invalid="ignore", divide="ignore"):
            ref_xy = ref_rays[..., :2] / ref_rays[..., 2:3]
        ref_uv = np.einsum("njk,nlk->nlj", ref_K[:, :2, :2], ref_xy) + ref_K[:, None, :2, 2]
        weight = np.where(ref_rays[..., 2] > 0, confidence[members], 0.0)

        local_instants, instant_of_member = np.unique(instant_of_example[members], return_inverse=True)
        instant_of_member = instant_of_member.reshape(-1)
        counts = np.zeros((len(references), len(local_instants)), dtype=int)
        np.add.at(counts, (view_of_member, instant_of_member), 1)
        if counts.max() > 1:
            v, i = np.argwhere(counts > 1)[0]
            raise PseudoGTError(f"{where}: camera {references[v].name!r} has {counts[v, i]} examples of frame "
                                f"{instants[local_instants[i], 1]}; expected one person per view and frame")
        points2d = np.full((len(references), len(local_instants), num_joints, 2), np.nan)
        weights = np.zeros(points2d.shape[:-1])
        points2d[view_of_member, instant_of_member] = np.where(weight[..., None] > 0, ref_uv, np.nan)
        weights[view_of_member, instant_of_member] = weight
        result = triangulate(points2d, weights, references, image_sizes=[[size, size]] * len(references),
                             threshold_fraction=threshold_fraction, min_views=min_views,
                             refine_iterations=refine_iterations)
        world[local_instants] = result.points3d
        reprojection_error[local_instants] = result.reprojection_error
        rows = [view_names.index(f"{sequence_table[sequence]}/{c.name}") for c in references]
        inlier_views[np.ix_(rows, local_instants)] = result.inlier_views
        detected_views[np.ix_(rows, local_instants)] = weights > 0
        if progress:
            progress(f"triangulated sequence {sequence_table[sequence]!r}: {len(local_instants)} frames x "
                     f"{len(references)} cameras")

    pose3d = np.einsum("njk,nlk->nlj", R, world[instant_of_example]) + t[:, None, :]
    pseudo = PseudoGT(pose3d=pose3d, world=world, instant_of_example=instant_of_example,
                      reprojection_error=reprojection_error, inlier_views=inlier_views,
                      detected_views=detected_views, camera_names=view_names)
    pseudo.stats = pseudo_gt_stats(pseudo, store.skeleton, instants)
    return pseudo


def _reference_camera(R, t, K, members: np.ndarray, where: str, name: str) -> Camera:
    """The first crop's pinhole; all crops of one physical camera must share its optical centre."""
    centres = -np.einsum("nji,nj->ni", R[members], t[members])
    spread = np.linalg.norm(centres - centres[0], axis=-1).max()
    if spread > _CENTRE_TOLERANCE_MM:
        raise PseudoGTError(f"{where}: the camera moves ({spread:.0f} mm between crops); "
                            "multi-view triangulation needs static cameras")
    first = members[0]
    return Camera(K=K[first], R=R[first], t=t[first], name=name)


def _pinhole_normalised(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    y = (uv[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
    x = (uv[..., 0] - K[:, None, 0, 2] - K[:, None, 0, 1] * y) / K[:, None, 0, 0]
    return np.stack([x, y], axis=-1)


def pseudo_gt_stats(pseudo: PseudoGT, skeleton, instants: np.ndarray) -> dict:
    """Numbers for judging a pseudo-GT: errors, coverage, view support, bone-length stability."""
    triangulated = np.isfinite(pseudo.world).all(axis=-1)
    detectable = pseudo.detected_views.sum(axis=0) >= 2
    errors = pseudo.reprojection_error[triangulated]
    inlier_counts = pseudo.inlier_views.sum(axis=0)[triangulated]
    histogram = {int(k): int(v) for k, v in zip(*np.unique(inlier_counts, return_counts=True))}
    # bone lengths are constant within a sequence (one person); a robust spread (MAD) measures the jitter
    # of the pseudo-GT, and the share of far-off lengths counts gross errors separately
    bones, far_off, checked = {}, 0, 0
    sequences = instants[:, 0]
    for a, b in skeleton.edges:
        lengths = np.linalg.norm(pseudo.world[:, a] - pseudo.world[:, b], axis=-1)
        spreads = []
        for s in np.unique(sequences):
            seq = lengths[(sequences == s) & np.isfinite(lengths)]
            if len(seq) < 3:
                continue
            median = np.median(seq)
            spreads.append(1.4826 * np.median(np.abs(seq - median)) / median)
            far_off += int(np.sum((seq > _FAR_OFF_RATIO * median) | (seq < median / _FAR_OFF_RATIO)))
            checked += len(seq)
        if spreads:
            bones[f"{skeleton.joint_names[a]}-{skeleton.joint_names[b]}"] = float(np.mean(spreads))
    percentiles = {f"p{q}": float(np.percentile(errors, q)) for q in (50, 90, 95, 99)} if errors.size else {}
    return {
        "instants": int(len(pseudo.world)),
        "joints_triangulated_fraction": float(triangulated.mean()),
        "joints_triangulated_of_detectable": float(triangulated[detectable].mean()) if detectable.any() else 0.0,
        "reprojection_error_px": percentiles,
        "inlier_view_histogram": histogram,
        "bone_length_robust_cv": bones,
        "bone_length_robust_cv_median": float(np.median(list(bones.values()))) if bones else float("nan"),
        "bone_length_far_off_fraction": far_off / checked if checked else 0.0,
    }


def write_pseudo_gt_store(source, pseudo: PseudoGT, out_path, *, progress=None, data_version: str | None = None,
                          gate=None) -> Path:
    """A copy of the detections store with ``pose3d`` filled in, published like every store version
    (``gate``: see ``StoreWriter.commit``).

    Where a joint was triangulated, ``pose2d`` becomes the projection of its pseudo-GT (the label
    training sees); elsewhere the detection stays, with ``confidence2d`` keeping the detector's score.
    """
    source = open_store(source) if not hasattr(source, "attrs") else source
    started = time.perf_counter()
    attrs = {k: v for k, v in source.attrs.items() if k not in ("counts", "num_examples", "created",
                                                                "schema_version")}
    attrs.update(has_pose3d=True, pseudo_gt={"version": PSEUDO_GT_VERSION, "source_store": str(source.path),
                                             "source_fingerprint": source.attrs["raw_fingerprint"],
                                             **pseudo.stats})
    optional = [name for name in ("confidence2d",) if name in source]
    n = len(source)
    with StoreWriter(out_path, n, attrs, optional_arrays=optional, data_version=data_version) as writer:
        for start in range(0, n, _COPY_BATCH):
            stop = min(start + _COPY_BATCH, n)
            rows = {name: source[name][start:stop] for name in writer.names if name != "pose3d"}
            pose3d = pseudo.pose3d[start:stop]
            labelled = np.isfinite(pose3d).all(axis=-1) & (pose3d[..., 2] > 0)
            K = rows["intrinsics"].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                xy = pose3d[..., :2] / pose3d[..., 2:3]
            projected = np.einsum("njk,nlk->nlj", K[:, :2, :2], xy) + K[:, None, :2, 2]
            if np.any(rows["distortion"]):
                projected = np.stack([Camera(K=K[i], dist=rows["distortion"][i]).camera_to_image(pose3d[i])
                                      for i in range(len(pose3d))])
            rows["pose2d"] = np.where(labelled[..., None], projected, rows["pose2d"])
            rows["joint_valid"] = rows["joint_valid"] | labelled
            writer.write(start, pose3d=np.where(labelled[..., None], pose3d, np.nan), **rows)
            if progress:
                progress(f"{attrs['dataset']}: pseudo-GT copied {stop}/{n} examples "
                         f"({time.perf_counter() - started:.1f} s)")
        return writer.commit(gate)
