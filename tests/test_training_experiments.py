"""The pure logic of the consistency and data-scaling experiments (evaluation/consistency_experiment.py,
evaluation/scaling_experiment.py): batch shares, subsets, scoring against the truth and the reports.
Their training runs are exercised on the tiny pipeline (tests/test_pipeline.py)."""

import json
import math

import numpy as np
import pytest

from assets.converters import get_converter
from assets.converters.common import convert
from assets.joint_names import union_joint_names
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.synthetic.truth import true_joints
from evaluation.consistency_experiment import (INITIAL, METRICS as CONSISTENCY_METRICS, ConsistencyExperimentSettings,
                                               ConsistencyResult, run_consistency_experiment)
from evaluation.scaling_experiment import (DATA_FILE, PLOT_FILE, REPORT_FILE, EvaluationSet, ScalingExperimentSettings,
                                           ScalingResult, nested_order, score_against_truth, split_crops,
                                           true_test_poses)
from model.training import TrainingConfig

PNG_SIGNATURE = b"\x89PNG"


@pytest.mark.parametrize("total, count, multiple", [(37, 1, 1), (37, 4, 1), (37, 23, 1), (24, 5, 2), (8, 4, 2)])
def test_crops_are_shared_as_evenly_as_possible_and_sum_to_the_total(total, count, multiple):
    shares = split_crops(total, count, multiple)
    assert len(shares) == count and sum(shares) == total
    assert all(share > 0 and share % multiple == 0 for share in shares)
    assert max(shares) - min(shares) <= multiple
    assert shares == sorted(shares, reverse=True)  # the first datasets take the remainder


@pytest.mark.parametrize("total, count, multiple", [(3, 4, 1), (6, 4, 2), (7, 2, 2), (5, 0, 1)])
def test_crops_that_cannot_be_shared_are_refused(total, count, multiple):
    with pytest.raises(ValueError, match="cannot share"):
        split_crops(total, count, multiple)


def test_the_subsets_are_prefixes_of_one_order_that_starts_with_the_evaluation_dataset():
    names = ["a", "b", "c", "d"]
    assert nested_order(names) == names
    assert nested_order(names, "c") == ["c", "a", "b", "d"]
    with pytest.raises(ValueError, match="'e' is not a 3D training dataset"):
        nested_order(names, "e")


def test_subset_sizes_are_clipped_to_the_datasets_there_are():
    settings = ScalingExperimentSettings(steps=1, subset_sizes=(1, 4, 12, None))
    assert settings.sizes(23) == [1, 4, 12, 23]
    assert settings.sizes(3) == [1, 3]
    assert ScalingExperimentSettings(steps=1, subset_sizes=(None,)).sizes(5) == [5]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="modes"):
        ConsistencyExperimentSettings(steps=2, modes=("separate", "merged"))
    with pytest.raises(ValueError, match="subset sizes"):
        ScalingExperimentSettings(steps=2, subset_sizes=(0,))


def test_consistency_runs_must_be_their_modes_of_one_length(tmp_path):
    runs = {"separate": TrainingConfig(mode="separate", steps=2), "consistency": TrainingConfig(mode="latent", steps=2)}
    with pytest.raises(ValueError, match="all of the same steps"):
        run_consistency_experiment(runs, [], tmp_path / "initial.pt", None, {"set": tmp_path}, tmp_path)


# ---------------------------------------------------------------------------------------------------
# Scoring against the truth
# ---------------------------------------------------------------------------------------------------
class _Replay:
    """An estimator that predicts given poses, batch after batch, in the order it is asked."""

    def __init__(self, joint_names, poses):
        self.joint_names, self.poses, self.given = list(joint_names), poses, 0

    def predict(self, crops, intrinsics, skeleton=None, *, flip_test=True):
        batch = self.poses[self.given:self.given + len(crops)]
        self.given += len(crops)
        return batch


@pytest.fixture(scope="module")
def h36m_test_set(tiny_world, tmp_path_factory):
    path = convert(get_converter("demo_h36m"), tiny_world / "demo_h36m", tmp_path_factory.mktemp("scaling") / "store",
                   image_size=16, progress=lambda message: None).path
    return EvaluationSet("demo_h36m", path, "demo_h36m")


def test_scores_against_the_truth_are_those_of_the_test_crops_in_the_evaluation_format(h36m_test_set):
    evaluation_format = "smpl_24"
    truth = true_test_poses(h36m_test_set, evaluation_format, world_seed=0)
    indices = open_store(h36m_test_set.store_path).split_indices("test")
    np.testing.assert_array_equal(truth, true_joints(h36m_test_set.store_path, evaluation_format, seed=0,
                                                     indices=indices))
    joint_names = union_joint_names(("h36m_17", evaluation_format))
    own = [i for i, name in enumerate(joint_names) if name.endswith(f"_{evaluation_format}")]

    def scores(poses):
        predicted = np.full((len(poses), len(joint_names), 3), 1e4)  # other formats' joints: far off, unread
        predicted[:, own] = poses
        return score_against_truth(_Replay(joint_names, predicted), h36m_test_set.store_path, truth, evaluation_format)

    none = pytest.approx(0, abs=1e-9 * np.abs(truth).max())  # float64 rounding of millimetres
    exact = scores(truth)
    assert exact["examples"] == len(indices) and exact["mpjpe_mm"] == none and exact["pa_mpjpe_mm"] == none
    assert scores(truth + [30.0, -20.0, 400.0])["mpjpe_mm"] == none  # root-relative: the position does not count
    larger = scores(1.2 * truth)  # Procrustes aligns the scale; root-relative errors are a fifth of each joint's offset
    root = truth[:, list(get_skeleton(evaluation_format).root_joints)].mean(axis=1, keepdims=True)
    assert larger["pa_mpjpe_mm"] == none
    assert larger["mpjpe_mm"] == pytest.approx(0.2 * np.linalg.norm(truth - root, axis=-1).mean(), rel=1e-9)


def test_the_truth_is_checked_against_the_test_sets_own_labels(h36m_test_set):
    from assets.synthetic.truth import TruthMismatchError

    with pytest.raises(TruthMismatchError, match="another seed"):
        true_test_poses(h36m_test_set, "h36m_17", world_seed=3)


# ---------------------------------------------------------------------------------------------------
# The reports
# ---------------------------------------------------------------------------------------------------
TEST_SETS = ("demo_h36m", "demo_smpl", "demo_ghum_35")


def scaling_result() -> ScalingResult:
    rng = np.random.default_rng(0)
    subsets = [{"size": 1, "datasets": ["demo_h36m"], "crops": {"demo_h36m": 6}},
               {"size": 3, "datasets": list(TEST_SETS), "crops": dict.fromkeys(TEST_SETS, 2)}]
    for subset in subsets:
        subset.update(steps=4, resumed_from=0, seconds=1.0, images_per_second=8.0, model_path="m")
    rows = [{"size": subset["size"], "dataset": name, "seen": name in subset["crops"], "examples": 8,
             "mpjpe_mm": float(rng.uniform(50, 200)), "pa_mpjpe_mm": float(rng.uniform(30, 100))}
            for subset in subsets for name in TEST_SETS]
    return ScalingResult("h36m_17", subsets, rows, {"demo_lsp2d": 2}, ScalingExperimentSettings(steps=4), 3.0)


def test_the_scaling_report_has_every_test_set_and_size_and_the_means_over_seen_and_unseen_sets(tmp_path):
    result = scaling_result()
    table = result.markdown()
    for row in result.rows:
        assert f"{row['mpjpe_mm']:.1f} / {row['pa_mpjpe_mm']:.1f}" + (" *(seen)*" if row["seen"] else "") in table
    assert table.count("*(seen)*") == sum(row["seen"] for row in result.rows) + 1  # and the legend
    for size in result.sizes:
        for seen in (True, False):
            rows = [row for row in result.rows if row["size"] == size and row["seen"] == seen]
            expected = np.mean([row["mpjpe_mm"] for row in rows]) if rows else math.nan
            assert result.mean(size, "mpjpe_mm", seen) == pytest.approx(expected, nan_ok=True)
    unseen = next(line for line in table.splitlines() if line.startswith("| **mean, unseen**"))
    assert f"{result.mean(1, 'mpjpe_mm', False):.1f} / {result.mean(1, 'pa_mpjpe_mm', False):.1f} (2)" in unseen
    assert unseen.endswith("| — |")  # the run on every dataset has no unseen test set here
    written = {path.name for path in result.write(tmp_path)}
    assert written == {REPORT_FILE, DATA_FILE, PLOT_FILE}
    assert (tmp_path / PLOT_FILE).read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((tmp_path / DATA_FILE).read_text())["rows"] == result.rows


def test_the_consistency_report_has_every_model_on_every_test_set_and_their_means():
    rng = np.random.default_rng(1)
    modes = ("separate", "consistency", "latent", "hybrid")
    rows = [{"model": model, "dataset": name, "skeleton": "h36m_17", "examples": 8,
             **{metric: float(rng.uniform(10, 200)) for metric in CONSISTENCY_METRICS}}
            for model in (INITIAL, *modes) for name in TEST_SETS]
    runs = [{"mode": mode, "steps": 4, "resumed_from": 4 if mode == "latent" else 0, "seconds": 2.0,
             "images_per_second": 9.0, "final_loss": 0.5, "model_path": "m"} for mode in modes]
    result = ConsistencyResult(rows, runs, steps=4, seconds=10.0)
    table = result.markdown()
    assert result.models == [INITIAL, *modes]
    for row in rows:
        assert all(f"{row[metric]:.1f}" in table for metric in CONSISTENCY_METRICS)
    for model in result.models:
        mean = np.mean([row["consistency_mm"] for row in rows if row["model"] == model])
        assert result.mean(model, "consistency_mm") == pytest.approx(mean)
    assert f"| latent | {result.mean('latent', 'mpjpe_mm'):.1f} |" in table and "| reused |" in table
    assert result.plots_png()["consistency_scores.png"].startswith(PNG_SIGNATURE)
