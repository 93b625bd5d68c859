"""All-skeleton pseudo ground truth (method.md §5): the step-1 model's predictions of every skeleton's
joints, with flip test-time augmentation, on training crops. The affine-combining autoencoder is fit
on these poses, which are dense (every joint of every format, for the same person)."""

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from assets.store import open_store
from model.estimator import PoseEstimator


def evenly_spaced(indices: np.ndarray, count: int) -> np.ndarray:
    if len(indices) <= count:
        return indices
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(int)]


def predict_all_skeletons(
    estimator: PoseEstimator,
    store_paths: Sequence,
    *,
    examples_per_store: int = 600,
    split: str = "train",
    batch_size: int = 64,
    device=None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Camera-frame predictions [N, J_union, 3] mm for evenly spaced ``split`` crops of each store.

    Returns {"poses", "dataset" (code per row), "datasets" (the code table), "example" (index in its
    store), "joint_names"}.
    """
    device = torch.device(device) if device else next(estimator.parameters()).device
    estimator = estimator.to(device)
    poses, datasets, examples, names = [], [], [], []
    started = time.perf_counter()
    for path in store_paths:
        store = open_store(path)
        chosen = evenly_spaced(store.split_indices(split), examples_per_store)
        if len(chosen) == 0:
            raise ValueError(f"store {store.path}: no {split!r} examples to predict on")
        for start in range(0, len(chosen), batch_size):
            rows = chosen[start:start + batch_size]
            images = store["image"].read_rows(rows)
            intrinsics = store["intrinsics"].get_orthogonal_selection((rows,))
            poses.append(estimator.predict(images, intrinsics, flip_test=True))
        datasets += [len(names)] * len(chosen)
        names.append(store.attrs["dataset"])
        examples.append(chosen)
        if progress:
            progress(f"all-skeleton pseudo-GT: {store.attrs['dataset']} {len(chosen)} crops "
                     f"({time.perf_counter() - started:.1f} s)")
    poses = np.concatenate(poses).astype(np.float32)
    # a joint predicted behind the camera is a failed prediction, not a pose: leave it out of the fit
    behind = poses[..., 2] <= 0
    poses[behind] = np.nan
    return {"poses": poses, "dataset": np.array(datasets, dtype=np.int32), "behind_camera": float(behind.mean()),
            "datasets": names, "example": np.concatenate(examples), "joint_names": list(estimator.joint_names)}
