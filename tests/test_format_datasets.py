"""The demo datasets of sixteen further skeleton formats (assets/synthetic/format_datasets.py), written in the
generic raw layout (docs/raw_layouts.md#demo_format) and read by its one converter (demo_format)."""

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from assets.cameras import Camera
from assets.converters import get_converter
from assets.converters.common import convert, sample_examples
from assets.converters.interface import check_converter, converter_skeleton
from assets.converters.raw_io import RawDataError
from assets.quality import run_store_checks
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.synthetic.format_datasets import FORMAT_DATASETS, write_format_dataset
from assets.synthetic.motion import STYLES
from assets.synthetic.writing import Job

FORMATS = ("kinectv2_25", "mpi_inf_3dhp_17", "smplx_42", "ghum_35", "sailvos_26", "gpa_34", "bml_movi_87", "mads_19",
           "berkeley_mhad_43", "total_capture_21", "jta_22", "ikea_asm_17", "human4d_32", "3dpeople_29", "umpm_15",
           "smpl+head_30")
NAMES = sorted(FORMAT_DATASETS)
NAMES_3D = [name for name in NAMES if FORMAT_DATASETS[name].labels == "3d"]
GENERATED_IMAGE_SIZE = 64
STORE_IMAGE_SIZE = 32
CONVERTER = get_converter("demo_format")
# the store checks cost about a second per store: one dataset of each kind of rig and labels, the most
# joints and the most labelling gaps (every dataset passes them at both sizes when checked by hand)
CHECKED = ("demo_kinectv2_25", "demo_smplx_42", "demo_ghum_35", "demo_ikea_asm_17", "demo_bml_movi_87",
           "demo_3dpeople_29")


def _generate(root: Path, name: str, seed: int = 0) -> Path:
    """``world.generate_dataset`` for one of these datasets, minus its atomic rename."""
    out = root / name
    out.mkdir(parents=True)
    write_format_dataset(Job(name=name, out=out, size="tiny", seed=seed, image_size=GENERATED_IMAGE_SIZE))
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("format_raw")
    for name in NAMES:
        _generate(root, name)
    return root


@pytest.fixture(scope="module")
def stores(raw_root, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("format_stores")
    return {name: open_store(convert(CONVERTER, raw_root / name, out / f"{name}.zarr", dataset_name=name,
                                     image_size=STORE_IMAGE_SIZE).path)
            for name in NAMES}


def _example_keys(store) -> list[tuple[str, str, int]]:
    """(sequence folder relative to the raw root, camera id, frame) of every example."""
    codes = store.attrs["codes"]
    return [(codes["sequence"][s], codes["camera"][c], int(f))
            for s, c, f in zip(store.load("sequence"), store.load("camera"), store.load("frame"))]


def _written_cameras(path: Path) -> dict[str, list[Camera]]:
    """Camera id -> its calibration per frame (a single one for a static camera), parsed independently."""
    entries = json.loads(path.read_text())["cameras"]
    return {entry["id"]: [Camera(K=c["K"], dist=c["dist"], R=c["R"], t=c["t"]) for c in entry.get("frames", [entry])]
            for entry in entries}


def _in_frame(cameras: list[Camera], frame: int) -> Camera:
    return cameras[0] if len(cameras) == 1 else cameras[frame]


def test_one_dataset_per_further_format_each_captured_its_own_way():
    assert sorted(spec.skeleton for spec in FORMAT_DATASETS.values()) == sorted(FORMATS)
    assert set(FORMAT_DATASETS) == {"demo_" + f.replace("+", "_") for f in FORMATS}
    assert all(set(spec.styles) <= set(STYLES) for spec in FORMAT_DATASETS.values())
    assert {name for name, spec in FORMAT_DATASETS.items() if spec.labels == "2d"} == {"demo_ikea_asm_17"}
    rigs = {(spec.rig.moving, spec.rig.num_cameras) for spec in FORMAT_DATASETS.values()}
    assert {(True, 1), (False, 1), (False, 2), (False, 4)} <= rigs
    assert len({(spec.frame_size, spec.focal_px) for spec in FORMAT_DATASETS.values()}) >= 10


@pytest.mark.parametrize("name", NAMES)
def test_every_dataset_converts_to_a_store_of_its_format_split_by_subject(stores, raw_root, name):
    store = stores[name]
    skeleton = get_skeleton(FORMAT_DATASETS[name].skeleton)
    assert (store.attrs["skeleton"], store.attrs["converter"], store.attrs["dataset"]) == (
        skeleton.name, "demo_format", name)
    assert store.load("pose2d").shape == (len(store), skeleton.num_joints, 2)
    assert store.attrs["counts"] == {"train": 2, "val": 2, "test": 2}
    assert store.load("joint_valid").any(axis=1).all()
    written_splits = json.loads((raw_root / name / "dataset.json").read_text())["subjects"]
    codes = store.attrs["codes"]
    splits = {(codes["subject"][s], codes["split"][k]) for s, k in zip(store.load("subject"), store.load("split"))}
    assert splits == set(written_splits.items())


@pytest.mark.parametrize("name", CHECKED)
def test_stores_pass_the_quality_checks(stores, name):
    failed = {o.name for o in run_store_checks(stores[name]) if not o.passed}
    assert failed == set()


@pytest.mark.parametrize("name", NAMES_3D)
def test_converted_3d_poses_are_the_written_world_poses_seen_by_the_written_cameras(stores, raw_root, name):
    store = stores[name]
    pose3d, extrinsics = store.load("pose3d").astype(np.float64), store.load("extrinsics").astype(np.float64)
    assert np.isfinite(pose3d).all(axis=-1).mean() > 0.8
    for i, (sequence, camera_id, frame) in enumerate(_example_keys(store)):
        world = np.load(raw_root / name / sequence / "poses3d.npy")[frame].astype(np.float64)
        camera = _in_frame(_written_cameras(raw_root / name / sequence / "cameras.json")[camera_id], frame)
        crop_rotation = extrinsics[i, :3, :3]  # the store's crop camera shares the written camera's centre
        expected = camera.world_to_camera(world) @ (crop_rotation @ camera.R.T).T
        np.testing.assert_allclose(pose3d[i], expected, rtol=1e-5, atol=1e-2)
        back_in_world = (pose3d[i] - extrinsics[i, :3, 3]) @ crop_rotation
        np.testing.assert_allclose(back_in_world, world, rtol=1e-5, atol=1e-2)


def test_the_2d_only_dataset_has_its_written_image_labels_and_no_3d(stores, raw_root):
    name = "demo_ikea_asm_17"
    store = stores[name]
    assert not store.attrs["has_pose3d"] and np.isnan(store.load("pose3d")).all()
    assert not list((raw_root / name).rglob("poses3d.npy"))
    pose2d, valid = store.load("pose2d").astype(np.float64), store.load("joint_valid")
    intrinsics, extrinsics = store.load("intrinsics").astype(np.float64), store.load("extrinsics").astype(np.float64)
    for i, (sequence, camera_id, frame) in enumerate(_example_keys(store)):
        labels = np.load(raw_root / name / sequence / f"poses2d.{camera_id}.npy")[frame]
        assert np.array_equal(valid[i], labels[:, 2] == 1)
        # the crop camera's rays through the stored 2D labels hit the written labels in the written frame
        camera = _in_frame(_written_cameras(raw_root / name / sequence / "cameras.json")[camera_id], frame)
        uv1 = np.concatenate([pose2d[i][valid[i]], np.ones((valid[i].sum(), 1))], axis=1)
        rays = uv1 @ np.linalg.inv(intrinsics[i]).T @ extrinsics[i, :3, :3] @ camera.R.T
        np.testing.assert_allclose(camera.camera_to_image(rays), labels[valid[i], :2], atol=1e-2)


def test_the_same_seed_gives_byte_identical_files_and_another_seed_another_dataset(raw_root, tmp_path):
    for name in NAMES:
        _generate(tmp_path / "again", name)
    assert _files(tmp_path / "again") == _files(raw_root)
    other = _generate(tmp_path / "other", "demo_ghum_35", seed=1)
    assert _files(other) != _files(raw_root / "demo_ghum_35")


def _edit_json(path: Path, edit) -> None:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _unknown_skeleton(root):
    _edit_json(root / "dataset.json", lambda d: d.update(skeleton="kinectv3_25"))
    return root / "dataset.json", "skeleton"


def _reordered_joints(root):
    _edit_json(root / "dataset.json", lambda d: d["joint_names"].reverse())
    return root / "dataset.json", "joint_names"


def _unknown_split(root):
    _edit_json(root / "dataset.json", lambda d: d["subjects"].update(S1="holdout"))
    return root / "dataset.json", "subjects.S1"


def _subject_without_split(root):
    shutil.copytree(root / "S1", root / "S99")
    return root / "dataset.json", "subjects"


def _poses3d_of_another_joint_count(root):
    path = _first(root, "*/*/poses3d.npy")
    np.save(path, np.load(path)[:, :-1])
    return path, "poses3d"


def _poses2d_of_another_joint_count(root):
    path = _first(root, "*/*/poses2d.*.npy")
    np.save(path, np.load(path)[:, :-1])
    return path, "poses2d"


def _moving_camera_missing_a_frame(root):
    path = _first(root, "*/*/cameras.json")
    _edit_json(path, lambda d: d["cameras"][0]["frames"].pop())
    return path, "cameras[0].frames"


def _malformed_static_camera(root):
    path = _first(root, "*/*/cameras.json")
    _edit_json(path, lambda d: d["cameras"][1].update(K=[[1.0, 0.0], [0.0, 1.0]]))
    return path, "cameras[1].K"


def _missing_crop_boxes(root):
    path = _first(root, "*/*/crops.*.npy")
    path.unlink()
    return path, None


@pytest.mark.parametrize("dataset, damage", [
    ("demo_kinectv2_25", _unknown_skeleton),
    ("demo_kinectv2_25", _reordered_joints),
    ("demo_umpm_15", _unknown_split),
    ("demo_umpm_15", _subject_without_split),
    ("demo_bml_movi_87", _poses3d_of_another_joint_count),
    ("demo_ikea_asm_17", _poses2d_of_another_joint_count),
    ("demo_sailvos_26", _moving_camera_missing_a_frame),
    ("demo_total_capture_21", _malformed_static_camera),
    ("demo_mads_19", _missing_crop_boxes),
], ids=lambda value: value.__name__.strip("_") if callable(value) else value)
def test_bad_input_names_the_file_and_the_field(raw_root, tmp_path, dataset, damage):
    root = Path(shutil.copytree(raw_root / dataset, tmp_path / dataset))
    damaged_file, field = damage(root)
    with pytest.raises(RawDataError) as info:
        convert(CONVERTER, root, tmp_path / "store.zarr", image_size=STORE_IMAGE_SIZE)
    assert (info.value.path, info.value.field) == (damaged_file, field)
    assert str(damaged_file) in str(info.value)
    assert not (tmp_path / "store.zarr").exists()


def test_a_converter_names_its_skeleton_or_reads_it_from_the_raw_folder(raw_root):
    assert converter_skeleton(get_converter("demo_h36m"), raw_root / "anywhere") == "h36m_17"
    assert converter_skeleton(CONVERTER, raw_root / "demo_smpl_head_30") == "smpl+head_30"
    (example, image), = sample_examples(CONVERTER, raw_root / "demo_ghum_35", count=1)
    assert example.camera == "handheld" and example.pose3d.shape == (get_skeleton("ghum_35").num_joints, 3)
    assert image.shape == (GENERATED_IMAGE_SIZE, GENERATED_IMAGE_SIZE, 3)
    lacking = types.ModuleType("lacking")
    lacking.NAME, lacking.VERSION, lacking.SKELETON, lacking.read_examples = "lacking", "1", None, lambda *a: []
    with pytest.raises(TypeError, match="skeleton_of"):
        check_converter(lacking)
