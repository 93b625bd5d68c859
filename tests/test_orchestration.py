import shutil
from datetime import datetime, timezone

import dagster as dg
import pytest

from assets.quality import CHECK_NAMES
from orchestration.config import ConfigError, load_config
from orchestration.asset_graph import (RAW_SOURCE, latest_observed_version as observed_version, observe_sources,
                                      source_assets, source_versions)
from orchestration.dataset_assets import build_dataset_assets
from orchestration.definitions import build_definitions
from orchestration.runner import failure_message
from assets.versions import read_pointer
from pipeline_config import DEMO_DATASETS, TINY_TRAINING, deliver_h36m_in_metres, write_config


def _materialize_partition(config, partition, extra_assets=(), raise_on_error=True):
    _, dataset_defs = build_dataset_assets(config)
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [*dataset_defs, *extra_assets],
            selection=dg.AssetSelection.assets("dataset", *[a.key for a in extra_assets]),
            partition_key=partition, instance=instance, raise_on_error=raise_on_error)


def test_two_partitions_materialise_in_process_with_metadata_and_checks(tiny_world, tmp_path):
    config = load_config(write_config(tmp_path, tiny_world, ["demo_h36m", "demo_lsp2d"]))
    for partition in ("demo_h36m", "demo_lsp2d"):
        result = _materialize_partition(config, partition)
        assert result.success
        (materialization,) = result.asset_materializations_for_node("dataset")
        assert materialization.partition == partition
        metadata = materialization.metadata
        assert metadata["examples"].value > 0
        assert metadata["joints"].value == {"demo_h36m": 17, "demo_lsp2d": 14}[partition]
        assert metadata["preview"].value.startswith("![preview](data:image/png;base64,")
        assert "| train |" in metadata["examples_per_split"].value
        evaluations = result.get_asset_check_evaluations()
        assert sorted(e.check_name for e in evaluations) == sorted(CHECK_NAMES)
        assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations if not e.passed]
        assert config.dataset_store_path(partition).exists()


def test_pseudo_gt_partition_triangulates_the_converted_dataset(tiny_world, tmp_path):
    config = load_config(write_config(tmp_path, tiny_world, ["demo_h36m", "demo_multiview2d"]))
    defs = build_definitions(config)
    assert defs.resolve_assets_def("pseudo_gt").partitions_def.get_partition_keys() == ["demo_multiview2d"]
    with dg.DagsterInstance.ephemeral() as instance:
        for job in ("convert_datasets", "triangulate_pseudo_gt"):
            result = defs.resolve_job_def(job).execute_in_process(partition_key="demo_multiview2d", instance=instance)
            assert result.success
            assert all(e.passed for e in result.get_asset_check_evaluations())
    (materialization,) = result.asset_materializations_for_node("pseudo_gt")
    assert materialization.metadata["joints_triangulated_fraction"].value > 0.5
    assert "| inlier views | joints |" in materialization.metadata["inlier_view_histogram"].value
    assert config.training_store_path("demo_multiview2d") == config.pseudo_gt_store_path("demo_multiview2d")
    assert config.pseudo_gt_store_path("demo_multiview2d").exists()


def test_failed_blocking_check_stops_downstream_assets(tiny_world, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_world / "demo_h36m", raw / "demo_h36m")
    deliver_h36m_in_metres(raw / "demo_h36m")

    config = load_config(write_config(tmp_path, raw, ["demo_h36m"]))
    partitions, _ = build_dataset_assets(config)

    @dg.asset(partitions_def=partitions, deps=["dataset"])
    def downstream():
        return None

    result = _materialize_partition(config, "demo_h36m", [downstream], raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "blocking checks failed" in message and "bone_lengths" in message and "metres instead of mm?" in message
    assert not result.asset_materializations_for_node("dataset")
    assert not result.asset_materializations_for_node("downstream")
    # the refused version was discarded before anything could read it
    assert read_pointer(config.dataset_store_path("demo_h36m")) is None
    assert not list(config.dataset_store_path("demo_h36m").glob("*.zarr"))


def test_raw_source_asset_versions_change_only_for_the_edited_dataset(tiny_world, tmp_path):
    raw = tmp_path / "raw"
    for name in ("demo_h36m", "demo_smpl"):
        shutil.copytree(tiny_world / name, raw / name)
    config = load_config(write_config(tmp_path, raw, ["demo_h36m", "demo_smpl"]))
    raw_dataset = source_assets(config)[0]
    assert raw_dataset.is_observable and raw_dataset.partitions_def.get_partition_keys() == ["demo_h36m", "demo_smpl"]
    before = source_versions(config)[RAW_SOURCE]
    (raw / "demo_smpl" / "notes.txt").write_text("a new file in one raw folder")
    after = source_versions(config)[RAW_SOURCE]
    assert after["demo_h36m"] == before["demo_h36m"] and after["demo_smpl"] != before["demo_smpl"]


def test_partitions_come_from_the_config_file(tiny_world, tmp_path):
    defs = build_definitions(load_config(write_config(tmp_path, tiny_world, ["demo_3dhp", "demo_smpl"])))
    assert defs.resolve_assets_def("dataset").partitions_def.get_partition_keys() == ["demo_3dhp", "demo_smpl"]
    assert defs.resolve_job_def("convert_datasets").partitions_def is not None


def test_config_errors_name_the_field(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("store: {root: s, image_size: 64}\ndatasets:\n  x: {converter: nope, raw: r}\n")
    with pytest.raises(ConfigError, match="datasets.x.converter.*known converters"):
        load_config(path)
    path.write_text("store: {root: s, image_size: 64}\ndatasets:\n  x: {converter: demo_h36m}\n")
    with pytest.raises(ConfigError, match="datasets.x.raw"):
        load_config(path)


def test_schedule_requests_every_benchmark(tiny_world, tmp_path):
    config = load_config(write_config(tmp_path, tiny_world, list(DEMO_DATASETS), training=TINY_TRAINING,
                                      benchmark=["demo_h36m", "demo_smpl"]))
    defs = build_definitions(config)
    schedule = defs.resolve_schedule_def("rebenchmark_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                            scheduled_execution_time=datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc))
        requests = list(schedule.evaluate_tick(context).run_requests)
    assert sorted(r.partition_key for r in requests) == ["demo_h36m", "demo_smpl"]
    assert all(r.job_name in (None, "benchmark_models") for r in requests)


def test_sensor_observes_new_and_changed_raw_datasets_and_settings(tiny_world, tmp_path):
    raw = tmp_path / "raw"
    for name in ("demo_h36m", "demo_multiview2d"):
        shutil.copytree(tiny_world / name, raw / name)
    names = ["demo_h36m", "demo_multiview2d", "demo_lsp2d"]
    config = load_config(write_config(tmp_path, raw, names))
    sensor = build_definitions(config).resolve_sensor_def("source_observation_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
        def tick():
            sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
            return {(s, p): observed_version(instance, s, p) for s, versions in source_versions(config).items()
                    for p in versions}

        first = tick()
        assert set(first) == {*((RAW_SOURCE, n) for n in names), *(("dataset_settings", n) for n in names),
                              ("pseudo_gt_settings", "demo_multiview2d")}
        assert first[(RAW_SOURCE, "demo_lsp2d")] == "missing"
        assert observe_sources(config, instance) == []  # nothing changed: nothing recorded again
        (raw / "demo_multiview2d" / "extra.txt").write_text("changed")
        shutil.copytree(tiny_world / "demo_lsp2d", raw / "demo_lsp2d")
        changed = {key for key, version in tick().items() if version != first[key]}
        assert changed == {(RAW_SOURCE, "demo_multiview2d"), (RAW_SOURCE, "demo_lsp2d")}


def test_dry_run_lists_the_stale_steps_and_builds_nothing(tiny_world, tmp_path, monkeypatch, capsys):
    from orchestration.cli import main

    config_path = write_config(tmp_path, tiny_world, ["demo_h36m", "demo_multiview2d"])
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert main(["--config", str(config_path), "convert", "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["would run dataset[demo_h36m]", "would run dataset[demo_multiview2d]",
                       "would run pseudo_gt[demo_multiview2d]", "3 steps would run"]
    assert not (tmp_path / "stores" / "dataset").exists() and not (tmp_path / "stores" / "pseudo_gt").exists()
