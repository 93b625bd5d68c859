"""Scoring a trained estimator on a test split, and the append-only history of benchmark results."""

import uuid
from datetime import datetime, timezone

import numpy as np
import polars as pl

from assets.atomic_files import write_atomically
from assets.locations import Location, location, open_binary
from assets.joint_names import skeleton_joint_indices
from assets.store import open_store
from evaluation.metrics import (absolute_mpjpe, auc, consistency_error, cps, mpjpe, pa_mpjpe, pck, pck_curve,
                                per_joint_mean_errors, root_positions)

PCK_THRESHOLDS_MM = np.arange(0, 151, 5)
FLOOR_FRAMES = ("auto", "world", "canonical")
_ROWS_PER_READ = 65536  # training poses are averaged in blocks of this many examples
HISTORY_SCHEMA = {"model": pl.Utf8, "model_fingerprint": pl.Utf8, "dataset": pl.Utf8, "skeleton": pl.Utf8,
                  "metric": pl.Utf8, "value": pl.Float64, "examples": pl.Int64, "time": pl.Utf8}


def predict_split(estimator, store, split: str = "test", batch_size: int = 64, flip_test: bool = True):
    """Predictions of every joint the estimator has ([N, J_union, 3]) and the store indices used."""
    indices = store.split_indices(split)
    if len(indices) == 0:
        raise ValueError(f"store {store.path}: no {split!r} examples to score")
    outputs = []
    for start in range(0, len(indices), batch_size):
        rows = indices[start:start + batch_size]
        images = store["image"].read_rows(rows)
        intrinsics = store["intrinsics"].get_orthogonal_selection((rows,))
        outputs.append(estimator.predict(images, intrinsics, None, flip_test=flip_test))
    return np.concatenate(outputs), indices


def score(estimator, store_path, *, split: str = "test", acae=None, predictions=None) -> dict:
    """Metrics of ``estimator`` on a store's split, in the store's own skeleton.

    Root-relative metrics (MPJPE, PCK, AUC, the PCK curve, per-joint errors) use ``skeleton.root_joints``:
    the pelvis, or the hip midpoint in a format without one; ``result["root"]`` names it.
    ``predictions``: ``predict_split``'s result for this estimator and split, when the caller has it already.
    """
    store = open_store(store_path)
    skeleton = store.skeleton
    all_joints, indices = predictions if predictions is not None else predict_split(estimator, store, split)
    pred = all_joints[:, skeleton_joint_indices(estimator.joint_names, skeleton.name)]
    gt = store["pose3d"].get_orthogonal_selection((indices,)).astype(np.float64)
    labelled = np.isfinite(gt).all(axis=-1).any(axis=-1)
    if not labelled.any():
        raise ValueError(f"store {store.path}: the {split!r} split has no 3D labels to score against")
    pred, gt, all_joints = pred[labelled], gt[labelled], all_joints[labelled]
    root = skeleton.root_joints
    metrics = {
        "mpjpe_mm": np.nanmean(mpjpe(pred, gt, root_index=root)),
        "pa_mpjpe_mm": np.nanmean(pa_mpjpe(pred, gt)),
        "absolute_mpjpe_mm": np.nanmean(absolute_mpjpe(pred, gt)),
        "pck50": np.nanmean(pck(pred, gt, threshold=50, root_index=root)),
        "pck100": np.nanmean(pck(pred, gt, threshold=100, root_index=root)),
        "pck150": np.nanmean(pck(pred, gt, threshold=150, root_index=root)),
        "auc": np.nanmean(auc(pred, gt, root_index=root)),
        "cps100": np.nanmean(cps(pred, gt, threshold=100)),
        "cps200": np.nanmean(cps(pred, gt, threshold=200)),
    }
    if acae is not None:
        metrics["consistency_mm"] = np.nanmean(consistency_error(all_joints, acae.reconstruct))
    return {
        "dataset": store.attrs["dataset"], "skeleton": skeleton.name, "examples": int(len(gt)),
        "root": skeleton.root_description,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "pck_curve": (PCK_THRESHOLDS_MM, pck_curve(pred, gt, PCK_THRESHOLDS_MM, root_index=root)),
        "per_joint_mm": dict(zip(skeleton.joint_names, per_joint_mean_errors(pred, gt, root_index=root).tolist())),
    }


class NoTrainingPosesError(ValueError):
    """A store has no training pose the mean-pose floor could use."""


def canonical_orientations(poses, skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Each pose's body orientation: rotations [N,3,3] taking the canonical body frame into the poses' frame,
    and whether it is defined [N] (identity where it is not).

    The canonical frame is how a camera (x right, y down, z forward) sees an upright person facing it:
    x runs from the right hip to the left hip, y points down (from the top of the torso, the shoulders or a
    neck-like joint, towards the hips, made orthogonal to x) and z = x × y points from the body's front to its
    back. Undefined where one of those joints is unlabelled or hips and torso are degenerate.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if skeleton.hip_joints is None or skeleton.torso_top_joints is None:
        raise ValueError(f"skeleton {skeleton.name!r}: a body orientation needs a left/right hip pair and shoulders "
                         f"or a neck-like joint; its joints are {list(skeleton.joint_names)}")
    left, right = skeleton.hip_joints
    across = poses[:, left] - poses[:, right]
    up = poses[:, list(skeleton.torso_top_joints)].mean(axis=1) - (poses[:, left] + poses[:, right]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        x = across / np.linalg.norm(across, axis=-1, keepdims=True)
        down = (x * up).sum(axis=-1, keepdims=True) * x - up
        down_length = np.linalg.norm(down, axis=-1)
        y = down / down_length[:, None]
    defined = (np.linalg.norm(across, axis=-1) > 1e-6) & (down_length > 1e-6)
    defined &= np.isfinite(x).all(-1) & np.isfinite(y).all(-1)
    rotations = np.stack([x, y, np.cross(x, y)], axis=-1)  # columns: the canonical axes in the poses' frame
    rotations[~defined] = np.eye(3)
    return rotations, defined


def _common_frame_rotations(poses, extrinsics, skeleton, frame: str) -> tuple[np.ndarray, np.ndarray]:
    """Rotations [N,3,3] from the common frame into each example's camera, and where they are known [N]."""
    if frame == "world":
        rotations = np.asarray(extrinsics, dtype=np.float64)[:, :3, :3]
        known = np.isfinite(rotations).all(axis=(1, 2))
        return np.where(known[:, None, None], rotations, np.eye(3)), known
    return canonical_orientations(poses, skeleton)


def _all_extrinsics_known(store, indices) -> bool:
    for start in range(0, len(indices), _ROWS_PER_READ):
        block = store["extrinsics"].get_orthogonal_selection((indices[start:start + _ROWS_PER_READ],))
        if not np.isfinite(block).all():
            return False
    return True


def _mean_training_pose(train, skeleton, frame: str) -> tuple[np.ndarray, int]:
    """The NaN-aware mean root-relative training pose [J,3] in the common frame, and the poses averaged.

    A joint no training pose labels stays at the root (0)."""
    indices = train.split_indices("train")
    total = np.zeros((skeleton.num_joints, 3))
    counts = np.zeros(skeleton.num_joints)
    used = 0
    for start in range(0, len(indices), _ROWS_PER_READ):
        rows = indices[start:start + _ROWS_PER_READ]
        poses = train["pose3d"].get_orthogonal_selection((rows,)).astype(np.float64)
        extrinsics = train["extrinsics"].get_orthogonal_selection((rows,)) if frame == "world" else None
        rotations, known = _common_frame_rotations(poses, extrinsics, skeleton, frame)
        relative = poses - root_positions(poses, skeleton.root_joints)[:, None]
        usable = known & np.isfinite(relative).all(-1).any(-1)  # the root and at least one joint labelled
        common = np.einsum("nji,nkj->nki", rotations[usable], relative[usable])  # R^T (pose - root)
        labelled = np.isfinite(common).all(-1)
        total += np.where(labelled[..., None], common, 0.0).sum(axis=0)
        counts += labelled.sum(axis=0)
        used += int(usable.sum())
    if used == 0:
        raise NoTrainingPosesError(
            f"store {train.path}: no training pose with a labelled root ({skeleton.root_description})"
            + (" and a known body orientation" if frame == "canonical" else "")
            + " to average for the mean-pose floor")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, total / np.maximum(counts, 1)[:, None], 0.0), used


def mean_pose_baseline(store_path, train_store_path=None, *, split: str = "test", frame: str = "auto") -> dict:
    """The mean-pose floor any model must beat: the mean training pose, turned as each test example's body is seen.

    Root-relative training poses are taken into a common frame and averaged (NaN-aware); the mean is rotated
    into each test example's camera and placed at its ground-truth root. The common frame is
    - ``"world"``: the dataset's world, through the stored world-to-camera extrinsics (R^T into the world,
      the test example's R out of it): the floor knows each test camera's orientation, as a model that has
      seen the dataset's cameras does;
    - ``"canonical"``: each training pose rotated about its root to the canonical body orientation
      (``canonical_orientations``), the mean rotated into the test ground truth's orientation: this floor
      knows the test body's orientation (and, where the ground truth gives none, assumes it faces the
      camera upright), which only helps it.
    ``"auto"`` takes the world where the training and test examples share one (same dataset, every
    extrinsic known), else the canonical orientation.

    Returns the metrics (mpjpe_mm, pa_mpjpe_mm, pck50/100/150, auc, cps100/200) and ``frame``, ``root``
    (the root of the root-relative metrics, as ``score`` names it), ``examples``, ``train_examples``,
    ``unoriented_examples`` (test examples without a body orientation) and ``train_store``.
    """
    if frame not in FLOOR_FRAMES:
        raise ValueError(f"frame must be one of {FLOOR_FRAMES}, got {frame!r}")
    store = open_store(store_path)
    train = open_store(train_store_path or store_path)
    skeleton = store.skeleton
    if train.skeleton.name != skeleton.name:
        raise ValueError(f"the training store {train.path} is in skeleton {train.skeleton.name!r}, the test store "
                         f"{store.path} in {skeleton.name!r}: the mean-pose floor needs training poses of the "
                         f"test set's format")
    indices = store.split_indices(split)
    gt = store["pose3d"].get_orthogonal_selection((indices,)).astype(np.float64)
    labelled = np.isfinite(gt).all(-1).any(-1)
    if not labelled.any():
        raise ValueError(f"store {store.path}: the {split!r} split has no 3D labels to score against")
    gt, indices = gt[labelled], indices[labelled]
    if frame != "canonical":
        world = (train.attrs["dataset"] == store.attrs["dataset"]
                 and _all_extrinsics_known(train, train.split_indices("train"))
                 and _all_extrinsics_known(store, indices))
        if frame == "world" and not world:
            raise ValueError(f"no common world frame: the training store {train.path} and the test store "
                             f"{store.path} must be one dataset with every extrinsic known (finite)")
        frame = "world" if world else "canonical"
    mean_pose, train_examples = _mean_training_pose(train, skeleton, frame)
    extrinsics = store["extrinsics"].get_orthogonal_selection((indices,)) if frame == "world" else None
    rotations, oriented = _common_frame_rotations(gt, extrinsics, skeleton, frame)
    # translation does not change root-relative or Procrustes errors: an unlabelled root leaves the pose at 0
    root = np.nan_to_num(root_positions(gt, skeleton.root_joints))
    pred = np.einsum("nij,kj->nki", rotations, mean_pose) + root[:, None]
    root_joints = skeleton.root_joints
    metrics = {
        "mpjpe_mm": mpjpe(pred, gt, root_index=root_joints),
        "pa_mpjpe_mm": pa_mpjpe(pred, gt),
        "pck50": pck(pred, gt, threshold=50, root_index=root_joints),
        "pck100": pck(pred, gt, threshold=100, root_index=root_joints),
        "pck150": pck(pred, gt, threshold=150, root_index=root_joints),
        "auc": auc(pred, gt, root_index=root_joints),
        "cps100": cps(pred, gt, threshold=100),
        "cps200": cps(pred, gt, threshold=200),
    }
    return {**{name: float(np.nanmean(values)) for name, values in metrics.items()},
            "frame": frame, "root": skeleton.root_description, "examples": int(len(gt)),
            "train_examples": train_examples, "unoriented_examples": int((~oriented).sum()),
            "train_store": str(train.location)}


def benchmark_floor(store_path, other_train_stores=(), *, split: str = "test") -> dict:
    """The mean-pose floor of a test set: from its own store's training split, else from the first of
    ``other_train_stores`` in the test set's skeleton format that has training poses (a test-only set).

    Where none has, a dict without metrics whose ``unavailable`` says why (a table still shows the row).
    """
    skeleton = open_store(store_path).skeleton
    for position, candidate in enumerate((store_path, *other_train_stores)):
        if position and open_store(candidate).skeleton.name != skeleton.name:
            continue
        try:
            return mean_pose_baseline(store_path, candidate, split=split)
        except NoTrainingPosesError:
            continue
    return {"frame": None, "root": skeleton.root_description,
            "unavailable": f"no training poses in {skeleton.name} (the test store and "
                           f"{len(other_train_stores)} other training store(s) tried)"}


def history_rows(result: dict, model: str, model_fingerprint: str, when: datetime | None = None) -> pl.DataFrame:
    stamp = (when or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return pl.DataFrame([{"model": model, "model_fingerprint": model_fingerprint, "dataset": result["dataset"],
                          "skeleton": result["skeleton"], "metric": name, "value": value,
                          "examples": result["examples"], "time": stamp}
                         for name, value in result["metrics"].items()], schema=HISTORY_SCHEMA)


def append_history(folder, rows: pl.DataFrame) -> Location:
    """Add ``rows`` to the history in ``folder`` as a new Parquet file; nothing written before is touched.

    One file per append (never a read-modify-write of one file), so concurrent benchmark runs cannot lose
    each other's rows; each file is written aside and renamed into place, so a reader never sees half of one.
    """
    folder = location(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows.select(list(HISTORY_SCHEMA)).cast(HISTORY_SCHEMA)
    name = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    return write_atomically(folder / name, rows.write_parquet)


def read_history(folder) -> pl.DataFrame:
    """Every row of the history in ``folder``, oldest first (empty, with the schema, when there is none)."""
    folder = location(folder)
    files = sorted(folder.glob("*.parquet"), key=lambda f: f.name) if folder.is_dir() else []
    if not files:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    return pl.concat([pl.read_parquet(open_binary(f)) for f in files])


FLOOR_LABELS = {"world": "mean pose floor (world frame)", "canonical": "mean pose floor (canonical orientation)"}


def results_markdown(results: dict[str, dict], floor: dict | None) -> str:
    """One row per model with the headline metrics of one test set, always followed by the mean-pose floor
    row (``mean_pose_baseline``; "–" where it could not be computed), and a line naming the root of the
    root-relative metrics."""
    names = ["mpjpe_mm", "pa_mpjpe_mm", "absolute_mpjpe_mm", "pck100", "pck150", "auc", "cps200", "consistency_mm"]
    header = "| model | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    lines = [f"| {model} | " + " | ".join(f"{r['metrics'][n]:.1f}" if n in r["metrics"] else "–" for n in names) + " |"
             for model, r in results.items()]
    floor = floor or {}
    computed = any(isinstance(floor.get(n), (int, float)) for n in names)
    label = FLOOR_LABELS.get(floor.get("frame"), "mean pose floor" if computed else "mean pose floor (not computed)")
    lines.append(f"| {label} | " + " | ".join(
        f"{floor[n]:.1f}" if isinstance(floor.get(n), (int, float)) else "–" for n in names) + " |")
    roots = list(dict.fromkeys(r["root"] for r in [*results.values(), floor] if r.get("root")))
    notes = [f"Root-relative metrics (MPJPE, PCK, AUC) use the root: {' / '.join(roots) or 'not recorded'}."]
    if floor.get("unavailable"):
        notes.append(f"Mean pose floor: {floor['unavailable']}.")
    return header + "\n".join(lines) + "\n\n" + " ".join(notes)
