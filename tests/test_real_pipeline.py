"""The real converters of parts 1 and 2 in one pipeline run: each small release tree (written in its real
layout by its converter's tests) is converted and checked, the 3D and 2D-only datasets train one model
together, and the model then has an output for every trained format; configs/real.yaml names them all."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

import test_3dpw
import test_aspset
import test_coco
import test_h36m
import test_mpi_inf_3dhp
import test_mpii
import test_panoptic
from assets.converters import CONVERTERS, get_converter
from model.estimator import PoseEstimator
from orchestration.config import load_config
from orchestration.runner import run_pipeline
from orchestration.stages import REAL_RECORDINGS
from pipeline_config import TINY_ACAE

PROJECT = Path(__file__).resolve().parent.parent
TRAINING_3D = {"h36m": 2, "mpi_inf_3dhp": 2, "panoptic": 2, "aspset": 2}
TRAINING_2D = {"coco": 2, "mpii": 2}


def write_release_trees(root: Path) -> dict[str, Path]:
    trees = {"h36m": test_h36m.build_raw(root / "h36m"),
             "3dpw": test_3dpw.write_raw_tree(root / "3dpw"),
             "panoptic": test_panoptic.write_raw_tree(root / "panoptic"),
             "aspset": test_aspset.build_raw(root / "aspset", frames=True, videos=False),
             "coco": test_coco.write_raw_tree(root / "coco"),
             "mpii": test_mpii.write_raw_tree(root / "mpii")}
    test_mpi_inf_3dhp.write_sequence(root / "mpi_inf_3dhp", "S1", "Seq1", seed=1, videos=[0, 2])
    trees["mpi_inf_3dhp"] = root / "mpi_inf_3dhp"
    return trees


@pytest.fixture(scope="module")
def real_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real_pipeline")
    trees = write_release_trees(folder / "raw")
    settings = {
        "store": {"root": str(folder / "stores"), "image_size": 64},
        "datasets": {name: {"converter": name, "raw": str(path)} for name, path in trees.items()},
        "training": {"batch_3d": TRAINING_3D, "batch_2d": TRAINING_2D, "workers": 0, "checkpoint_every": 2,
                     "backbone": "small_cnn", "image_size": 64, "stride": 16,
                     "initial": {"steps": 3, "learning_rate": 0.002},
                     "final": {"steps": 2, "learning_rate": 0.001, "mode": "consistency"}},
        "acae": TINY_ACAE,
        "benchmark": {"datasets": ["h36m"]},
    }
    settings["datasets"]["mpi_inf_3dhp"]["cameras"] = ["0", "2"]
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(settings))
    config = load_config(path)
    with dg.DagsterInstance.ephemeral() as instance:
        yield config, run_pipeline(config, instance, report=lambda _: None)


def test_every_real_converter_and_the_training_chain_run_in_one_pipeline(real_pipeline):
    config, outcomes = real_pipeline
    failures = {o.label: o.error for o in outcomes if o.status != "ran"}
    assert failures == {}
    ran = {o.label for o in outcomes}
    assert {f"dataset[{name}]" for name in config.datasets} <= ran
    assert {"initial_model", "acae", "final_model", "benchmark[h36m]"} <= ran
    # every conversion passed its blocking checks (they gate publication)
    assert all(o.checks and not o.failed_checks for o in outcomes if o.asset == "dataset")


def test_the_model_outputs_every_trained_format_including_the_2d_only_ones(real_pipeline):
    config, _ = real_pipeline
    model = PoseEstimator.load(config.models_root / "final" / "model.pt")
    trained = {get_converter(name).SKELETON for name in [*TRAINING_3D, *TRAINING_2D]}
    assert trained == {"h36m_25", "mpi_inf_3dhp_28", "coco_19", "aspset_17", "coco_17", "mpii_16"}
    assert trained <= set(model.skeletons())


def test_the_example_config_of_real_releases_names_every_real_converter():
    config = load_config(PROJECT / "configs" / "real.yaml")
    real = {name for name in CONVERTERS if not name.startswith("demo_") and name not in REAL_RECORDINGS}
    assert {entry.converter for entry in config.datasets.values()} == real
    trained = set(config.training.batch_3d) | set(config.training.batch_2d)
    assert {"coco", "mpii"} <= set(config.training.batch_2d) and trained <= set(config.datasets)
