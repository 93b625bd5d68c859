from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import polars as pl

from evaluation.benchmark import HISTORY_SCHEMA, append_history, history_rows, read_history, results_markdown


def _result(value, dataset="demo_h36m"):
    return {"dataset": dataset, "skeleton": "h36m_17", "examples": 10,
            "metrics": {"mpjpe_mm": value, "pck150": 90.0}}


def test_history_appends_and_never_rewrites_old_rows(tmp_path):
    folder = tmp_path / "history"
    assert read_history(folder).is_empty() and read_history(folder).schema == pl.Schema(HISTORY_SCHEMA)
    first = history_rows(_result(80.0), "final", "abc", datetime(2026, 1, 1, tzinfo=timezone.utc))
    first_file = append_history(folder, first)
    before = first_file.read_bytes()
    second = history_rows(_result(70.0, "demo_smpl"), "final", "def")
    append_history(folder, second)
    assert first_file.read_bytes() == before  # what was written is never rewritten
    after = read_history(folder)
    assert after["value"].to_list() == [80.0, 90.0, 70.0, 90.0]  # oldest first
    assert after.schema == pl.Schema(HISTORY_SCHEMA)
    assert not list(folder.glob(".*.tmp"))


def test_concurrent_appends_lose_no_rows(tmp_path):
    folder = tmp_path / "history"
    rows = [history_rows(_result(float(i)), "final", f"m{i}") for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: append_history(folder, r), rows))
    assert sorted(read_history(folder).filter(pl.col("metric") == "mpjpe_mm")["value"].to_list()) == \
        [float(i) for i in range(8)]


def test_results_table_lists_models_and_the_baseline():
    table = results_markdown({"initial": _result(90.0), "final": _result(80.0)}, {"mpjpe_mm": 200.0})
    lines = table.splitlines()
    assert lines[2].startswith("| initial | 90.0") and lines[3].startswith("| final | 80.0")
    assert "mean pose (baseline) | 200.0" in lines[4]
