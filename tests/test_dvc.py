"""DVC over the real dvc.yaml (every stage, on a tiny world in a git repository), with cached outputs:

- after `dozens` has built everything, DVC finds nothing to do, and the reverse;
- `dvc exp run -S` with another training mode re-runs exactly what reads it through the same Dagster
  assets, `dvc exp show` lists it, `dvc metrics diff` and `dvc plots diff` show its effect, and checking
  out the previous revision's lock file brings back that revision's stores and models byte for byte,
  which Dagster then records as current (nothing to run);
- `dvc push`, then `dvc pull` into a fresh clone (a local and an S3 remote) restores every artifact, and
  `dozens` then has nothing to run.

The tests of this module share one project and run in order."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.versions import stamped_data_version
from orchestration.config import load_config
from orchestration.definitions import build_definitions
from orchestration.dvc_file import dvc_yaml_text
from orchestration.dvc_record import commit_to_dvc
from orchestration.freshness import latest_data_version
from orchestration.runner import materialize_step, observe_and_plan, run_pipeline
from orchestration.stages import DEMO_WORLD_STAGE, every_step
from pipeline_config import TINY_ACAE, TINY_TRAINING, write_config

PROJECT = Path(__file__).resolve().parent.parent
DVC = PROJECT / ".dvc-venv" / "bin" / "dvc"
DATASETS = ["demo_h36m", "demo_lsp2d", "demo_multiview2d", "demo_smpl"]
TRAINING_STAGES = ["acae", "all_skeleton_pseudo_gt", "final_model", "initial_model", "training_pool"]
TRACKED = ("data/raw", "data/stores/dataset", "data/stores/pseudo_gt", "data/stores/all_skeleton_pseudo_gt",
           "data/models", "data/benchmarks/latest", "data/benchmarks/metrics", "data/benchmarks/pck")

pytestmark = pytest.mark.skipif(not DVC.exists(), reason="DVC lives in .dvc-venv; create it with `make setup`")


def _run(cwd, *command, extra_env=None):
    env = {"PATH": f"{PROJECT / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(cwd), "DVC_NO_ANALYTICS": "1",
           "GX_ANALYTICS_ENABLED": "false", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org",
           **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}, **(extra_env or {})}
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _dvc(cwd, *args):
    return _run(cwd, DVC, *args)


def _git(cwd, *args):
    return _run(cwd, "git", *args)


def _ran_stages(output):
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


def _contents(project) -> dict[str, str]:
    """sha256 of every file DVC tracks, by path."""
    return {file.relative_to(project).as_posix(): hashlib.sha256(file.read_bytes()).hexdigest()
            for folder in TRACKED for file in sorted((project / folder).rglob("*")) if file.is_file()}


def _stale_in_dagster(project) -> list:
    """The steps Dagster's own staleness (the UI's "stale" markers) does not call fresh."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    config = load_config(project / "params.yaml")
    graph = build_definitions(config).resolve_asset_graph()
    with dg.DagsterInstance.local_temp(str(project / ".dagster_home")) as instance:
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        return [(asset, partition) for asset, partition in every_step(config)
                if resolver.get_status(dg.AssetKey(asset), partition) != StaleStatus.FRESH]


def _plan(project):
    """What `dozens demo` would run, with the project's Dagster instance (it records restored outputs first)."""
    with dg.DagsterInstance.local_temp(str(project / ".dagster_home")) as instance:
        return observe_and_plan(load_config(project / "params.yaml"), instance)


@pytest.fixture(scope="module")
def project(tiny_world, tmp_path_factory):
    """A git + DVC project that `dozens` has built and DVC has recorded (as `dozens demo` does)."""
    project = tmp_path_factory.mktemp("dvc") / "project"
    project.mkdir()
    for package in ("assets", "orchestration", "model", "evaluation"):  # dvc.yaml's code deps, by relative path
        shutil.copytree(PROJECT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in DATASETS:
        shutil.copytree(tiny_world / name, project / "data" / "raw" / name)
    config = write_config(project, Path("data/raw"), DATASETS, image_size=64, training=TINY_TRAINING,
                          benchmark=["demo_h36m"], acae=TINY_ACAE)
    config.write_text(config.read_text().replace(str(project / "stores"), "data/stores"))
    (project / "dvc.yaml").write_text(dvc_yaml_text(load_config(config)))
    (project / ".gitignore").write_text("/data/\n/.dagster_home/\n__pycache__/\n")
    _git(project, "init", "-q")
    _dvc(project, "init", "-q")
    shutil.copy(PROJECT / ".dvc" / "config", project / ".dvc" / "config")  # the project's cache link types
    shutil.copy(PROJECT / ".dvcignore", project / ".dvcignore")

    (project / ".dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(project / ".dagster_home")) as instance:
        built = run_pipeline(load_config(config), instance, report=lambda _: None)
    ran = [(o.asset, o.partition) for o in built if o.status == "ran"]
    assert sorted(o.label for o in built if o.status == "ran") == sorted(
        [f"dataset[{n}]" for n in DATASETS] + ["pseudo_gt[demo_multiview2d]", "benchmark[demo_h36m]",
                                               *TRAINING_STAGES])
    assert commit_to_dvc(load_config(config), [(DEMO_WORLD_STAGE, None), *ran], report=lambda _: None)
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "built by dozens")
    return project


def test_after_dozens_runs_dvc_finds_nothing_to_do_and_sees_code_edits_as_dozens_does(project):
    assert "up to date" in _dvc(project, "status")
    assert _ran_stages(_dvc(project, "repro")) == []
    assert _plan(project) == []
    assert _stale_in_dagster(project) == []
    # the cache holds every output, linked (not copied) into the workspace
    store_file = next((project / "data" / "stores" / "dataset" / "demo_h36m").rglob("zarr.json"))
    assert store_file.stat().st_nlink > 1 or store_file.is_symlink()

    # a code edit: DVC finds the same stages stale as dozens' code versions (tests/test_stages.py)
    training = project / "model" / "training.py"
    original = training.read_text()
    training.write_text(original.replace("def learning_rate_at(", "def learning_rate_at(  # edited\n", 1))
    stale = _dvc(project, "status")
    training.write_text(original)
    stale_stages = sorted(line.rstrip(":").strip() for line in stale.splitlines()
                          if line.strip().endswith(":") and not line.startswith((" ", "\t")))
    assert stale_stages == ["final_model", "initial_model"], stale


def test_an_experiment_with_another_mode_then_a_checkout_of_the_previous_revision(project):
    before = _contents(project)
    with dg.DagsterInstance.local_temp(str(project / ".dagster_home")) as instance:
        final_before = latest_data_version(instance, "final_model")

    # `dvc exp run -S` changes params.yaml and runs the stages that read it through the same Dagster assets
    output = _dvc(project, "exp", "run", "-S", "training.final.mode=latent", "-n", "latent")
    assert _ran_stages(output) == ["benchmark@demo_h36m", "final_model"]
    assert _plan(project) == []  # dozens agrees: nothing left to do
    with dg.DagsterInstance.local_temp(str(project / ".dagster_home")) as instance:
        record = instance.fetch_materializations(dg.AssetKey("final_model"), limit=1).records[0]
        assert record.asset_materialization.metadata["mode"].value == "latent"
    experiments = json.loads(_dvc(project, "exp", "show", "--json"))
    latent = [run for commit in experiments for exp in (commit.get("experiments") or []) for run in exp["revs"]
              if run.get("name") == "latent"]
    assert latent, experiments
    assert latent[0]["data"]["params"]["params.yaml"]["data"]["training"]["final"]["mode"] == "latent"
    assert "final" in latent[0]["data"]["metrics"]["data/benchmarks/metrics/demo_h36m.json"]["data"]
    _git(project, "commit", "-qam", "latent mode")

    # the parameter's effect, the DVC way
    scores = json.loads(_dvc(project, "metrics", "diff", "HEAD~1", "--json"))["data/benchmarks/metrics/demo_h36m.json"]
    assert scores["final.mpjpe_mm"]["diff"] != 0 and "initial.mpjpe_mm" not in scores
    plots = json.loads(_dvc(project, "plots", "diff", "HEAD~1", "--json"))["data"]
    for curve in ("data/benchmarks/pck/demo_h36m.json", "data/models/final/history.json"):
        assert plots[curve][0]["revisions"] == ["workspace", "HEAD~1"], curve

    # the previous revision's lock file and parameters, and its artifacts from the DVC cache
    _git(project, "checkout", "HEAD~1", "--", "dvc.lock", "params.yaml")
    _dvc(project, "checkout")
    assert _contents(project) == before
    assert _plan(project) == []
    assert _stale_in_dagster(project) == []  # the UI agrees
    with dg.DagsterInstance.local_temp(str(project / ".dagster_home")) as instance:
        assert latest_data_version(instance, "final_model") == final_before
        record = instance.fetch_materializations(dg.AssetKey("final_model"), limit=1).records[0]
        assert "restored" in record.asset_materialization.metadata

    _git(project, "checkout", "HEAD", "--", "dvc.lock", "params.yaml")
    _dvc(project, "checkout")
    assert _plan(project) == []


@pytest.mark.parametrize("remote", ["local", "s3"])
def test_push_then_pull_into_a_fresh_clone_restores_every_artifact(project, remote, tmp_path, request):
    name = f"{remote}_remote"
    if remote == "local":
        _dvc(project, "remote", "add", "-f", name, tmp_path / "remote")
    else:
        from object_store import fresh_prefix

        endpoint = request.getfixturevalue("s3_endpoint")
        _dvc(project, "remote", "add", "-f", name, fresh_prefix("dvc-remote"))
        _dvc(project, "remote", "modify", name, "endpointurl", endpoint)
    _dvc(project, "push", "-r", name)
    _git(project, "commit", "-qam", f"the {remote} remote")

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", project, clone)
    _dvc(clone, "pull", "-r", name)
    assert _contents(clone) == _contents(project)
    (clone / ".dagster_home").mkdir()
    if remote == "local":
        # a stage run in the clone first records the versions of its inputs that DVC restored, so it
        # computes the data version the original run did
        pulled = stamped_data_version(clone / "data/benchmarks/latest/demo_h36m.json")
        with dg.DagsterInstance.local_temp(str(clone / ".dagster_home")) as instance:
            step = materialize_step(load_config(clone / "params.yaml"), instance, "benchmark", "demo_h36m")
        assert step.status == "ran", step.error
        assert stamped_data_version(clone / "data/benchmarks/latest/demo_h36m.json") == pulled
        _dvc(clone, "commit", "-f", "benchmark@demo_h36m")
    assert _plan(clone) == []  # a fresh Dagster instance learns every version from what DVC restored
    assert _stale_in_dagster(clone) == []
    assert "up to date" in _dvc(clone, "status")
