"""What a user sees when things go wrong: damaged stores, failed steps, a broken Dagster instance, concurrent
writers and readers, interrupted folder swaps."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from assets.converters import get_converter
from assets.converters.common import convert
from assets.folder_swap import staging_path, swap_into_place
from assets.store import StoreCorruptionError, open_store, write_store
from assets.versions import resolve
from model.data import StoreExamples
from orchestration.cli import main
from pipeline_config import write_config


@pytest.fixture(scope="module")
def h36m_store(tiny_world, tmp_path_factory):
    return convert(get_converter("demo_h36m"), tiny_world / "demo_h36m", tmp_path_factory.mktemp("s") / "demo_h36m",
                   image_size=32).path


@pytest.fixture
def damaged_copy(h36m_store, tmp_path):
    copy = tmp_path / h36m_store.name
    shutil.copytree(h36m_store, copy)
    return copy


def _flip_bytes(path, count=64):
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[(len(data) // 3 + i) % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def _joint_names(store_path):
    store = open_store(store_path)
    return [f"{joint}_{store.attrs['skeleton']}" for joint in store.attrs["joint_names"]]


def test_the_training_loader_refuses_flipped_pose_bytes(damaged_copy):
    joint_names = _joint_names(damaged_copy)
    _flip_bytes(damaged_copy / "pose3d" / "c" / "0" / "0" / "0")
    with pytest.raises(StoreCorruptionError, match=r"store .*array 'pose3d', examples 0\.\.\d+ \(chunks 0\.\.0\).*checksum"):
        StoreExamples(damaged_copy, joint_names, name="demo_h36m")


def test_the_training_loader_refuses_a_store_with_a_deleted_image_shard(damaged_copy):
    joint_names = _joint_names(damaged_copy)
    shard = sorted((damaged_copy / "image" / "c").rglob("*"))[-1]
    shard.unlink()
    with pytest.raises(StoreCorruptionError, match=r"dataset 'demo_h36m'.*array 'image' lacks 1 chunk file"):
        StoreExamples(damaged_copy, joint_names, name="demo_h36m")


def _cli(tmp_path, monkeypatch, *args):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return main(["--config", str(tmp_path / "params.yaml"), *args])


def test_verify_reads_every_chunk_and_names_the_damage(tiny_world, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_world / "demo_h36m", raw / "demo_h36m")
    write_config(tmp_path, raw, ["demo_h36m"])
    assert _cli(tmp_path, monkeypatch, "convert") == 0
    capsys.readouterr()
    assert _cli(tmp_path, monkeypatch, "verify") == 0
    assert "demo_h36m" in capsys.readouterr().out.split(" ok: ")[0]

    version = open_store(tmp_path / "stores" / "dataset" / "demo_h36m").path
    _flip_bytes(version / "bbox" / "c" / "0" / "0")
    assert _cli(tmp_path, monkeypatch, "verify") == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "array 'bbox'" in out and str(version) in out


def test_a_failed_step_shows_the_converters_own_message(tiny_world, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_world / "demo_h36m", raw / "demo_h36m")
    (raw / "demo_h36m" / "calibration.json").write_text('{"cameras": "not a list"}')
    write_config(tmp_path, raw, ["demo_h36m"])
    assert _cli(tmp_path, monkeypatch, "convert") == 1
    out = capsys.readouterr().out
    summary = out[out.index("dataset stores"):]
    assert "FAILED" in summary and "calibration.json" in summary
    assert "DagsterExecutionStepExecutionError" not in out and "Error occurred while executing" not in out


def test_a_corrupt_dagster_instance_names_its_folder_and_the_fix(tiny_world, tmp_path, monkeypatch, capsys):
    write_config(tmp_path, tiny_world, ["demo_h36m"])
    home = tmp_path / "dagster_home"
    (home / "history").mkdir(parents=True)
    (home / "history" / "runs.db").write_bytes(b"this is not a SQLite database" * 100)
    assert _cli(tmp_path, monkeypatch, "convert") == 2
    err = capsys.readouterr().err
    assert f"Dagster instance at {home}" in err and f"mv {home} {home}.broken" in err
    assert "Traceback" not in err


def test_a_garbage_store_metadata_file_does_not_crash_the_summary(tiny_world, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_world / "demo_h36m", raw / "demo_h36m")
    write_config(tmp_path, raw, ["demo_h36m"])
    assert _cli(tmp_path, monkeypatch, "convert") == 0
    (open_store(tmp_path / "stores" / "dataset" / "demo_h36m").path / "zarr.json").write_text("garbage")
    capsys.readouterr()
    # the pointer still records the right data version, so the step is up to date; the summary says it is broken
    assert _cli(tmp_path, monkeypatch, "convert") == 0
    out = capsys.readouterr().out
    assert "UNREADABLE" in out and "metadata unreadable" in out


def test_gc_lists_then_removes_versions_no_pointer_references(h36m_store, tmp_path, monkeypatch, capsys):
    write_config(tmp_path, tmp_path / "raw", ["demo_h36m"])
    location = tmp_path / "stores" / "dataset" / "demo_h36m"
    shutil.copytree(h36m_store.parent, location)
    orphan = location / "20200101T000000-orphan-00000000.zarr"
    shutil.copytree(h36m_store, orphan)
    assert _cli(tmp_path, monkeypatch, "gc", "--dry-run") == 0
    assert f"would remove {orphan}" in capsys.readouterr().out and orphan.exists()
    assert _cli(tmp_path, monkeypatch, "gc") == 0
    assert not orphan.exists() and len(open_store(location)) == len(open_store(h36m_store))


def test_readers_never_see_a_half_published_store(h36m_store, tmp_path):
    """A writer publishes new versions in a loop; every read in between gets one whole version."""
    location = tmp_path / "busy"
    shutil.copytree(h36m_store.parent, location)
    expected_frames = open_store(location).load("frame")
    writer = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from assets.store import open_store, write_store
        source = open_store({str(h36m_store)!r})
        arrays = {{name: source.load(name) for name in source.array_names}}
        attrs = {{k: v for k, v in source.attrs.items() if k not in ("counts", "num_examples", "created")}}
        for i in range(12):
            write_store({str(location)!r}, arrays, attrs, data_version=f"v{{i}}")
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stderr=subprocess.PIPE, text=True)
    reads = 0
    try:
        while proc.poll() is None or reads == 0:
            store = open_store(location)
            np.testing.assert_array_equal(store.load("frame"), expected_frames)
            assert store["image"][len(store) - 1].shape == (32, 32, 3)
            reads += 1
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr.read()
    assert reads > 0
    assert json.loads((location / "current.json").read_text())["data_version"] == "v11"


def test_a_reader_whose_version_is_pruned_while_it_opens_gets_the_current_one(h36m_store, tmp_path, monkeypatch):
    """The race a busy writer makes: the pointer is read, then two publishes prune that version before it is
    opened. The reader opens what is current then (a damaged current version still raises)."""
    import assets.store as store_module

    location = tmp_path / "busy"
    shutil.copytree(h36m_store.parent, location)
    gone = resolve(location)
    source = open_store(h36m_store)
    arrays = {name: source.load(name) for name in source.array_names}
    attrs = {k: v for k, v in source.attrs.items() if k not in ("counts", "num_examples", "created")}
    for version in ("v1", "v2"):
        write_store(location, arrays, attrs, data_version=version)
    assert not gone.exists()
    real_resolve = store_module.resolve_version
    answers = iter([gone])
    monkeypatch.setattr(store_module, "resolve_version", lambda where: next(answers, None) or real_resolve(where))
    store = open_store(location)
    assert store.path == resolve(location)
    np.testing.assert_array_equal(store.load("frame"), source.load("frame"))


def test_a_folder_swap_killed_after_its_second_rename_leaves_no_copy_behind(tmp_path):
    final = tmp_path / "raw"
    final.mkdir()
    (final / "old.txt").write_text("old")
    stale_backup = tmp_path / "raw.old-deadbeef"  # the state a kill right after the second rename leaves
    stale_backup.mkdir()
    staged = staging_path(final)
    staged.mkdir()
    (staged / "new.txt").write_text("new")
    swap_into_place(staged, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    assert (final / "new.txt").read_text() == "new"


def test_a_folder_swap_killed_between_its_renames_is_put_back(tmp_path):
    final = tmp_path / "raw"
    backup = tmp_path / "raw.old-deadbeef"  # the state a kill between the two renames leaves
    backup.mkdir()
    (backup / "old.txt").write_text("old")
    staged = staging_path(final)
    staged.mkdir()
    (staged / "new.txt").write_text("new")
    swap_into_place(staged, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"] and (final / "new.txt").exists()


def test_dozens_datasets_diagnoses_a_wrongly_pointed_folder(tiny_world, tmp_path, monkeypatch, capsys):
    write_config(tmp_path, tiny_world, ["demo_h36m", "demo_3dhp"])
    assert _cli(tmp_path, monkeypatch, "datasets") == 0
    out = capsys.readouterr().out
    assert "demo_h36m" in out.split("configured datasets")[0]  # the converter list
    assert out.count("ok: 3 examples parsed") == 2

    config = tmp_path / "params.yaml"  # demo_3dhp pointed at demo_h36m's folder
    config.write_text(config.read_text().replace(str(tiny_world / "demo_3dhp"), str(tiny_world / "demo_h36m")))
    assert _cli(tmp_path, monkeypatch, "datasets") == 1
    problem = [line for line in capsys.readouterr().out.splitlines() if "PROBLEM" in line]
    assert len(problem) == 1 and problem[0].startswith("demo_3dhp") and str(tiny_world / "demo_h36m") in problem[0]
