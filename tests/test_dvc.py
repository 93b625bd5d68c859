"""`dvc repro` over the real dvc.yaml (every stage, on a tiny world): after `dozens demo` has built
everything and `dvc commit` has recorded it, DVC finds nothing to do; a changed dataset re-runs exactly what
depends on it, through DVC's own stage commands; then `dozens` finds nothing to do either."""

import shutil
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from orchestration.config import load_config
from orchestration.runner import plan_pipeline, run_pipeline
from pipeline_config import TINY_ACAE, TINY_TRAINING, write_config

PROJECT = Path(__file__).resolve().parent.parent
DVC = PROJECT / ".dvc-venv" / "bin" / "dvc"
DATASETS = ["demo_h36m", "demo_lsp2d", "demo_multiview2d", "demo_smpl"]
TRAINING_STAGES = ["acae", "all_skeleton_pseudo_gt", "final_model", "initial_model", "training_pool"]

pytestmark = pytest.mark.skipif(not DVC.exists(), reason="DVC lives in .dvc-venv; create it with `make setup`")


def _dvc(cwd, *args):
    env = {"PATH": f"{PROJECT / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(cwd), "DVC_NO_ANALYTICS": "1",
           "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([str(DVC), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _ran_stages(output):
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


def test_dvc_repro_recomputes_only_the_changed_dataset(tiny_world, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT / "dvc.yaml", project)
    for package in ("assets", "orchestration", "model", "evaluation"):  # dvc.yaml's code deps, by relative path
        shutil.copytree(PROJECT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    raw = project / "data" / "raw"
    for name in DATASETS:
        shutil.copytree(tiny_world / name, raw / name)
    config = write_config(project, Path("data/raw"), DATASETS, image_size=64, training=TINY_TRAINING,
                          benchmark=["demo_h36m"], acae=TINY_ACAE)
    text = config.read_text().replace(str(project / "stores"), "data/stores")
    config.write_text(text)
    _dvc(project, "init", "--no-scm", "-q")

    # the same Dagster instance as dvc.yaml's stages use (DAGSTER_HOME=<project>/.dagster_home)
    (project / ".dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(project / ".dagster_home")) as instance:
        built = run_pipeline(load_config(config), instance, report=lambda _: None)
    assert sorted(o.label for o in built if o.status == "ran") == sorted(
        [f"dataset[{n}]" for n in DATASETS] + ["pseudo_gt[demo_multiview2d]", "benchmark[demo_h36m]",
                                               *TRAINING_STAGES])
    assert all((project / "data" / "stores" / "dataset" / n / "current.json").exists() for n in DATASETS)

    _dvc(project, "commit", "-f")  # DVC records what dozens built: the same outputs its stages would make
    assert _ran_stages(_dvc(project, "repro")) == []

    sequence = sorted((raw / "demo_smpl" / "sequenceFiles").glob("*/*.npz"))[0]
    with np.load(sequence) as data:
        arrays = {k: data[k] for k in data.files}
    # the person moves by 20 cm and an image changes: enough to change even a 4-step model's weights
    # (DVC compares outputs, and Adam's first steps barely depend on the size of a gradient)
    arrays["jointPositions"] = arrays["jointPositions"] + 0.2
    np.savez(sequence, **arrays)
    image = sorted((raw / "demo_smpl" / "imageFiles").glob("*/*.jpg"))[0]
    Image.fromarray(255 - np.asarray(Image.open(image))).save(image)
    assert "dataset@demo_smpl" in _dvc(project, "status")
    third = _dvc(project, "repro")
    assert _ran_stages(third) == sorted(["dataset@demo_smpl", "benchmark@demo_h36m", *TRAINING_STAGES])
    with dg.DagsterInstance.local_temp(str(project / ".dagster_home")) as instance:
        assert plan_pipeline(load_config(config), instance) == []  # dozens agrees: nothing left to do

    # a code edit: DVC finds the same stages stale as dozens' code versions (tests/test_stages.py)
    training = project / "model" / "training.py"
    training.write_text(training.read_text().replace("def learning_rate_at(", "def learning_rate_at(  # edited\n", 1))
    stale = _dvc(project, "status")
    stale_stages = sorted(line.rstrip(":").strip() for line in stale.splitlines()
                          if line.strip().endswith(":") and not line.startswith((" ", "\t")))
    assert stale_stages == ["final_model", "initial_model"], stale
