from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from assets.joint_names import union_joint_names
from assets.skeletons import get_skeleton
from assets.store import SPLITS, open_store, write_store
from evaluation.benchmark import (HISTORY_SCHEMA, NoTrainingPosesError, append_history, canonical_orientations,
                                  history_rows, mean_pose_baseline, read_history, results_markdown, score,
                                  benchmark_floor)
from evaluation.metrics import mpjpe, root_positions
from store_factory import make_store_arrays


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
    assert "mean pose floor | 200.0" in lines[4]


def _rotations(n, rng):
    """n random proper rotations."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0] *= -1
    return q


def _pose_store(path, pose3d, split, extrinsics, skeleton):
    """A store of these poses, splits and extrinsics (its other arrays: store_factory's; only these matter)."""
    arrays, attrs = make_store_arrays(len(pose3d), skeleton=skeleton, image_size=8)
    arrays.update(pose3d=pose3d.astype(np.float32), joint_valid=np.isfinite(pose3d).all(-1),
                  extrinsics=extrinsics.astype(np.float32), split=np.array([SPLITS.index(s) for s in split], np.int8))
    return write_store(path, arrays, attrs)


def _template(skeleton, rng):
    return rng.normal(scale=300.0, size=(get_skeleton(skeleton).num_joints, 3))


def _camera_frame_mean_floor(store_path):
    """The old floor: the mean of the camera-frame root-relative training poses, at each test root."""
    store = open_store(store_path)
    root = store.skeleton.root_joints
    train = store["pose3d"].get_orthogonal_selection((store.split_indices("train"),)).astype(np.float64)
    gt = store["pose3d"].get_orthogonal_selection((store.split_indices("test"),)).astype(np.float64)
    mean = np.nanmean(train - root_positions(train, root)[:, None], axis=0)
    return np.nanmean(mpjpe(mean + np.nan_to_num(root_positions(gt, root))[:, None], gt, root_index=root))


@pytest.fixture(scope="module")
def world_store(tmp_path_factory):
    """h36m_17 poses in a world frame: training poses = a template ± pairs of offsets, test poses = the template
    exactly; every example seen by a camera of its own orientation, 4 m away."""
    rng = np.random.default_rng(3)
    template = _template("h36m_17", rng)
    offsets = rng.normal(scale=60.0, size=(6, *template.shape))
    world = np.concatenate([template + offsets, template - offsets, template[None].repeat(5, 0)])
    rotations = _rotations(len(world), rng)
    translations = rng.uniform(-300, 300, (len(world), 3)) + [0, 0, 4000]
    pose3d = np.einsum("nij,nkj->nki", rotations, world) + translations[:, None]
    extrinsics = np.zeros((len(world), 4, 4))
    extrinsics[:, :3, :3], extrinsics[:, :3, 3], extrinsics[:, 3, 3] = rotations, translations, 1.0
    path = tmp_path_factory.mktemp("floor") / "world.zarr"
    return _pose_store(path, pose3d, ["train"] * 12 + ["test"] * 5, extrinsics, "h36m_17")


@pytest.fixture(scope="module")
def no_world_store(tmp_path_factory):
    """blazepose_33 poses (no pelvis) without a world frame (NaN extrinsics, as a 2D-only or world-less
    converter writes): the template turned every which way about its root; the training poses' offsets
    leave hips and shoulders alone, so that every pose has the template's body orientation. The last test
    pose lacks its left shoulder: it has no body orientation."""
    skeleton = get_skeleton("blazepose_33")
    rng = np.random.default_rng(4)
    template = _template("blazepose_33", rng)
    offsets = rng.normal(scale=60.0, size=(6, *template.shape))
    offsets[:, [*skeleton.hip_joints, *skeleton.torso_top_joints]] = 0
    body = np.concatenate([template + offsets, template - offsets, template[None].repeat(5, 0)])
    pose3d = np.einsum("nij,nkj->nki", _rotations(len(body), rng), body) + rng.uniform(-300, 300, (len(body), 1, 3))
    pose3d += [0, 0, 4000]
    pose3d[-1, skeleton.index("lsho")] = np.nan
    path = tmp_path_factory.mktemp("floor") / "no_world.zarr"
    return _pose_store(path, pose3d, ["train"] * 12 + ["test"] * 5, np.full((len(body), 4, 4), np.nan), "blazepose_33")


def test_the_floor_is_the_mean_training_pose_in_the_world_rotated_into_each_test_camera(world_store):
    floor = mean_pose_baseline(world_store)
    assert floor["frame"] == "world" and floor["root"] == "pelv"
    assert floor["examples"] == 5 and floor["train_examples"] == 12 and floor["unoriented_examples"] == 0
    # the test poses are exactly the mean training pose: only float32 rounding (4 m in float32: ~0.5 µm) is left
    assert floor["mpjpe_mm"] < 0.01 and floor["pa_mpjpe_mm"] < 0.01
    assert floor["pck50"] == pytest.approx(100.0) and floor["auc"] > 95 and floor["cps100"] == pytest.approx(100.0)
    # whereas averaging camera-frame poses of differently turned cameras collapses the mean pose
    assert _camera_frame_mean_floor(world_store) > 100.0
    assert mean_pose_baseline(world_store, frame="canonical")["frame"] == "canonical"


def test_without_a_world_the_floor_turns_the_canonical_mean_pose_to_each_test_body(no_world_store):
    skeleton = get_skeleton("blazepose_33")
    floor = mean_pose_baseline(no_world_store)
    assert floor["frame"] == "canonical" and floor["root"] == "midpoint of lhip, rhip"
    assert floor["examples"] == 5 and floor["unoriented_examples"] == 1
    assert _camera_frame_mean_floor(no_world_store) > 100.0
    # four test bodies are the mean pose turned: error 0; the one without an orientation gets the mean
    # pose as an upright body facing the camera (the identity orientation), at its root
    store = open_store(no_world_store)
    gt = store["pose3d"].get_orthogonal_selection((store.split_indices("test"),)).astype(np.float64)
    train = store["pose3d"].get_orthogonal_selection((store.split_indices("train"),)).astype(np.float64)
    rotations, oriented = canonical_orientations(train, skeleton)
    assert oriented.all()
    relative = train - root_positions(train, skeleton.root_joints)[:, None]
    mean = np.einsum("nji,nkj->nki", rotations, relative).mean(axis=0)
    last = gt[-1] - root_positions(gt[-1:], skeleton.root_joints)[0]
    expected = np.nanmean(np.linalg.norm(mean - last, axis=-1)) / len(gt)
    assert floor["mpjpe_mm"] == pytest.approx(expected, abs=0.01)
    with pytest.raises(ValueError, match="no common world frame"):
        mean_pose_baseline(no_world_store, frame="world")


def test_canonical_orientation_of_an_upright_body_facing_the_camera():
    skeleton = get_skeleton("h36m_17")
    pose = np.zeros((1, skeleton.num_joints, 3))
    pose[0, skeleton.index("lhip")], pose[0, skeleton.index("rhip")] = [100, 0, 0], [-100, 0, 0]
    pose[0, skeleton.index("lsho")], pose[0, skeleton.index("rsho")] = [150, -500, 0], [-150, -500, 0]
    rotation, defined = canonical_orientations(pose, skeleton)
    np.testing.assert_allclose(rotation[0], np.eye(3), atol=1e-12)
    turned = _rotations(1, np.random.default_rng(0))
    np.testing.assert_allclose(canonical_orientations(pose @ turned[0].T, skeleton)[0], turned, atol=1e-12)
    pose[0, skeleton.index("lhip")] = pose[0, skeleton.index("rhip")]  # no hip direction: undefined
    rotation, defined = canonical_orientations(pose, skeleton)
    assert not defined[0] and np.array_equal(rotation[0], np.eye(3))


def test_a_test_only_set_takes_its_floor_from_a_training_store_of_its_format(tmp_path, no_world_store,
                                                                               world_store):
    store = open_store(no_world_store)
    test_only = _pose_store(tmp_path / "test_only.zarr", store.load("pose3d"), ["test"] * len(store),
                            store.load("extrinsics"), "blazepose_33")
    floor = benchmark_floor(test_only, [world_store, no_world_store])  # h36m_17 is skipped: another format
    assert floor["train_store"] == str(no_world_store) and floor["frame"] == "canonical"
    assert floor["examples"] == len(store)
    missing = benchmark_floor(test_only, [world_store])
    assert missing["frame"] is None and "no training poses in blazepose_33" in missing["unavailable"]
    table = results_markdown({"final": _result(80.0)}, missing)
    assert "| mean pose floor (not computed) | – |" in table and "no training poses" in table
    with pytest.raises(NoTrainingPosesError, match="no training pose"):
        mean_pose_baseline(test_only)


class _ReplayEstimator:
    """Predicts given poses in the order of the examples asked for (predict_split goes in order)."""

    def __init__(self, skeleton, poses):
        self.joint_names = union_joint_names([skeleton])
        self.poses, self.done = poses, 0

    def predict(self, images, intrinsics, skeleton=None, *, flip_test=True):
        batch = self.poses[self.done:self.done + len(images)]
        self.done += len(images)
        return batch


def test_score_uses_the_hip_midpoint_where_the_format_has_no_pelvis(no_world_store):
    store = open_store(no_world_store)
    gt = store["pose3d"].get_orthogonal_selection((store.split_indices("test"),)).astype(np.float64)
    rng = np.random.default_rng(5)
    pred = gt + rng.normal(scale=30.0, size=gt.shape) + rng.uniform(-500, 500, (len(gt), 1, 3))
    pred = np.nan_to_num(pred, nan=4000.0)
    result = score(_ReplayEstimator("blazepose_33", pred), no_world_store)
    assert result["root"] == "midpoint of lhip, rhip"
    hips = list(store.skeleton.root_joints)
    by_hand = np.linalg.norm((pred - pred[:, hips].mean(1, keepdims=True)) - (gt - gt[:, hips].mean(1, keepdims=True)),
                             axis=-1)
    assert result["metrics"]["mpjpe_mm"] == pytest.approx(np.nanmean(np.nanmean(by_hand, axis=1)), rel=1e-6)


def test_results_table_names_the_root_and_always_shows_the_floor():
    results = {"initial": {**_result(90.0), "root": "pelv"}, "final": {**_result(80.0), "root": "pelv"}}
    floor = {"mpjpe_mm": 150.0, "pa_mpjpe_mm": 110.0, "frame": "world", "root": "pelv"}
    table = results_markdown(results, floor)
    assert "| mean pose floor (world frame) | 150.0 | 110.0 | – |" in table
    assert table.splitlines()[-1].startswith("Root-relative metrics (MPJPE, PCK, AUC) use the root: pelv.")
    assert "| mean pose floor (not computed) | – |" in results_markdown(results, None)
    canonical = results_markdown({"final": {**_result(80.0), "root": "midpoint of lhip, rhip"}},
                                 {**floor, "frame": "canonical", "root": "midpoint of lhip, rhip"})
    assert "mean pose floor (canonical orientation) | 150.0" in canonical and "root: midpoint of lhip, rhip." in canonical
