"""The demo world's TRUE joints of a converted store's examples, in any registered skeleton format.

A store keeps, per example, its coded subject and sequence, its frame and its crop camera's extrinsics
(world -> camera). The world is deterministic, so the example's person is regenerated from the world seed:
the subject's body (``Subject.random(seed, dataset, subject)``) posed by the sequence's motion at the
example's frame, with the very functions the generators draw them with (``world.h36m_motion``, ...). Read
off in any format (``Body.joints``) and taken through the extrinsics, these are the joints the crop shows,
in its camera's frame (mm). In the store's own format they are its labels (``check_truth``); in another
format they are what a model asked for that format should predict, which no store holds.

Covered: every dataset of the world whose store codes name its sequences (``TRUTH_DATASETS``: demo_h36m,
demo_3dhp, demo_smpl, the two release layouts and the sixteen generic format datasets); demo_multiview2d,
demo_lsp2d and anything else raise ``TruthUnavailableError``. A store is matched by its dataset name (or
the world dataset it was converted from, ``dataset=``), whatever size the world had.
"""

from collections.abc import Callable

import numpy as np

from assets.skeletons import get_skeleton
from assets.store import open_store

from .body import Body, Subject
from .format_datasets import sequence_motion
from .motion import Motion
from .release_layouts import aspset_clip_motion, aspset_session_world, h36m_take_motion
from .world import READERS, h36m_motion, mpi_3dhp_motion, smpl_motion

# regenerated joints agree with a store's labels to float32 rounding (files, extrinsics, store) of the
# magnitudes involved; an edited raw folder or another world seed is off by tens of millimetres or more
RELATIVE_TOLERANCE = 1e-5


class TruthUnavailableError(ValueError):
    """The world cannot regenerate this dataset's examples."""


class TruthMismatchError(ValueError):
    """Regenerated joints differ from a store's own labels: another world seed, or edited raw data."""


def _sequence_name(subject: str, sequence: str, separator: str) -> str:
    """The sequence's own name in a code ``<subject><separator><name>``."""
    prefix = f"{subject}{separator}"
    if not sequence.startswith(prefix):
        raise ValueError(f"sequence {sequence!r} is not one of subject {subject!r} ('{prefix}<name>')")
    return sequence.removeprefix(prefix)


# converter -> (seed, dataset, subject, sequence, frames) -> (motion at those frames, 4x4 from the demo world
# into the store's world, None where they are the same), after the converter's codes
_RECORDINGS: dict[str, Callable[..., tuple[Motion, np.ndarray | None]]] = {
    "demo_h36m": lambda seed, dataset, subject, sequence, frames: (
        h36m_motion(seed, dataset, subject, _sequence_name(subject, sequence, "/"), frames), None),
    "demo_3dhp": lambda seed, dataset, subject, sequence, frames: (
        mpi_3dhp_motion(seed, dataset, subject, _sequence_name(subject, sequence, "/"), frames), None),
    "demo_smpl": lambda seed, dataset, subject, sequence, frames: (smpl_motion(seed, dataset, sequence, frames), None),
    "demo_format": lambda seed, dataset, subject, sequence, frames: (
        sequence_motion(seed, dataset, subject, _sequence_name(subject, sequence, "/"), frames), None),
    "h36m": lambda seed, dataset, subject, sequence, frames: (
        h36m_take_motion(seed, dataset, subject, _sequence_name(subject, sequence, "/"), frames), None),
    # the release's world is the session's left camera
    "aspset": lambda seed, dataset, subject, sequence, frames: (
        aspset_clip_motion(seed, dataset, subject, _sequence_name(subject, sequence, "-"), frames),
        aspset_session_world(seed, dataset, subject).extrinsic_matrix),
}
TRUTH_DATASETS = tuple(name for name, reader in READERS.items() if reader in _RECORDINGS)


def has_truth(dataset: str) -> bool:
    return dataset in TRUTH_DATASETS


def _recording(dataset: str):
    if not has_truth(dataset):
        raise TruthUnavailableError(f"no true joints for dataset {dataset!r}: the demo world regenerates those of "
                                    f"{', '.join(TRUTH_DATASETS)}")
    return _RECORDINGS[READERS[dataset]]


def true_joints(store_path, skeleton: str, *, seed: int, dataset: str | None = None, indices=None) -> np.ndarray:
    """float64 [N, J, 3]: the true joints of ``skeleton`` (any registered format) in examples ``indices`` (all
    by default) of the store, mm in each example's crop camera frame. ``seed``: the world's; ``dataset``: the
    world dataset the store was converted from (default: the store's dataset name)."""
    store = open_store(store_path)
    dataset = dataset or store.attrs["dataset"]
    recording = _recording(dataset)
    num_joints = get_skeleton(skeleton).num_joints
    indices = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
    codes = store.attrs["codes"]
    subjects, sequences, frames = (store[name].get_orthogonal_selection((indices,))
                                   for name in ("subject", "sequence", "frame"))
    extrinsics = store["extrinsics"].get_orthogonal_selection((indices,)).astype(np.float64)
    if not np.isfinite(extrinsics).all():
        raise TruthUnavailableError(f"store {store.path}: examples without a world frame (non-finite extrinsics)")
    world = np.empty((len(indices), num_joints, 3))
    for subject_code, sequence_code in sorted(set(zip(subjects.tolist(), sequences.tolist()))):
        rows = np.flatnonzero((subjects == subject_code) & (sequences == sequence_code))
        subject, sequence = codes["subject"][subject_code], codes["sequence"][sequence_code]
        wanted = np.unique(frames[rows])
        try:
            motion, to_store_world = recording(seed, dataset, subject, sequence, wanted)
        except ValueError as error:
            raise TruthUnavailableError(f"store {store.path}: subject {subject!r}, sequence {sequence!r} is not in "
                                        f"the world's {dataset} (seed {seed}): {error}") from None
        body = Body(Subject.random(seed, dataset, subject))
        joints = body.joints(skeleton, motion.frames(body))
        if to_store_world is not None:
            joints = joints @ to_store_world[:3, :3].T + to_store_world[:3, 3]
        world[rows] = joints[np.searchsorted(wanted, frames[rows])]
    return np.einsum("nij,nkj->nki", extrinsics[:, :3, :3], world) + extrinsics[:, None, :3, 3]


def check_truth(store_path, *, seed: int, dataset: str | None = None, indices=None) -> float:
    """The largest distance (mm) between a store's 3D labels and the true joints of its own format, for
    examples ``indices`` (all by default); raises ``TruthMismatchError`` beyond ``RELATIVE_TOLERANCE`` of the
    labels' magnitude. A store without 3D labels there has nothing to check: 0."""
    store = open_store(store_path)
    indices = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
    labels = store["pose3d"].get_orthogonal_selection((indices,)).astype(np.float64)
    labelled = np.isfinite(labels).all(axis=-1)
    if not labelled.any():
        return 0.0
    truth = true_joints(store_path, store.skeleton.name, seed=seed, dataset=dataset, indices=indices)
    deviation = float(np.linalg.norm(truth[labelled] - labels[labelled], axis=-1).max())
    allowed = RELATIVE_TOLERANCE * float(np.abs(labels[labelled]).max())
    if deviation > allowed:
        raise TruthMismatchError(
            f"store {store.path}: the world's joints (seed {seed}, dataset {dataset or store.attrs['dataset']}) are "
            f"up to {deviation:.3g} mm from the store's labels (allowed: {allowed:.3g} mm): was the world generated "
            "with another seed, or its raw files edited?")
    return deviation
