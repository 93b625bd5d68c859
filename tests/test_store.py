import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import zarr

from assets.atomic_files import write_bytes_atomically
from assets.file_hashes import fingerprint_paths
from assets.store import (StoreCorruptionError, StoreSchemaError, StoreWriter, missing_chunk_files,
                          open_store, write_store)
from assets.locations import is_remote
from assets.versions import (POINTER, WRITING_MARK, PointerError, collect_garbage, garbage, published_data_version,
                             resolve, stale_local_copies)


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


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


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
        write_store(tmp_path / "toy", arrays, attrs)
    assert files_under(tmp_path) == [], "a rejected write must leave nothing behind"


def test_rejected_write_keeps_the_previous_store(tmp_path):
    arrays, attrs = make_arrays()
    location = tmp_path / "toy"
    first = write_store(location, arrays, attrs)
    bad = dict(arrays, intrinsics=np.full((12, 3, 3), np.nan, np.float32))
    with pytest.raises(StoreSchemaError, match="intrinsics"):
        write_store(location, bad, attrs)
    np.testing.assert_array_equal(open_store(location).load("intrinsics"), arrays["intrinsics"])
    assert sorted(p.name for p in location.iterdir()) == sorted([first.name, POINTER])


def test_refused_gate_keeps_the_previous_version_current(tmp_path):
    arrays, attrs = make_arrays()
    location = tmp_path / "toy"
    first = write_store(location, arrays, attrs, data_version="good")
    seen = []

    def refuse(staged):
        seen.append(open_store(staged).load("frame"))  # the gate reads the finished, unpublished version
        raise RuntimeError("blocking check failed")

    with pytest.raises(RuntimeError, match="blocking check failed"):
        write_store(location, *make_arrays(seed=5), data_version="bad", gate=refuse)
    np.testing.assert_array_equal(seen[0], arrays["frame"])
    assert resolve(location) == first and published_data_version(location) == "good"
    assert sorted(p.name for p in location.iterdir()) == sorted([first.name, POINTER])


def test_exception_inside_writer_discards_the_new_version(tmp_path):
    arrays, attrs = make_arrays()
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "toy", 12, attrs) as writer:
            writer.write(0, image=arrays["image"][:4])
            raise RuntimeError("converter crashed")
    assert files_under(tmp_path) == []


def test_failure_while_creating_the_writer_leaves_nothing(tmp_path, monkeypatch):
    arrays, attrs = make_arrays()
    real_open_group = zarr.open_group

    def broken_open_group(*args, **kwargs):
        real_open_group(*args, **kwargs)  # the folder exists when the failure comes
        raise OSError("disk full")

    monkeypatch.setattr(zarr, "open_group", broken_open_group)
    with pytest.raises(OSError, match="disk full"):
        StoreWriter(tmp_path / "toy", 12, attrs)
    assert files_under(tmp_path) == []


def test_write_killed_half_way_leaves_the_old_store_readable(artifact_root):
    arrays, attrs = make_arrays()
    location = artifact_root / "toy"
    first = write_store(location, arrays, attrs)
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import make_arrays
        from assets.store import StoreWriter
        arrays, attrs = make_arrays(seed=1)
        writer = StoreWriter({str(location)!r}, 12, attrs)
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
    store = open_store(location)
    np.testing.assert_array_equal(store.load("image"), arrays["image"])
    assert store.attrs["counts"]["train"] == 9
    # the killed writer could not delete its half-built version; the next write at the location does
    assert len(list(location.glob(f"*{WRITING_MARK}"))) == 1
    second = write_store(location, *make_arrays(seed=2))
    assert sorted(p.name for p in location.iterdir()) == sorted([first.name, second.name, POINTER])


def test_an_upload_cut_short_leaves_the_previous_version_current_on_an_object_store(s3_endpoint, monkeypatch):
    from assets import versions
    from assets.locations import cache_root, location
    from object_store import fresh_prefix

    store = location(fresh_prefix("upload")) / "toy"
    first = write_store(store, *make_arrays(seed=1))

    def upload_half_then_fail(local, target):
        files = sorted(p for p in local.rglob("*") if p.is_file())
        for file in files[:len(files) // 2]:
            target.fs.put_file(str(file), f"{target.path}/{file.relative_to(local).as_posix()}")
        raise ConnectionError("connection reset during the upload")

    monkeypatch.setattr(versions, "upload", upload_half_then_fail)
    with pytest.raises(ConnectionError):
        write_store(store, *make_arrays(seed=2))
    assert resolve(store) == first
    np.testing.assert_array_equal(open_store(store).load("frame"), make_arrays(seed=1)[0]["frame"])
    # the half-uploaded version and its local staging folder are gone; only the current version remains
    assert sorted(p.name for p in store.iterdir()) == sorted([first.name, POINTER])
    assert not list((cache_root() / "staging").rglob("*.zarr"))


def test_versions_of_live_writers_and_other_hosts_are_kept(tmp_path):
    arrays, attrs = make_arrays()
    location = tmp_path / "toy"
    write_store(location, arrays, attrs)
    owners = {"live": (socket.gethostname(), os.getpid()), "elsewhere": ("another-host", 1),
              "dead": (socket.gethostname(), 999_999_999)}
    for name, (host, pid) in owners.items():
        (location / f"{name}.zarr").mkdir()
        (location / f"{name}.zarr{WRITING_MARK}").write_text(json.dumps({"host": host, "pid": pid}))
    assert garbage(location) == sorted([location / "dead.zarr", location / f"dead.zarr{WRITING_MARK}"])
    write_store(location, *make_arrays(seed=3))
    assert (location / "live.zarr").exists() and (location / "elsewhere.zarr").exists()
    assert not (location / "dead.zarr").exists()


def test_publishing_keeps_current_and_previous_and_gc_removes_the_rest(artifact_root):
    location = artifact_root / "toy"
    versions = [write_store(location, *make_arrays(seed=s)) for s in range(3)]
    assert sorted(p.name for p in location.iterdir()) == sorted([versions[1].name, versions[2].name, POINTER])
    stray = location / "stray.zarr"  # e.g. a version whose writer died on another machine, long ago
    write_bytes_atomically(stray / "zarr.json", b"{}")
    assert [str(p) for p in collect_garbage(artifact_root, dry_run=True)] == [str(stray)] and stray.exists()
    assert [str(p) for p in collect_garbage(artifact_root)] == [str(stray)] and not stray.exists()
    np.testing.assert_array_equal(open_store(location).load("frame"), make_arrays(seed=2)[0]["frame"])
    assert open_store(versions[1]).attrs["num_examples"] == 12  # the previous version stays readable
    if is_remote(artifact_root):  # each machine's local copies of versions no longer current go too
        stale = stale_local_copies(artifact_root, dry_run=True)
        assert [p.name for p in stale] == [versions[0].name] and stale[0].is_dir()
        assert stale_local_copies(artifact_root) == stale and not stale[0].exists()
        assert stale_local_copies(artifact_root) == []


def test_a_garbage_pointer_is_a_clear_error(tmp_path):
    location = tmp_path / "toy"
    write_store(location, *make_arrays())
    (location / POINTER).write_text("{not json")
    with pytest.raises(PointerError, match="current.json: not a valid artifact pointer"):
        open_store(location)
    assert published_data_version(location) is None  # so the stage counts as stale and is rewritten
    write_store(location, *make_arrays(seed=1))
    np.testing.assert_array_equal(open_store(location).load("frame"), make_arrays(seed=1)[0]["frame"])


def test_rows_read_as_slices_equal_the_selection_in_any_order(tmp_path, monkeypatch):
    import assets.store

    monkeypatch.setattr(assets.store, "_ROWS_PER_SLICE", 4)  # several slices for these 30 examples
    arrays, attrs = make_arrays(n=30)
    store = open_store(write_store(tmp_path / "toy", arrays, attrs))
    rows = np.array([17, 2, 29, 3, 3, 11, 0, 28])  # unordered, a repeat, spans far apart
    np.testing.assert_array_equal(store["image"].read_rows(rows), arrays["image"][rows])
    np.testing.assert_array_equal(store["pose3d"].read_rows(rows), arrays["pose3d"][rows])
    assert store["image"].read_rows(np.array([], dtype=int)).shape == (0, 16, 16, 3)


def test_flipped_bytes_in_a_chunk_are_detected_on_read(tmp_path):
    arrays, attrs = make_arrays()
    path = write_store(tmp_path / "toy", arrays, attrs)
    chunk = path / "pose3d" / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    for i in range(8, 72):
        data[i % len(data)] ^= 0xFF
    chunk.write_bytes(bytes(data))
    store = open_store(path)
    with pytest.raises(StoreCorruptionError, match=r"store .*toy.*array 'pose3d', example 3 \(chunk 0\).*checksum"):
        store["pose3d"][3]
    with pytest.raises(StoreCorruptionError, match="array 'pose3d'"):
        store.verify()


def test_a_missing_image_shard_is_detected_on_open(tmp_path):
    arrays, attrs = make_arrays()
    path = write_store(tmp_path / "toy", arrays, attrs)
    (path / "image" / "c" / "0" / "0" / "0" / "0").unlink()
    with pytest.raises(StoreCorruptionError, match=r"array 'image' lacks 1 chunk file\(s\) \(image/c/0/0/0/0\)"):
        open_store(path)


def test_all_fill_value_chunks_are_still_written(tmp_path):
    arrays, attrs = make_arrays()
    arrays["image"][:] = 0
    arrays["pose3d"][:] = np.nan  # a 2D-only dataset: every pose3d chunk equals the fill value
    store = open_store(write_store(tmp_path / "toy", arrays, attrs))
    assert all(missing_chunk_files(store.group, name) == [] for name in store.array_names)
    assert store.verify() > 0


def test_garbage_metadata_names_the_store(tmp_path):
    path = write_store(tmp_path / "toy", *make_arrays())
    (path / "zarr.json").write_text("garbage")
    with pytest.raises(StoreCorruptionError, match=r"store .*toy.*metadata unreadable"):
        open_store(path)


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
    with pytest.raises(FileNotFoundError, match="nothing published there.*current.json.*zarr.json"):
        open_store(tmp_path / "nothing")
