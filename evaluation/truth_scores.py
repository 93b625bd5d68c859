"""Scores against the demo world's TRUE joints of a test split's crops (``assets.synthetic.truth``): what
the experiments can measure on the demo world and no benchmark on recorded data can, the error of a model's
joints in ANY format it outputs, not only in the format its test set is labelled in.

``EvaluationSet``: a test split and the world dataset it was converted from; ``true_test_poses``: the
truth of its test crops in given formats, first checked against the store's own labels;
``score_against_truth``: MPJPE and PA-MPJPE in one format (the data-scaling experiment);
``mpjpe_by_format``: the root-relative MPJPE of each format a model outputs (the consistency experiment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assets.joint_names import skeleton_joint_indices
from assets.locations import Location
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.synthetic.truth import TruthUnavailableError, check_truth, true_joints
from evaluation.benchmark import predict_split
from evaluation.metrics import mpjpe, pa_mpjpe


@dataclass(frozen=True)
class EvaluationSet:
    """A test split to score on: the pipeline's dataset ``name``, its store, and the demo world dataset it
    was converted from, whose truth ``assets.synthetic.truth`` regenerates (None: a test set without truth,
    a recording or a dataset the world cannot regenerate)."""

    name: str
    store_path: str | Path | Location
    world_dataset: str | None = None


def true_test_poses(test_set: EvaluationSet, formats: Sequence[str], world_seed: int) -> dict[str, np.ndarray]:
    """{format: its true joints [N, J, 3] in the test split's examples, in store order, camera-frame mm} for
    each of ``formats``, after checking the truth of the store's own format against its labels (a world of
    another seed, or edited raw files, would score against nonsense)."""
    if test_set.world_dataset is None:
        raise TruthUnavailableError(f"test set {test_set.name}: no world dataset to regenerate its truth from")
    indices = open_store(test_set.store_path).split_indices("test")
    if len(indices) == 0:
        raise ValueError(f"test set {test_set.name}: no test examples in {test_set.store_path}")
    check_truth(test_set.store_path, seed=world_seed, dataset=test_set.world_dataset, indices=indices)
    return {skeleton: true_joints(test_set.store_path, skeleton, seed=world_seed, dataset=test_set.world_dataset,
                                  indices=indices)
            for skeleton in dict.fromkeys(formats)}


def _format_joints(all_joints: np.ndarray, joint_names: Sequence[str], skeleton: str, truth: np.ndarray) -> np.ndarray:
    """The ``skeleton`` joints of predictions of every joint [N, J_union, 3], checked against ``truth``'s count."""
    if truth.shape[0] != all_joints.shape[0]:
        raise ValueError(f"truth of {skeleton}: expected the {all_joints.shape[0]} predicted examples, got "
                         f"{truth.shape[0]}")
    return all_joints[:, skeleton_joint_indices(joint_names, skeleton)]


def score_against_truth(estimator, store_path, truth: np.ndarray, evaluation_format: str) -> dict:
    """examples, mpjpe_mm and pa_mpjpe_mm of ``estimator``'s ``evaluation_format`` joints on the store's test
    split against ``truth`` [N, J, 3] (camera-frame mm, the split's examples in store order)."""
    all_joints, indices = predict_split(estimator, open_store(store_path), "test")
    predicted = _format_joints(all_joints, estimator.joint_names, evaluation_format, truth)
    root = get_skeleton(evaluation_format).root_joints
    return {"examples": int(len(indices)), "mpjpe_mm": float(np.mean(mpjpe(predicted, truth, root_index=root))),
            "pa_mpjpe_mm": float(np.mean(pa_mpjpe(predicted, truth)))}


def mpjpe_by_format(all_joints: np.ndarray, joint_names: Sequence[str],
                    truths: Mapping[str, np.ndarray]) -> dict[str, float]:
    """{format: MPJPE (mm)} of each format of ``truths`` (in its order; all a model outputs: its
    ``skeletons()``): the mean over the examples of the format's joints among ``joint_names`` in
    ``all_joints`` [N, J_union, 3] of their root-relative error (about the format's ``root_joints``) against
    ``truths[format]`` [N, J, 3], the same examples' true joints."""
    return {skeleton: float(np.mean(mpjpe(_format_joints(all_joints, joint_names, skeleton, truth), truth,
                                          root_index=get_skeleton(skeleton).root_joints)))
            for skeleton, truth in truths.items()}
