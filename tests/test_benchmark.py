from datetime import datetime, timezone

import polars as pl

from evaluation.benchmark import HISTORY_SCHEMA, append_history, history_rows, results_markdown


def _result(value, dataset="demo_h36m"):
    return {"dataset": dataset, "skeleton": "h36m_17", "examples": 10,
            "metrics": {"mpjpe_mm": value, "pck150": 90.0}}


def test_history_appends_and_never_rewrites_old_rows(tmp_path):
    path = tmp_path / "history.parquet"
    first = history_rows(_result(80.0), "final", "abc", datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert append_history(path, first) == 2
    before = pl.read_parquet(path)
    second = history_rows(_result(70.0, "demo_smpl"), "final", "def")
    assert append_history(path, second) == 4
    after = pl.read_parquet(path)
    assert after.head(2).equals(before)  # old rows byte-for-byte the same, in the same order
    assert after["value"].to_list() == [80.0, 90.0, 70.0, 90.0]
    assert after.schema == pl.Schema(HISTORY_SCHEMA)
    assert not list(tmp_path.glob(".*.tmp"))


def test_results_table_lists_models_and_the_baseline():
    table = results_markdown({"initial": _result(90.0), "final": _result(80.0)}, {"mpjpe_mm": 200.0})
    lines = table.splitlines()
    assert lines[2].startswith("| initial | 90.0") and lines[3].startswith("| final | 80.0")
    assert "mean pose (baseline) | 200.0" in lines[4]
