"""The pure logic of the consistency and data-scaling experiments (evaluation/consistency_experiment.py,
evaluation/scaling_experiment.py, evaluation/truth_scores.py): batch shares, subsets, scoring against the
truth and the reports.
Their training runs are exercised on the tiny pipeline (tests/test_pipeline.py)."""

import json
import math

import numpy as np
import pytest

from assets.converters import get_converter
from assets.converters.common import convert
from assets.joint_names import split_union_joint_name, union_joint_names
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.synthetic.truth import true_joints
from evaluation.consistency_experiment import (ALL_FORMATS, BY_FORMAT, INITIAL, METRICS as CONSISTENCY_METRICS,
                                               ConsistencyExperimentSettings, ConsistencyResult,
                                               run_consistency_experiment, score_on_test_sets)
from evaluation.scaling_experiment import (DATA_FILE, PLOT_FILE, REPORT_FILE, ScalingExperimentSettings, ScalingResult,
                                           nested_order, split_crops)
from evaluation.truth_scores import EvaluationSet, score_against_truth, true_test_poses
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
        run_consistency_experiment(runs, [], tmp_path / "initial.pt", None, [EvaluationSet("set", tmp_path)], tmp_path)


def test_test_sets_with_truth_need_the_world_seed_before_anything_runs(tmp_path):
    runs = {"separate": TrainingConfig(mode="separate", steps=2)}
    test_sets = [EvaluationSet("recording", tmp_path), EvaluationSet("demo_h36m", tmp_path, "demo_h36m")]
    with pytest.raises(ValueError, match="world_seed: needed for the truth of test sets demo_h36m$"):
        run_consistency_experiment(runs, [], tmp_path / "initial.pt", None, test_sets, tmp_path)


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

    def skeletons(self):
        return list(dict.fromkeys(split_union_joint_name(name)[1] for name in self.joint_names))


@pytest.fixture(scope="module")
def h36m_test_set(tiny_world, tmp_path_factory):
    path = convert(get_converter("demo_h36m"), tiny_world / "demo_h36m", tmp_path_factory.mktemp("scaling") / "store",
                   image_size=16, progress=lambda message: None).path
    return EvaluationSet("demo_h36m", path, "demo_h36m")


def test_scores_against_the_truth_are_those_of_the_test_crops_in_the_evaluation_format(h36m_test_set):
    evaluation_format = "smpl_24"
    truth = true_test_poses(h36m_test_set, [evaluation_format], world_seed=0)[evaluation_format]
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
        true_test_poses(h36m_test_set, ["h36m_17"], world_seed=3)


class _Identity:
    """An autoencoder that reconstructs every pose as it is: consistency 0."""

    @staticmethod
    def reconstruct(poses):
        return poses


ALL_FORMATS_OUTPUTS = ("h36m_17", "smpl_24", "lsp_14")  # lsp_14 has no pelvis: its root is the hips' midpoint
PERTURBATION_MM = np.array([30.0, 40.0, 0.0])  # 50 mm on every joint but the roots


def test_every_output_format_is_scored_against_its_truth_and_test_sets_without_truth_get_none(h36m_test_set,
                                                                                              monkeypatch):
    import evaluation.consistency_experiment as experiment

    joint_names = union_joint_names(ALL_FORMATS_OUTPUTS)
    truths = true_test_poses(h36m_test_set, ALL_FORMATS_OUTPUTS, world_seed=0)
    examples = len(truths["h36m_17"])
    recording = EvaluationSet("recording", h36m_test_set.store_path)  # the same crops, said to have no truth

    def outputs(perturbed: bool) -> np.ndarray:
        """Every format's true joints, perturbed: moved rigidly (root-relative errors ignore that) and every
        joint but the format's roots 50 mm further."""
        poses = np.empty((examples, len(joint_names), 3))
        for skeleton in ALL_FORMATS_OUTPUTS:
            joints = truths[skeleton].copy()
            if perturbed:
                joints += [30.0, -20.0, 400.0]
                others = np.setdiff1d(np.arange(joints.shape[1]), get_skeleton(skeleton).root_joints)
                joints[:, others] += PERTURBATION_MM
            own = [joint_names.index(f"{joint}_{skeleton}") for joint in get_skeleton(skeleton).joint_names]
            poses[:, own] = joints
        return poses

    computed = []
    monkeypatch.setattr(experiment, "true_test_poses",
                        lambda *args: computed.append(args[1]) or true_test_poses(*args))
    cache = {}

    def rows(model: str, perturbed: bool) -> list[dict]:  # predictions asked for: scores, truth's scores, recording's
        replay = _Replay(joint_names, np.concatenate([outputs(perturbed)] * 3))
        return score_on_test_sets(model, replay, [h36m_test_set, recording], _Identity(), world_seed=0, truths=cache)

    none = pytest.approx(0, abs=1e-9 * max(np.abs(truth).max() for truth in truths.values()))
    exact, without_truth = rows("exact", perturbed=False)
    assert list(exact[BY_FORMAT]) == list(ALL_FORMATS_OUTPUTS)
    assert exact[ALL_FORMATS] == none and all(value == none for value in exact[BY_FORMAT].values())
    assert exact["consistency_mm"] == 0 and exact["mpjpe_mm"] < 1e-2  # the labels are the truth in float32
    assert math.isnan(without_truth[ALL_FORMATS]) and without_truth[BY_FORMAT] == {}
    assert without_truth["mpjpe_mm"] == exact["mpjpe_mm"]  # the other metrics do not need the truth

    off, without_truth = rows("off", perturbed=True)
    length = np.linalg.norm(PERTURBATION_MM)
    expected = {skeleton: length * (1 - len(get_skeleton(skeleton).root_joints) / get_skeleton(skeleton).num_joints)
                for skeleton in ALL_FORMATS_OUTPUTS}
    assert off[BY_FORMAT] == pytest.approx(expected, rel=1e-9)
    assert off[ALL_FORMATS] == pytest.approx(np.mean(list(expected.values())), rel=1e-9)
    assert off["mpjpe_mm"] == pytest.approx(off[BY_FORMAT]["h36m_17"], abs=1e-2)  # vs labels: the own format's
    assert math.isnan(without_truth[ALL_FORMATS])
    assert computed == [list(ALL_FORMATS_OUTPUTS)] and set(cache) == {"demo_h36m"}  # once, over the models


def test_the_all_format_truth_is_checked_against_the_test_sets_own_labels(h36m_test_set):
    from assets.synthetic.truth import TruthMismatchError

    joint_names = union_joint_names(ALL_FORMATS_OUTPUTS)
    replay = _Replay(joint_names, np.zeros((len(open_store(h36m_test_set.store_path).split_indices("test")),
                                            len(joint_names), 3)))
    with pytest.raises(TruthMismatchError, match="another seed"):
        score_on_test_sets("initial", replay, [h36m_test_set], _Identity(), world_seed=3)


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


def consistency_result(with_truth=("demo_h36m", "demo_ghum_35")) -> ConsistencyResult:
    rng = np.random.default_rng(1)
    modes = ("separate", "consistency", "latent", "hybrid")
    rows = []
    for model in (INITIAL, *modes):
        for name in TEST_SETS:
            by_format = ({skeleton: float(rng.uniform(10, 200)) for skeleton in ("h36m_17", "smpl_24")}
                         if name in with_truth else {})
            rows.append({"model": model, "dataset": name, "skeleton": "h36m_17", "examples": 8,
                         **{metric: float(rng.uniform(10, 200)) for metric in CONSISTENCY_METRICS},
                         ALL_FORMATS: float(np.mean(list(by_format.values()))) if by_format else math.nan,
                         BY_FORMAT: by_format})
    runs = [{"mode": mode, "steps": 4, "resumed_from": 4 if mode == "latent" else 0, "seconds": 2.0,
             "images_per_second": 9.0, "final_loss": 0.5, "model_path": "m"} for mode in modes]
    return ConsistencyResult(rows, runs, steps=4, seconds=10.0)


def test_the_consistency_report_has_every_model_on_every_test_set_and_their_means(tmp_path):
    result = consistency_result()
    rows, table = result.rows, result.markdown()
    assert result.models == [INITIAL, "separate", "consistency", "latent", "hybrid"]
    for row in rows:
        assert all(f"{row[metric]:.1f}" in table for metric in CONSISTENCY_METRICS if math.isfinite(row[metric]))
    for model in result.models:
        for metric in ("consistency_mm", ALL_FORMATS):  # the truth's mean: over the test sets that have it
            mean = np.mean([row[metric] for row in rows if row["model"] == model and math.isfinite(row[metric])])
            assert result.mean(model, metric) == pytest.approx(mean)
    assert result.scored(ALL_FORMATS) == ["demo_h36m", "demo_ghum_35"] and result.scored("mpjpe_mm") == list(TEST_SETS)
    means = [result.mean("latent", metric) for metric in CONSISTENCY_METRICS]
    assert "| latent | " + " | ".join(f"{mean:.1f}" for mean in means) + " | reused |" in table
    section = table.split(f"## {CONSISTENCY_METRICS[ALL_FORMATS]} per test set")[1].split("##")[0]
    assert "| demo_smpl | h36m_17 | 8 | " + " | ".join(["—"] * len(result.models)) + " |" in section
    per_format = table.split("## MPJPE vs truth per output format")[1]
    for skeleton in ("h36m_17", "smpl_24"):
        line = next(line for line in per_format.splitlines() if line.startswith(f"| {skeleton} |"))
        assert line == f"| {skeleton} | " + " | ".join(f"{result.format_means(model)[skeleton]:.1f}"
                                                        for model in result.models) + " |"
    result.write(tmp_path)
    written = json.loads((tmp_path / "consistency.json").read_text())["rows"]
    assert [row[ALL_FORMATS] for row in written] == [row[ALL_FORMATS] if math.isfinite(row[ALL_FORMATS]) else None
                                                     for row in rows]
    assert (tmp_path / "consistency_scores.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_consistency_report_without_any_truth_says_so():
    result = consistency_result(with_truth=())
    table = result.markdown()
    assert "On the 0 of 3 test sets" in table and "per output format" not in table
    assert math.isnan(result.mean(INITIAL, ALL_FORMATS))
    assert result.plots_png()["consistency_scores.png"].startswith(PNG_SIGNATURE)
