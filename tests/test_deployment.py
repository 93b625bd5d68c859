"""The path to a cluster, checked without one: the shared instance's dagster.yaml (Postgres, the queued
run coordinator, the Kubernetes run launcher) against Dagster's schemas, and the definitions with the
Kubernetes executor (dagster-k8s installed; nothing is launched)."""

import shutil
from pathlib import Path

import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import get_user_defined_k8s_config

from orchestration.config import load_config
from orchestration.definitions import build_definitions
from pipeline_config import DEMO_DATASETS, TINY_ACAE, TINY_TRAINING, write_config

DEPLOYMENT_INSTANCE = Path(__file__).resolve().parent.parent / "configs" / "deployment" / "dagster.yaml"
INSTANCE_ENV = {"DAGSTER_PG_HOST": "postgres", "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "secret",
                "DAGSTER_PG_DB": "dagster", "DOZENS_IMAGE": "registry.example/dozens:1"}


def test_the_deployment_instance_config_is_valid_for_dagster(tmp_path, monkeypatch):
    for name, value in INSTANCE_ENV.items():
        monkeypatch.setenv(name, value)
    shutil.copy(DEPLOYMENT_INSTANCE, tmp_path / "dagster.yaml")
    dagster_instance_config(str(tmp_path))  # the instance schema, Postgres fields included
    ref = InstanceRef.from_dir(str(tmp_path))  # class data only: connects to nothing
    assert ref.run_storage_data.class_name == "PostgresRunStorage"
    assert ref.event_storage_data.class_name == "PostgresEventLogStorage"
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    assert ref.settings["concurrency"]["runs"]["max_concurrent_runs"] > 0
    assert ref.run_launcher_data.class_name == "K8sRunLauncher"
    launcher_config = yaml.safe_load(ref.run_launcher_data.config_yaml)
    checked = validate_config(K8sRunLauncher.config_type(), launcher_config)
    assert checked.success, [error.message for error in checked.errors]


def test_the_definitions_load_with_the_kubernetes_executor(tiny_world, tmp_path):
    config_path = write_config(tmp_path, tiny_world, list(DEMO_DATASETS),
                               training={**TINY_TRAINING, "nproc": 2, "request_gpus": True},
                               benchmark=["demo_h36m"], acae=TINY_ACAE)
    config_path.write_text(config_path.read_text() + "executor: dagster_k8s:k8s_job_executor\n")
    defs = build_definitions(load_config(config_path))
    jobs = defs.resolve_all_job_defs()
    assert jobs and {job.executor_def.name for job in jobs} == {"k8s"}
    steps = {node.name: node for job in jobs for node in job.graph.node_defs}
    training = {"initial_model", "final_model"}
    assert {name for name, node in steps.items() if node.pool == "training"} == training
    for name, node in steps.items():
        # what the executor turns into the step pod's spec: two GPUs for the two training processes
        pod = get_user_defined_k8s_config(node.tags).container_config
        assert pod.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == ("2" if name in training else None)
