"""`dvc repro` over the real dvc.yaml: builds all, then nothing, then only the changed dataset."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline_config import write_config

PROJECT = Path(__file__).resolve().parent.parent
DVC = PROJECT / ".dvc-venv" / "bin" / "dvc"
DATASETS = ["demo_h36m", "demo_multiview2d", "demo_smpl"]

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
    for package in ("assets", "orchestration"):  # dvc.yaml's code dependencies, by relative path
        shutil.copytree(PROJECT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    raw = project / "data" / "raw"
    for name in DATASETS:
        shutil.copytree(tiny_world / name, raw / name)
    config = write_config(project, Path("data/raw"), DATASETS, image_size=32)
    text = config.read_text().replace(str(project / "stores"), "data/stores")
    config.write_text(text)
    _dvc(project, "init", "--no-scm", "-q")

    first = _dvc(project, "repro")
    assert _ran_stages(first) == [f"dataset@{n}" for n in DATASETS] + ["pseudo_gt@demo_multiview2d"]
    assert all((project / "data" / "stores" / "dataset" / f"{n}.zarr" / "zarr.json").exists() for n in DATASETS)

    second = _dvc(project, "repro")
    assert _ran_stages(second) == []

    sequence = sorted((raw / "demo_smpl" / "sequenceFiles").glob("*/*.npz"))[0]
    with np.load(sequence) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["jointPositions"] = arrays["jointPositions"] + 0.01  # move the person by 1 cm
    np.savez(sequence, **arrays)
    assert "dataset@demo_smpl" in _dvc(project, "status")
    third = _dvc(project, "repro")
    assert _ran_stages(third) == ["dataset@demo_smpl"]

    # a multi-view dataset's change re-runs its conversion and, downstream, its pseudo-GT
    detections = sorted((raw / "demo_multiview2d" / "detections").glob("*/*.json"))[0]
    detections.write_text(detections.read_text().replace('"frames"', '"frames" ', 1))
    fourth = _dvc(project, "repro")
    assert _ran_stages(fourth) == ["dataset@demo_multiview2d", "pseudo_gt@demo_multiview2d"]
