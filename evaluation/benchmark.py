"""Scoring a trained estimator on a test split, and the append-only history of benchmark results."""

import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from assets.atomic_files import write_atomically
from assets.joint_names import skeleton_joint_indices
from assets.store import open_store
from evaluation.metrics import (absolute_mpjpe, auc, consistency_error, cps, mpjpe, pa_mpjpe, pck, pck_curve,
                                per_joint_mean_errors)

PCK_THRESHOLDS_MM = np.arange(0, 151, 5)
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
        images = store["image"].get_orthogonal_selection((rows,))
        intrinsics = store["intrinsics"].get_orthogonal_selection((rows,))
        outputs.append(estimator.predict(images, intrinsics, None, flip_test=flip_test))
    return np.concatenate(outputs), indices


def score(estimator, store_path, *, split: str = "test", acae=None) -> dict:
    """Metrics of ``estimator`` on a store's split, in the store's own skeleton (root = its pelvis joint)."""
    store = open_store(store_path)
    skeleton = store.skeleton
    all_joints, indices = predict_split(estimator, store, split)
    pred = all_joints[:, skeleton_joint_indices(estimator.joint_names, skeleton.name)]
    gt = store["pose3d"].get_orthogonal_selection((indices,)).astype(np.float64)
    labelled = np.isfinite(gt).all(axis=-1).any(axis=-1)
    if not labelled.any():
        raise ValueError(f"store {store.path}: the {split!r} split has no 3D labels to score against")
    pred, gt, all_joints = pred[labelled], gt[labelled], all_joints[labelled]
    root = skeleton.root_index if skeleton.root_index is not None else 0
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
        "metrics": {k: float(v) for k, v in metrics.items()},
        "pck_curve": (PCK_THRESHOLDS_MM, pck_curve(pred, gt, PCK_THRESHOLDS_MM, root_index=root)),
        "per_joint_mm": dict(zip(skeleton.joint_names, per_joint_mean_errors(pred, gt, root_index=root).tolist())),
    }


def mean_pose_baseline(store_path, train_store_path=None, *, split: str = "test") -> dict:
    """MPJPE/PA-MPJPE of always predicting the mean root-relative training pose (a floor any model must beat)."""
    store = open_store(store_path)
    train = open_store(train_store_path or store_path)
    root = store.skeleton.root_index if store.skeleton.root_index is not None else 0
    train_poses = train["pose3d"].get_orthogonal_selection((train.split_indices("train"),)).astype(np.float64)
    mean_pose = np.nanmean(train_poses - train_poses[:, root:root + 1], axis=0)
    gt = store["pose3d"].get_orthogonal_selection((store.split_indices(split),)).astype(np.float64)
    gt = gt[np.isfinite(gt).all(-1).any(-1)]
    pred = np.nan_to_num(np.broadcast_to(mean_pose, gt.shape) + gt[:, root:root + 1])
    return {"mpjpe_mm": float(np.nanmean(mpjpe(pred, gt, root_index=root))),
            "pa_mpjpe_mm": float(np.nanmean(pa_mpjpe(pred, gt)))}


def history_rows(result: dict, model: str, model_fingerprint: str, when: datetime | None = None) -> pl.DataFrame:
    stamp = (when or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return pl.DataFrame([{"model": model, "model_fingerprint": model_fingerprint, "dataset": result["dataset"],
                          "skeleton": result["skeleton"], "metric": name, "value": value,
                          "examples": result["examples"], "time": stamp}
                         for name, value in result["metrics"].items()], schema=HISTORY_SCHEMA)


def append_history(folder, rows: pl.DataFrame) -> Path:
    """Add ``rows`` to the history in ``folder`` as a new Parquet file; nothing written before is touched.

    One file per append (never a read-modify-write of one file), so concurrent benchmark runs cannot lose
    each other's rows; each file is written aside and renamed into place, so a reader never sees half of one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows.select(list(HISTORY_SCHEMA)).cast(HISTORY_SCHEMA)
    name = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    return write_atomically(folder / name, rows.write_parquet)


def read_history(folder) -> pl.DataFrame:
    """Every row of the history in ``folder``, oldest first (empty, with the schema, when there is none)."""
    files = sorted(Path(folder).glob("*.parquet")) if Path(folder).is_dir() else []
    if not files:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    return pl.concat([pl.read_parquet(f) for f in files])


def results_markdown(results: dict[str, dict], baseline: dict | None = None) -> str:
    """One row per model: the headline metrics of one test set."""
    names = ["mpjpe_mm", "pa_mpjpe_mm", "absolute_mpjpe_mm", "pck100", "pck150", "auc", "cps200", "consistency_mm"]
    header = "| model | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    lines = [f"| {model} | " + " | ".join(f"{r['metrics'][n]:.1f}" if n in r["metrics"] else "–" for n in names) + " |"
             for model, r in results.items()]
    if baseline:
        lines.append("| mean pose (baseline) | " + " | ".join(
            f"{baseline[n]:.1f}" if n in baseline else "–" for n in names) + " |")
    return header + "\n".join(lines)
