import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from assets.store import StoreSchemaError, StoreWriter, fingerprint_paths, open_store, staging_path, write_store


def make_arrays(n=12, joints=17, size=16, seed=0):
    rng = np.random.default_rng(seed)
    pose3d = rng.normal(0, 300, (n, joints, 3)).astype(np.float32)
    pose3d[..., 2] += 4000
    pose3d[0, 3] = np.nan
    arrays = dict(
        pose3d=pose3d, pose2d=rng.uniform(0, size, (n, joints, 2)).astype(np.float32),
        joint_valid=np.isfinite(pose3d).all(-1), intrinsics=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        distortion=np.zeros((n, 5), np.float32), extrinsics=np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
        image=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), bbox=np.ones((n, 4), np.float32),
        split=np.array([0] * (n - 3) + [1, 2, 2], np.int8), subject=np.zeros(n, np.int32),
        sequence=(np.arange(n) % 2).astype(np.int32), frame=np.arange(n, dtype=np.int32),
        camera=np.zeros(n, np.int32))
    attrs = dict(dataset="toy", skeleton="h36m_17", converter="test", converter_version="1", raw_fingerprint="f" * 64,
                 image_size=size, codes=dict(subject=["S1"], sequence=["a", "b"], camera=["c0"]))
    return arrays, attrs


def test_round_trip_and_lazy_example_access(tmp_path):
    arrays, attrs = make_arrays()
    path = write_store(tmp_path / "toy.zarr", arrays, attrs)
    store = open_store(path)
    assert len(store) == 12
    assert store.attrs["counts"] == {"train": 9, "val": 1, "test": 2}
    assert store.attrs["units"] == "mm" and store.attrs["raw_fingerprint"] == "f" * 64
    assert store.attrs["joint_names"][0] == "pelv"
    for name, value in arrays.items():
        np.testing.assert_array_equal(store.load(name), value)
    example = store.example(5)
    np.testing.assert_array_equal(example["image"], arrays["image"][5])
    assert example["pose3d"].shape == (17, 3)
    index = store.index()
    assert index.height == 12 and index["sequence"].to_list()[:2] == ["a", "b"]
    assert index.filter(index["split"] == "test").height == 2
    np.testing.assert_array_equal(store.split_indices("val"), [9])


def test_images_are_chunked_one_example_per_chunk(tmp_path):
    arrays, attrs = make_arrays()
    store = open_store(write_store(tmp_path / "toy.zarr", arrays, attrs))
    assert store["image"].chunks == (1, 16, 16, 3)
    assert store.group.metadata.zarr_format == 3


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.update(pose3d=a["pose3d"][:, :16]), "'pose3d' has shape"),
    (lambda a: a.update(image=a["image"].astype(np.float32)), "'image' has dtype"),
    (lambda a: a.pop("intrinsics"), "missing array 'intrinsics'"),
    (lambda a: a.update(split=np.full(12, 5, np.int8)), "'split' has codes"),
])
def test_schema_errors_name_the_array(tmp_path, mutate, message):
    arrays, attrs = make_arrays()
    mutate(arrays)
    with pytest.raises(StoreSchemaError, match=message):
        write_store(tmp_path / "toy.zarr", arrays, attrs)
    assert not any(tmp_path.iterdir()), "a rejected write must leave nothing behind"


def test_rejected_write_keeps_the_previous_store(tmp_path):
    arrays, attrs = make_arrays()
    path = write_store(tmp_path / "toy.zarr", arrays, attrs)
    bad = dict(arrays, intrinsics=np.full((12, 3, 3), np.nan, np.float32))
    with pytest.raises(StoreSchemaError, match="intrinsics"):
        write_store(path, bad, attrs)
    np.testing.assert_array_equal(open_store(path).load("intrinsics"), arrays["intrinsics"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr"]


def test_exception_inside_writer_discards_the_temporary_store(tmp_path):
    arrays, attrs = make_arrays()
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "toy.zarr", 12, attrs) as writer:
            writer.write(0, image=arrays["image"][:4])
            raise RuntimeError("converter crashed")
    assert not any(tmp_path.iterdir())


def test_write_killed_half_way_leaves_the_old_store_readable(tmp_path):
    arrays, attrs = make_arrays()
    path = write_store(tmp_path / "toy.zarr", arrays, attrs)
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import make_arrays
        from assets.store import StoreWriter
        arrays, attrs = make_arrays(seed=1)
        writer = StoreWriter({str(path)!r}, 12, attrs)
        writer.write(0, image=arrays["image"][:6], pose3d=arrays["pose3d"][:6])
        print("half-way", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half-way"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = open_store(path)
    np.testing.assert_array_equal(store.load("image"), arrays["image"])
    assert store.attrs["counts"]["train"] == 9
    # the killed writer could not delete its half-built folder; the next write of the path does
    assert len(list(tmp_path.glob("toy.zarr.tmp-*"))) == 1
    write_store(path, *make_arrays(seed=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr"]


def test_staging_keeps_folders_of_live_writers_and_other_hosts(tmp_path):
    final = tmp_path / "toy.zarr"
    host = socket.gethostname()
    live = tmp_path / f"toy.zarr.tmp-{host}-{os.getpid()}-0000aaaa"
    elsewhere = tmp_path / "toy.zarr.tmp-another-host-1-0000bbbb"
    unknown_owner = tmp_path / "toy.zarr.tmp-0000cccc"  # written before names carried host and pid
    other_path = tmp_path / f"other.zarr.tmp-{host}-999999999-0000dddd"
    for folder in (live, elsewhere, unknown_owner, other_path):
        folder.mkdir()
    staging = staging_path(final)
    assert staging.parent == tmp_path and staging.name.startswith(f"toy.zarr.tmp-{host}-{os.getpid()}-")
    assert all(folder.exists() for folder in (live, elsewhere, unknown_owner, other_path))


def test_failed_swap_puts_the_previous_store_back(tmp_path, monkeypatch):
    arrays, attrs = make_arrays()
    path = write_store(tmp_path / "toy.zarr", arrays, attrs)
    real_replace = os.replace

    def fail_on_the_new_store(source, target):
        if str(target) == str(path) and ".tmp-" in str(source):
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", fail_on_the_new_store)
    with pytest.raises(OSError, match="disk full"):
        write_store(path, *make_arrays(seed=3))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr"]  # back in place before any reader looks
    np.testing.assert_array_equal(open_store(path).load("frame"), arrays["frame"])


def test_swap_interrupted_between_renames_is_recovered(tmp_path):
    arrays, attrs = make_arrays()
    path = write_store(tmp_path / "toy.zarr", arrays, attrs)
    os.replace(path, tmp_path / "toy.zarr.old-deadbeef")  # the state right after the first rename
    np.testing.assert_array_equal(open_store(path).load("frame"), arrays["frame"])


def test_fingerprint_tracks_content_and_names(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    (root / "a.txt").write_text("1")
    first = fingerprint_paths([root])
    assert fingerprint_paths([root]) == first
    (root / "a.txt").write_text("2")
    second = fingerprint_paths([root])
    assert second != first
    os.replace(root / "a.txt", root / "b.txt")
    assert fingerprint_paths([root]) != second
    assert fingerprint_paths([root], extra="v2") != fingerprint_paths([root], extra="v1")


def test_opening_a_missing_store_says_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="zarr.json"):
        open_store(tmp_path / "nothing.zarr")
