"""The stage table is the one description of the pipeline: Dagster, the runner, the signatures and dvc.yaml
follow from it, and a stage's code version follows the source it runs."""

import dagster as dg
import pytest

from orchestration import code_versions
from orchestration.config import load_config
from orchestration.definitions import build_definitions
from orchestration.dvc_file import DVC_FILE, dvc_yaml_text
from orchestration.stages import STAGES, code_files, converter_file, partitions, pipeline_steps, stage_code_version
from pipeline_config import DEMO_DATASETS, TINY_ACAE, TINY_TRAINING, write_config

PROJECT = code_versions.PROJECT_ROOT


@pytest.fixture
def full_config(tiny_world, tmp_path):
    return load_config(write_config(tmp_path, tiny_world, list(DEMO_DATASETS), training=TINY_TRAINING,
                                    benchmark=["demo_h36m", "demo_multiview2d"], acae=TINY_ACAE))


def test_dvc_yaml_is_the_one_the_stage_table_writes():
    assert DVC_FILE.read_text() == dvc_yaml_text(load_config(PROJECT / "params.yaml")), \
        "dvc.yaml is out of date: run .venv/bin/python -m orchestration.dvc_file"


def test_dagster_dependencies_are_the_stage_tables_partition_by_partition(full_config):
    graph = build_definitions(full_config).resolve_asset_graph()
    sources = {"raw_dataset", "dataset_settings", "pseudo_gt_settings"}
    for name, stage in STAGES.items():
        for p in partitions(full_config, stage):
            table = set(stage.inputs(full_config, p))
            parents = graph.get_parents_partitions(dg.AssetKey(name), p)
            assert not parents.required_but_nonexistent_parents_partitions, (name, p)
            dagster = {(parent.asset_key.to_user_string(), parent.partition_key) for parent in parents.parent_partitions}
            assert {(a, q) for a, q in dagster if a not in sources} == table, (name, p)
    assert {key.to_user_string() for key in graph.get(dg.AssetKey("dataset")).parent_keys} == {
        "raw_dataset", "dataset_settings"}
    assert {key.to_user_string() for key in graph.get(dg.AssetKey("pseudo_gt")).parent_keys} == {
        "dataset", "pseudo_gt_settings"}


def test_the_runner_follows_the_table_in_dependency_order(full_config):
    steps = [name for name, _ in pipeline_steps(full_config)]
    assert steps == list(STAGES)
    for position, name in enumerate(steps):
        upstream = {u for p in partitions(full_config, STAGES[name]) for u, _ in STAGES[name].inputs(full_config, p)}
        assert upstream <= set(steps[:position]), name


def test_every_converter_module_is_named_after_its_converter():
    from assets.converters import CONVERTERS

    for name, module in CONVERTERS.items():
        assert module == f"assets.converters.{name}" and (PROJECT / converter_file(name)).is_file()


def _versions(config):
    return {(name, p): stage_code_version(config, name, p) for name, stage in STAGES.items()
            for p in partitions(config, stage)}


def test_editing_training_code_changes_exactly_the_training_stages(full_config, project_copy):
    before = _versions(full_config)
    training = project_copy / "model" / "training.py"
    training.write_text(training.read_text().replace("def learning_rate_at(", "def learning_rate_at(  # edited\n", 1))
    after = _versions(full_config)
    changed = sorted({name for key, version in after.items() if version != before[key] for name in [key[0]]})
    assert changed == ["final_model", "initial_model"]  # what follows re-runs through its inputs' versions


def test_editing_one_converter_changes_only_its_datasets(full_config, project_copy):
    before = _versions(full_config)
    converter = project_copy / "assets" / "converters" / "demo_smpl.py"
    converter.write_text(converter.read_text() + "\n# a comment counts too: the bytes are hashed, as DVC does\n")
    after = _versions(full_config)
    assert [key for key in after if after[key] != before[key]] == [("dataset", "demo_smpl")]


def test_every_stage_names_code_that_exists():
    for name in STAGES:
        files = code_files(name)
        assert files and all((PROJECT / f).is_file() for f in files), name


@pytest.mark.parametrize("executor", ["in_process", "multiprocess", "dagster:multiprocess_executor"])
def test_the_executor_comes_from_the_config_and_validates(tiny_world, tmp_path, executor):
    import os
    import subprocess

    config_path = write_config(tmp_path, tiny_world, list(DEMO_DATASETS), training=TINY_TRAINING,
                               benchmark=["demo_h36m"], acae=TINY_ACAE)
    config_path.write_text(config_path.read_text() + f"executor: '{executor}'\n")
    defs = build_definitions(load_config(config_path))
    assert {job.executor_def.name for job in defs.resolve_all_job_defs()} == {executor.rpartition(":")[2]
                                                                             .removesuffix("_executor")}
    (tmp_path / "dagster_home").mkdir()
    dagster = PROJECT / ".venv" / "bin" / "dagster"
    done = subprocess.run([str(dagster) if dagster.exists() else "dagster", "definitions", "validate",
                           "-m", "orchestration.definitions"], cwd=PROJECT, capture_output=True, text=True,
                          env={**os.environ, "DOZENS_CONFIG": str(config_path),
                               "DAGSTER_HOME": str(tmp_path / "dagster_home")}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_unknown_executor_is_a_config_error(tiny_world, tmp_path):
    from orchestration.config import ConfigError

    config_path = write_config(tmp_path, tiny_world, ["demo_h36m"])
    config_path.write_text(config_path.read_text() + "executor: 'nowhere:executor'\n")
    with pytest.raises(ConfigError, match="field 'executor' is 'nowhere:executor'"):
        build_definitions(load_config(config_path))
