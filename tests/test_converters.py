import shutil

import numpy as np
import pytest

from assets.cameras import Camera
from assets.converters import CONVERTERS, get_converter
from assets.converters.common import convert
from assets.converters.interface import converter_skeleton
from assets.converters.raw_io import RawDataError
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.synthetic import DATASETS as SYNTHETIC_DATASETS
from assets.synthetic import READERS
from converter_checks import assert_refused_keeping_the_store


@pytest.fixture
def raw_copy(tiny_world, tmp_path):
    """A private copy of one raw dataset, safe to damage."""
    def copy(name):
        target = tmp_path / "raw" / name
        shutil.copytree(tiny_world / name, target)
        return target
    return copy


@pytest.mark.parametrize("name", sorted(SYNTHETIC_DATASETS))
def test_every_converter_on_a_tiny_world(tiny_world, tmp_path, name):
    converter = get_converter(READERS[name])
    result = convert(converter, tiny_world / name, tmp_path / f"{name}.zarr", image_size=64)
    store = open_store(result.path)
    skeleton = get_skeleton(converter_skeleton(converter, tiny_world / name))
    assert len(store) == result.num_examples > 0
    assert store.load("pose2d").shape == (len(store), skeleton.num_joints, 2)
    assert store.load("image").shape[1:] == (64, 64, 3)
    assert store.attrs["skeleton"] == skeleton.name and store.attrs["converter"] == READERS[name]
    assert len(store.attrs["raw_fingerprint"]) == 64
    valid = store.load("joint_valid")
    pose2d = store.load("pose2d")
    assert valid.any(axis=1).all()
    # labelled joints of a person crop lie on (or, when truncated, near) the crop
    inside = (pose2d[valid] > -32).all(axis=-1) & (pose2d[valid] < 96).all(axis=-1)
    assert inside.mean() > 0.95
    pose3d = store.load("pose3d")
    if store.attrs["has_pose3d"]:
        labelled = np.isfinite(pose3d).all(axis=-1)
        assert labelled.mean() > 0.8
        for i in range(len(store)):  # labels are exact: 3D projects onto 2D through the stored camera
            cam = Camera(K=store["intrinsics"][i], dist=store["distortion"][i])
            ok = labelled[i]
            np.testing.assert_allclose(cam.camera_to_image(pose3d[i][ok]), pose2d[i][ok], atol=1e-2)
    else:
        assert np.isnan(pose3d).all()


def test_registry_has_a_converter_for_every_demo_dataset():
    assert set(READERS.values()) | {"pose2sim_demo"} <= set(CONVERTERS)  # pose2sim: tests/test_pose2sim.py
    with pytest.raises(KeyError, match="known converters"):
        get_converter("h36m_official")


def test_splits_follow_each_layouts_protocol(tiny_world, tmp_path):
    counts = {name: convert(get_converter(name), tiny_world / name, tmp_path / f"{name}.zarr",
                            image_size=32).counts for name in ("demo_h36m", "demo_smpl", "demo_multiview2d")}
    assert all(counts["demo_h36m"][s] > 0 for s in ("train", "val", "test"))
    assert all(counts["demo_smpl"][s] > 0 for s in ("train", "val", "test"))
    assert counts["demo_multiview2d"]["val"] == counts["demo_multiview2d"]["test"] == 0


def test_world_extrinsics_are_consistent_across_views(tiny_world, tmp_path):
    """The same frame seen by two cameras: both crops' extrinsics map their pose3d to the same world pose."""
    store = open_store(convert(get_converter("demo_h36m"), tiny_world / "demo_h36m", tmp_path / "h.zarr",
                               image_size=32).path)
    seq, frame, cam = store.load("sequence"), store.load("frame"), store.load("camera")
    i = 0
    j = np.flatnonzero((seq == seq[i]) & (frame == frame[i]) & (cam != cam[i]))[0]
    worlds = []
    for k in (i, j):
        ext = store["extrinsics"][k].astype(np.float64)
        worlds.append((store["pose3d"][k] - ext[:3, 3]) @ ext[:3, :3])
    np.testing.assert_allclose(worlds[0], worlds[1], atol=0.5)


def _damage_cases():
    def missing_crop_boxes(root):
        path = sorted(root.glob("S*/crops/*.npy"))[0]
        path.unlink()
        return path, None

    def truncated_image(root):
        path = sorted(root.glob("S*/images/*/*.jpg"))[0]
        path.write_bytes(path.read_bytes()[:200])
        return path, None

    def malformed_calibration(root):
        path = root / "calibration.json"
        text = path.read_text()
        path.write_text(text.replace('"K"', '"Kx"', 1))
        return path, "cameras[0].K"

    def wrong_shape(root):
        path = sorted(root.glob("S*/poses3d/*.npy"))[0]
        np.save(path, np.load(path)[:, :16])
        return path, "poses3d"

    def broken_json(root):
        path = root / "calibration.json"
        path.write_text(path.read_text()[:40])
        return path, None

    return {"missing crop boxes": missing_crop_boxes, "truncated image": truncated_image,
            "malformed calibration": malformed_calibration, "wrong joint count": wrong_shape,
            "broken json": broken_json}


@pytest.mark.parametrize("case", sorted(_damage_cases()))
def test_bad_raw_input_names_file_and_field_and_keeps_the_old_store(raw_copy, tmp_path, case):
    root = raw_copy("demo_h36m")
    converter = get_converter("demo_h36m")
    store_path = tmp_path / "demo_h36m.zarr"
    convert(converter, root, store_path, image_size=32)
    damaged_file, field = _damage_cases()[case](root)
    assert_refused_keeping_the_store(lambda: convert(converter, root, store_path, image_size=32), store_path,
                                     damaged_file, field)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("demo_h36m")) == ["demo_h36m.zarr"]


@pytest.mark.parametrize("name, damage, field", [
    ("demo_3dhp", lambda r: _rewrite(sorted(r.glob("S*/Seq*/camera.calibration"))[0], "intrinsic", "intrinsicX"),
     "'intrinsic'"),
    ("demo_smpl", lambda r: _drop_npz_key(sorted(r.glob("sequenceFiles/*/*.npz"))[0], "cam_poses"), "cam_poses"),
    ("demo_multiview2d", lambda r: _rewrite(sorted(r.glob("detections/*/*.json"))[0], '"keypoints"', '"kp"'),
     "keypoints"),
    ("demo_lsp2d", lambda r: np.save(r / "joints.npy", np.load(r / "joints.npy")[:, :, :2]), "joints"),
])
def test_each_converter_names_the_bad_field(raw_copy, tmp_path, name, damage, field):
    root = raw_copy(name)
    damage(root)
    with pytest.raises(RawDataError, match=field):
        convert(get_converter(name), root, tmp_path / f"{name}.zarr", image_size=32)
    assert not (tmp_path / f"{name}.zarr").exists()


def _rewrite(path, old, new):
    path.write_text(path.read_text().replace(old, new, 1))


def _drop_npz_key(path, key):
    with np.load(path) as data:
        kept = {k: data[k] for k in data.files if k != key}
    np.savez(path, **kept)
