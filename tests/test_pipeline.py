"""The whole pipeline on a tiny world: a second run does nothing, and a change in one dataset re-runs
exactly what depends on it (Dagster data versions as signatures of the inputs)."""

import json
import math
import shutil

import dagster as dg
import numpy as np
import pytest
import yaml

from assets.file_hashes import FileHashCache
from assets.versions import collect_garbage, published_data_version
from evaluation.benchmark import read_history
from orchestration.cli import print_benchmark_table
from orchestration.config import load_config
from orchestration.runner import run_pipeline
from object_store import fresh_prefix
from pipeline_config import DEMO_DATASETS, TINY_ACAE, TINY_TRAINING, deliver_h36m_in_metres, write_config

DOWNSTREAM_OF_ANY_TRAINING_SET = ["training_pool", "initial_model", "all_skeleton_pseudo_gt", "acae", "final_model",
                                  "benchmark[demo_h36m]", "benchmark[demo_smpl]"]


def _labels(outcomes, status):
    return sorted(o.label for o in outcomes if o.status == status)


@pytest.fixture(scope="module")
def pipeline(tiny_world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    raw = folder / "raw"
    for name in DEMO_DATASETS:
        shutil.copytree(tiny_world / name, raw / name)
    config = load_config(write_config(folder, raw, list(DEMO_DATASETS), training=TINY_TRAINING,
                                      benchmark=["demo_h36m", "demo_smpl"], acae=TINY_ACAE))
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_pipeline(config, instance, report=lambda _: None)
        yield config, instance, raw, first


def test_first_run_builds_every_stage(pipeline):
    config, instance, raw, first = pipeline
    assert _labels(first, "failed") == [] and _labels(first, "skipped") == []
    assert len(_labels(first, "ran")) == len(DEMO_DATASETS) + 1 + len(DOWNSTREAM_OF_ANY_TRAINING_SET)
    history = read_history(config.benchmark_history_path)
    assert set(history["dataset"]) == {"demo_h36m", "demo_smpl"} and set(history["model"]) == {"initial", "final"}
    assert np.isfinite(history["value"].to_numpy()).all()


def test_the_printed_benchmark_table_has_the_mean_pose_floor(pipeline, capsys):
    config = pipeline[0]
    print_benchmark_table(config)
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if "meanpose" in line]
    assert [row[0] for row in rows] == ["demo_h36m", "demo_smpl"]
    for row in rows:
        baseline = json.loads(config.benchmark_latest_path(row[0]).read_text())["baseline"]
        assert float(row[2]) == pytest.approx(baseline["mpjpe_mm"], abs=0.05)
        assert float(row[3]) == pytest.approx(baseline["pa_mpjpe_mm"], abs=0.05)


def test_the_pipeline_runs_on_an_object_store_and_scores_as_it_does_locally(pipeline, s3_endpoint, tmp_path):
    local_config, _, raw, _ = pipeline  # before the tests below change the raw folders
    path = write_config(tmp_path, raw, list(DEMO_DATASETS), training=TINY_TRAINING,
                        benchmark=["demo_h36m", "demo_smpl"], acae=TINY_ACAE)
    settings = yaml.safe_load(path.read_text())
    settings["store"]["root"] = f"{fresh_prefix('pipeline')}/stores"
    path.write_text(yaml.safe_dump(settings))
    config = load_config(path)
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_pipeline(config, instance, report=lambda _: None)
        assert _labels(first, "failed") == [], [o.error for o in first if o.error]
        assert len(_labels(first, "ran")) == len(DEMO_DATASETS) + 1 + len(DOWNSTREAM_OF_ANY_TRAINING_SET)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written locally
        assert _labels(run_pipeline(config, instance, report=lambda _: None), "ran") == []
    for name in ("demo_h36m", "demo_smpl"):
        remote = json.loads(config.benchmark_latest_path(name).read_text())
        local = json.loads(local_config.benchmark_latest_path(name).read_text())
        for model in ("initial", "final"):
            for metric, value in local[model].items():
                assert remote[model][metric] == pytest.approx(value, rel=1e-4, abs=1e-3), (name, model, metric)
    assert collect_garbage(config.store_root, dry_run=True) == []


def test_the_autoencoder_report_compares_with_its_references(pipeline):
    instance = pipeline[1]
    metadata = instance.get_latest_materialization_event(dg.AssetKey("acae")).asset_materialization.metadata
    table = metadata["held_out_errors_vs_references"].value
    # the tiny run's barely trained model puts some joints behind the camera: few complete poses remain,
    # and every reference has its row, with errors or with the reason it could not be computed
    methods = ["this autoencoder", "same shape, no sparsity (closed form)", f"PCA, {3 * metadata['latents'].value} coordinates"]
    assert all(f"| {method} | " in table for method in methods), table


def test_the_autoencoder_experiment_runs_on_the_pipelines_pseudo_gt_and_only_when_asked(pipeline):
    from orchestration.cli import experiments
    from orchestration.experiment_assets import experiments_root

    config, instance, _, first = pipeline
    assert not any(outcome.asset.endswith("_experiment") for outcome in first)  # not part of the pipeline
    assert experiments(config, ["autoencoder_experiment"], "tiny", instance=instance) == 0
    folder = experiments_root(config) / "autoencoder"
    table = (folder / "autoencoder.md").read_text()
    assert "PCA" in table and "ACAE" in table
    rows = [row for row in json.loads((folder / "autoencoder.json").read_text())["rows"]
            if row["method"] == "acae" and row["evaluated_on"] == "truth"]
    assert rows and all(0 < row["error_perpendicular_mm"] <= row["error_3d_mm"] for row in rows)
    with pytest.raises(ValueError, match="unknown experiment 'scaling'"):
        experiments(config, ["scaling"], "tiny", instance=instance)


def test_the_consistency_experiment_fine_tunes_every_mode_from_the_initial_model(pipeline):
    from assets.store import open_store
    from evaluation.benchmark import predict_split, score
    from evaluation.consistency_experiment import ALL_FORMATS, BY_FORMAT, INITIAL, METRICS, TINY
    from evaluation.truth_scores import EvaluationSet, mpjpe_by_format, true_test_poses
    from model.acae import ACAE
    from model.estimator import PoseEstimator
    from orchestration.cli import experiments
    from orchestration.experiment_assets import experiments_root
    from orchestration.stages import output

    config, instance, _, _ = pipeline
    assert experiments(config, ["consistency_experiment"], "tiny", instance=instance) == 0
    folder = experiments_root(config) / "consistency"
    report = json.loads((folder / "consistency.json").read_text())
    assert [run["mode"] for run in report["runs"]] == list(TINY.modes)
    assert all(run["steps"] == TINY.steps and (folder / "runs" / run["mode"] / "model.pt").is_file()
               for run in report["runs"])
    test_sets = config.benchmark.datasets
    assert sorted((row["model"], row["dataset"]) for row in report["rows"]) == sorted(
        (model, name) for model in (INITIAL, *TINY.modes) for name in test_sets)
    # both test sets are the demo world's: every metric, the truth's too, has a value everywhere
    assert all(math.isfinite(row[metric]) for row in report["rows"] for metric in METRICS)
    # the reference row is the initial model as the pipeline trained it, scored like the benchmark does, and
    # each of its formats against that format's truth
    initial, acae = PoseEstimator.load(output(config, "initial_model")), ACAE.load(output(config, "acae"))
    assert len(initial.skeletons()) > 1
    for name in test_sets:
        path = config.training_store_path(name)
        direct = score(initial, path, acae=acae)["metrics"]
        row = next(row for row in report["rows"] if (row["model"], row["dataset"]) == (INITIAL, name))
        assert all(row[metric] == pytest.approx(direct[metric], rel=1e-6)
                   for metric in METRICS if metric != ALL_FORMATS)
        truths = true_test_poses(EvaluationSet(name, path, name), initial.skeletons(), world_seed=config.demo_seed)
        by_format = mpjpe_by_format(predict_split(initial, open_store(path))[0], initial.joint_names, truths)
        assert list(row[BY_FORMAT]) == initial.skeletons() and all(value > 0 for value in by_format.values())
        assert row[BY_FORMAT] == pytest.approx(by_format, rel=1e-6)
        assert row[ALL_FORMATS] == pytest.approx(np.mean(list(by_format.values())), rel=1e-6)
        # the store's own format: its labels are its truth
        assert row[BY_FORMAT][row["skeleton"]] == pytest.approx(row["mpjpe_mm"], abs=1e-2)
    table = (folder / "consistency.md").read_text()
    assert all(f"| {mode} |" in table for mode in (INITIAL, *TINY.modes))
    assert f"## {METRICS[ALL_FORMATS]} per test set" in table and "per output format" in table
    assert (folder / "consistency_scores.png").read_bytes().startswith(b"\x89PNG")


def test_the_scaling_experiment_scores_subsets_in_one_format_on_seen_and_unseen_test_sets(pipeline):
    from evaluation.scaling_experiment import TINY
    from orchestration.cli import experiments
    from orchestration.experiment_assets import experiments_root

    config, instance, _, _ = pipeline
    assert experiments(config, ["scaling_experiment"], "tiny", instance=instance) == 0
    folder = experiments_root(config) / "scaling"
    report = json.loads((folder / "scaling.json").read_text())
    datasets_3d = list(config.training.batch_3d)
    assert report["evaluation_format"] == "h36m_17"  # demo_h36m's, the first 3D dataset, in every subset
    assert [subset["datasets"] for subset in report["subsets"]] == [datasets_3d[:1], datasets_3d]
    for subset in report["subsets"]:
        assert sum(subset["crops"].values()) == sum(config.training.batch_3d.values())
        assert subset["steps"] == TINY.steps and (folder / "runs" / f"{subset['size']}_datasets" / "model.pt").is_file()
    assert report["crops_2d"] == config.training.batch_2d  # the 2D part of every run is the pipeline's
    seen = {(row["size"], row["dataset"]): row["seen"] for row in report["rows"]}
    assert seen == {(1, "demo_h36m"): True, (1, "demo_smpl"): False, (3, "demo_h36m"): True, (3, "demo_smpl"): True}
    assert all(row["examples"] > 0 and 0 < row["pa_mpjpe_mm"] and math.isfinite(row["mpjpe_mm"])
               for row in report["rows"])
    table = (folder / "scaling.md").read_text()
    assert "| demo_smpl |" in table and "mean, unseen" in table
    assert (folder / "scaling_curve.png").read_bytes().startswith(b"\x89PNG")


def test_second_run_does_nothing_and_reads_no_raw_file(pipeline, monkeypatch):
    config, instance, raw, first = pipeline
    read = []
    real_read = FileHashCache.read_digest
    monkeypatch.setattr(FileHashCache, "read_digest", lambda self, file: read.append(file) or real_read(self, file))
    again = run_pipeline(config, instance, report=lambda _: None)
    assert _labels(again, "ran") == []
    assert len(_labels(again, "fresh")) == len(first)
    assert read == []  # sizes and modification times are unchanged: no content is hashed again


def test_editing_the_training_code_retrains_and_reruns_what_follows(pipeline, project_copy):
    config, instance, raw, first = pipeline
    assert _labels(run_pipeline(config, instance, report=lambda _: None), "ran") == []  # the copy is the same code
    training = project_copy / "model" / "training.py"
    training.write_text(training.read_text().replace("def learning_rate_at(", "def learning_rate_at(  # edited\n", 1))
    outcomes = run_pipeline(config, instance, report=lambda _: None)
    assert _labels(outcomes, "ran") == sorted(["initial_model", "all_skeleton_pseudo_gt", "acae", "final_model",
                                               "benchmark[demo_h36m]", "benchmark[demo_smpl]"])
    assert "training_pool" in _labels(outcomes, "fresh") and "dataset[demo_h36m]" in _labels(outcomes, "fresh")


def test_changing_one_dataset_reruns_only_what_depends_on_it(pipeline):
    config, instance, raw, first = pipeline
    sequence = sorted((raw / "demo_smpl" / "sequenceFiles").glob("*/*.npz"))[0]
    with np.load(sequence) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["jointPositions"] = arrays["jointPositions"] + 0.005  # the person moved by 5 mm
    np.savez(sequence, **arrays)

    changed = run_pipeline(config, instance, report=lambda _: None)
    assert _labels(changed, "ran") == sorted(["dataset[demo_smpl]", *DOWNSTREAM_OF_ANY_TRAINING_SET])
    assert _labels(changed, "fresh") == sorted(["dataset[demo_h36m]", "dataset[demo_3dhp]", "dataset[demo_lsp2d]",
                                                "dataset[demo_multiview2d]", "pseudo_gt[demo_multiview2d]"])


def test_a_multiview_change_reaches_its_pseudo_gt(pipeline):
    config, instance, raw, first = pipeline
    detections = sorted((raw / "demo_multiview2d" / "detections").glob("*/*.json"))[0]
    detections.write_text(detections.read_text().replace('"frames"', '"frames" ', 1))
    outcomes = run_pipeline(config, instance, only={"dataset", "pseudo_gt"}, report=lambda _: None)
    assert _labels(outcomes, "ran") == ["dataset[demo_multiview2d]", "pseudo_gt[demo_multiview2d]"]


def test_a_dataset_failing_its_checks_fails_every_run_and_reaches_nothing(pipeline):
    config, instance, raw, first = pipeline
    location = config.dataset_store_path("demo_h36m")
    good_version = published_data_version(location)
    history_rows = read_history(config.benchmark_history_path).height
    deliver_h36m_in_metres(raw / "demo_h36m")

    for _ in range(2):  # not only the run that first meets the bad data
        outcomes = run_pipeline(config, instance, report=lambda _: None)
        (failed,) = [o for o in outcomes if o.status == "failed"]
        assert failed.label == "dataset[demo_h36m]"
        assert "bone_lengths" in failed.error and "metres instead of mm?" in failed.error
        assert set(_labels(outcomes, "skipped")) >= {"training_pool", "final_model", "benchmark[demo_h36m]"}
        assert published_data_version(location) == good_version  # the previous good store stays current
        assert read_history(config.benchmark_history_path).height == history_rows
