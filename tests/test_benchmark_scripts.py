"""Smoke tests of the benchmark scripts on tiny inputs: they must keep running as the code changes."""

import numpy as np
import pytest

from assets.artifacts import write_zarr_group
from benchmarks import acae as acae_benchmark

FORMATS = ("h36m_17", "smpl_24", "coco_19")  # 60 joints: 180 coordinates, room for PCA's 144


def test_acae_benchmark_rows_on_tiny_demo_world_poses(capsys):
    train, names = acae_benchmark.demo_world_poses(400, FORMATS, acae_benchmark.TRAIN_SEED)
    test, test_names = acae_benchmark.demo_world_poses(60, FORMATS, acae_benchmark.TEST_SEED)
    assert names == test_names and train.shape == (400, 60, 3) and len(names) == 60
    assert (train[..., 2] > 0).all()  # camera frame, in front of the camera: the projected loss needs it

    rows = acae_benchmark.evaluate("tiny", train, test, names, dict(steps=20), "cpu")
    methods = [row["method"] for row in rows]
    assert methods[-1].startswith("PCA") and len(methods) == 7
    by_method = dict(zip(methods, rows))
    assert by_method[methods[-1]]["ratio_3d"] == 1.0
    for row in rows:
        assert np.isfinite(row["errors"].mean_3d_mm) and row["errors"].mean_3d_mm > 0
    closed_form = by_method["ACAE chiral, closed form (3D L2 optimum, λ=0)"]["errors"].mean_3d_mm
    paper = by_method["ACAE chiral, projected loss"]["errors"].mean_3d_mm
    assert closed_form < paper  # 20 sparse steps from a random start are far from the optimum

    acae_benchmark.print_table(rows, threads=1, device="cpu")
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("tiny ") for line in printed) == 7


def test_acae_benchmark_runs_on_the_pipeline_pseudo_gt_alone(tmp_path, capsys):
    poses, names = acae_benchmark.demo_world_poses(300, FORMATS, acae_benchmark.TRAIN_SEED)
    store = write_zarr_group(tmp_path / "pseudo_gt.zarr", {"poses": poses, "dataset": np.repeat([0, 1], 150)},
                             {"joint_names": names})
    acae_benchmark.main(["--quick", "--steps", "20", "--datasets", "pipeline", "--pseudo-gt", str(store)])
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("pipeline: 240+60 x 60 joints") for line in printed) == 7


def test_acae_benchmark_says_what_is_missing_or_unknown(tmp_path, capsys):
    acae_benchmark.main(["--datasets", "pipeline", "--pseudo-gt", str(tmp_path / "absent.zarr")])
    assert "not found: run `make demo` first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        acae_benchmark.main(["--datasets", "demo,everything"])
    assert "unknown ['everything']" in capsys.readouterr().err


def test_conversion_benchmark_prints_a_row_per_size_and_worker_count(capsys):
    from benchmarks import conversion

    conversion.main(["--frames", "3", "--takes", "1", "--scale", "0.1", "--workers", "1", "--image-size", "32"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [int(row[0]) for row in rows[1:]] == [12, 48]  # 1 take x 4 cameras x 3 (then 12) frames
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows[1:])


def test_real_frames_benchmark_keeps_the_first_training_instants_of_every_camera(tmp_path):
    from assets.store import SPLITS, open_store, write_store
    from benchmarks.real_frames import first_instants_store
    from store_factory import make_store_arrays

    arrays, attrs = make_store_arrays(n=40, skeleton="h36m_17", image_size=8)
    frames, cameras = np.arange(40) // 4, np.arange(40) % 4  # 10 instants x 4 cameras
    split = np.where(frames >= 8, SPLITS.index("test"), SPLITS.index("train"))
    arrays.update(frame=frames.astype(np.int32), camera=cameras.astype(np.int32), split=split.astype(np.int8))
    attrs = {**attrs, "codes": {**attrs["codes"], "camera": ["c0", "c1", "c2", "c3"]}}
    source = write_store(tmp_path / "recording.zarr", arrays, attrs)

    subset = open_store(first_instants_store(source, 3, tmp_path / "first3.zarr"))
    kept = subset.load("split")
    assert sorted(set(frames[kept == SPLITS.index("train")])) == [0, 1, 2]
    assert (kept == SPLITS.index("train")).sum() == 12  # every camera of the kept instants
    assert sorted(set(frames[kept == SPLITS.index("val")])) == [3, 4, 5, 6, 7]
    np.testing.assert_array_equal(kept == SPLITS.index("test"), split == SPLITS.index("test"))
    np.testing.assert_array_equal(subset.load("pose3d"), open_store(source).load("pose3d"))
