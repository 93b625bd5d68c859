import json
import shutil

import dagster as dg
import numpy as np
import pytest

from assets.quality import CHECK_NAMES
from orchestration.config import ConfigError, load_config
from orchestration.definitions import build_definitions
from pipeline_config import write_config


def _asset(defs, key):
    return defs.resolve_assets_def(key)


def _materialize_partition(defs, partition, extra_assets=(), raise_on_error=True):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset(defs, "raw_dataset"), _asset(defs, "dataset"), *extra_assets],
            selection=dg.AssetSelection.assets("dataset", *[a.key for a in extra_assets]),
            partition_key=partition, instance=instance, raise_on_error=raise_on_error)
        return result


def test_two_partitions_materialise_in_process_with_metadata_and_checks(tiny_world, tmp_path):
    config = load_config(write_config(tmp_path, tiny_world, ["demo_h36m", "demo_lsp2d"]))
    defs = build_definitions(config)
    for partition in ("demo_h36m", "demo_lsp2d"):
        result = _materialize_partition(defs, partition)
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


def test_failed_blocking_check_stops_downstream_assets(tiny_world, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_world / "demo_h36m", raw / "demo_h36m")
    # someone delivered the dataset in metres: geometry stays consistent, only the units are wrong
    for pose_file in (raw / "demo_h36m").glob("S*/poses3d/*.npy"):
        np.save(pose_file, np.load(pose_file) / 1000)
    calibration = raw / "demo_h36m" / "calibration.json"
    data = json.loads(calibration.read_text())
    for camera in data["cameras"]:
        camera["t"] = [v / 1000 for v in camera["t"]]
    calibration.write_text(json.dumps(data))

    defs = build_definitions(load_config(write_config(tmp_path, raw, ["demo_h36m"])))
    partitions = _asset(defs, "dataset").partitions_def

    @dg.asset(partitions_def=partitions, deps=["dataset"])
    def downstream():
        return None

    result = _materialize_partition(defs, "demo_h36m", [downstream], raise_on_error=False)
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert "bone_lengths" in failed
    assert not result.asset_materializations_for_node("downstream")


def test_raw_source_asset_observes_one_data_version_per_dataset(tiny_world, tmp_path):
    defs = build_definitions(load_config(write_config(tmp_path, tiny_world, ["demo_h36m", "demo_smpl"])))
    with dg.instance_for_test() as instance:
        result = dg.materialize([_asset(defs, "raw_dataset")], selection=dg.AssetSelection.assets("raw_dataset"),
                                partition_key="demo_smpl", instance=instance)
        observations = [e.event_specific_data.asset_observation for e in result.all_events
                        if e.event_type_value == "ASSET_OBSERVATION"]
    versions = {o.partition: o.tags["dagster/data_version"] for o in observations}
    assert set(versions) == {"demo_h36m", "demo_smpl"} and len(set(versions.values())) == 2


def test_partitions_come_from_the_config_file(tiny_world, tmp_path):
    defs = build_definitions(load_config(write_config(tmp_path, tiny_world, ["demo_3dhp", "demo_smpl"])))
    assert _asset(defs, "dataset").partitions_def.get_partition_keys() == ["demo_3dhp", "demo_smpl"]
    assert defs.resolve_job_def("convert_datasets") is not None


def test_config_errors_name_the_field(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("store: {root: s, image_size: 64}\ndatasets:\n  x: {converter: nope, raw: r}\n")
    with pytest.raises(ConfigError, match="datasets.x.converter.*known converters"):
        load_config(path)
    path.write_text("store: {root: s, image_size: 64}\ndatasets:\n  x: {converter: demo_h36m}\n")
    with pytest.raises(ConfigError, match="datasets.x.raw"):
        load_config(path)
