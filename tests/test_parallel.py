"""Parallel runs: the stale partitions of a stage as separate Dagster runs in worker processes."""

import shutil

import dagster as dg
import numpy as np

from assets.store import open_store
from orchestration.config import load_config
from orchestration.freshness import latest_data_version
from orchestration.runner import run_pipeline
from pipeline_config import DEMO_DATASETS, write_config


def _world(tiny_world, folder, names):
    raw = folder / "raw"
    for name in names:
        shutil.copytree(tiny_world / name, raw / name)
    return load_config(write_config(folder, raw, list(names)))


def _overlapping(records) -> bool:
    spans = sorted((r.start_time, r.end_time) for r in records)
    return any(later_start < earlier_end for (_, earlier_end), (later_start, _) in zip(spans, spans[1:]))


def test_two_jobs_overlap_and_give_the_same_versions_as_one(tiny_world, tmp_path):
    names = ["demo_h36m", "demo_3dhp", "demo_smpl", "demo_lsp2d"]
    parallel, serial = _world(tiny_world, tmp_path / "parallel", names), _world(tiny_world, tmp_path / "serial", names)
    with dg.DagsterInstance.ephemeral() as one, dg.instance_for_test() as two:
        assert all(o.status == "ran" for o in run_pipeline(parallel, two, jobs=2, report=lambda _: None))
        assert all(o.status == "ran" for o in run_pipeline(serial, one, jobs=1, report=lambda _: None))
        assert _overlapping([r for r in two.get_run_records() if r.dagster_run.is_success])
        assert not _overlapping(one.get_run_records())
        for name in names:
            assert latest_data_version(two, "dataset", name) == latest_data_version(one, "dataset", name)
            np.testing.assert_array_equal(open_store(parallel.dataset_store_path(name)).load("pose2d"),
                                          open_store(serial.dataset_store_path(name)).load("pose2d"))


def test_a_failed_partition_stops_only_what_reads_it(tiny_world, tmp_path):
    config = _world(tiny_world, tmp_path, DEMO_DATASETS)
    for calibration in config.datasets["demo_multiview2d"].raw.glob("calibration_*.json"):
        calibration.write_text("{broken")
    with dg.instance_for_test() as instance:  # a fresh SQLite instance: five runs, three at a time
        outcomes = run_pipeline(config, instance, jobs=3, report=lambda _: None)
        status = {o.label: o.status for o in outcomes}
        assert status.pop("dataset[demo_multiview2d]") == "failed"
        assert status.pop("pseudo_gt[demo_multiview2d]") == "skipped"
        assert set(status.values()) == {"ran"} and len(status) == len(DEMO_DATASETS) - 1
        assert all(r.dagster_run.is_success or "demo_multiview2d" in str(r.dagster_run.tags)
                   for r in instance.get_run_records())
