"""The aspset converter on small raw trees in ASPset-510's release layout (docs/converters/aspset.md).

The trees are written as the release is: ``splits.csv`` without a header, camera JSONs with a 3x4
``intrinsic_matrix`` and a 4x4 world->camera ``extrinsic_matrix`` (identity for the left camera), joints
as C3D files (written with the ``c3d`` package: float points, POINT:UNITS, POINT:LABELS = posekit's
aspset_17j names, POINT:SKEL), box CSVs with a header row, and frames as jpg folders and/or .mkv videos
(PyAV). Frames are 1/40 of the real 3840x2160 ones; the right camera and the planted pose are the real
04ac numbers of the official toolkit's tests (anibali/aspset-510 tests/conftest.py), the intrinsics scaled.
"""

import inspect
import json
import logging
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assets.cameras import Camera
from assets.converters import get_converter
from assets.converters.common import convert
from assets.converters.interface import OptionError, resolve_options
from assets.converters.raw_io import RawDataError
from assets.quality import run_store_checks
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.synthetic.release_layouts import write_boxes_csv, write_c3d, write_camera_json, write_splits_csv
from converter_checks import assert_refused_keeping_the_store, assert_labels_on_the_rendered_joints
from raw_media import write_video

av = pytest.importorskip("av")
c3d = pytest.importorskip("c3d")

aspset = get_converter("aspset")

SCALE = 1 / 40
WIDTH, HEIGHT = 96, 54  # 3840 x 2160 / 40
IMAGE_SIZE = 64
CAMERAS = ("left", "mid", "right")

# anibali/aspset-510 tests/conftest.py: camera 04ac-right (full resolution) and one frame of clip 04ac-0026
REAL_K = np.array([[3908.201416, 0.0, 1907.136108], [0.0, 3904.395020, 1082.651855], [0.0, 0.0, 1.0]])
REAL_RIGHT_EXTRINSIC = np.array([
    [0.355310, -0.037651, 0.933990, -16513.444863],
    [0.010982, 0.999288, 0.036106, -694.394037],
    [-0.934684, -0.002572, 0.355470, 12560.579233],
    [0.0, 0.0, 0.0, 1.0]])
REAL_JOINTS = np.array([
    [-518.131775, 1121.47400, 18538.8398], [-473.199890, 700.602722, 18523.4902],
    [-423.036896, 308.107239, 18527.5508], [-280.203583, 195.340317, 18422.4238],
    [-486.079163, 62.3998604, 18336.7559], [-391.279541, -183.917984, 18391.5391],
    [-505.070129, 1012.66479, 18736.2852], [-235.622971, 676.157654, 18690.8340],
    [-380.700531, 306.988159, 18674.6523], [-201.497665, 96.0998917, 18692.3438],
    [-399.593689, 57.1454849, 18776.0781], [-434.380341, -188.396454, 18766.8672],
    [-412.053192, -511.558380, 18571.8145], [-389.499725, -358.688873, 18568.6406],
    [-415.598541, -277.202179, 18583.1680], [-456.611267, 67.3956985, 18614.7578],
    [-472.049225, 243.091171, 18629.4688]])
# ... and its projection into 04ac-0026-right (pixels of the full frame), the first 3 joints
REAL_RIGHT_PIXELS = np.array([[2021.66769504, 1299.42125245], [2025.42582034, 1216.08135107],
                              [2032.97349219, 1138.15800483]])

# (subject, clip, split, camera_id of splits.csv, frames); 12ab-0004's joints are not in the tree (the
# test-joints archive is separate: a clip can be missing)
CLIPS = [("04ac", "0026", "train", "all", 11), ("04ac", "0027", "val", "all", 8),
         ("12ab", "0003", "test", "mid", 6), ("12ab", "0004", "test", "right", 6)]
MISSING_TEST_JOINTS = ("12ab", "0004")
EMPTY_BOX = ("04ac", "0027", "mid", 5)  # this frame's box row is empty: the frame is skipped for that view
FOLDER = {"train": "trainval", "val": "trainval", "test": "test"}
# with the default frame step 5: train 3 frames x 3 views, val 2 x 3 - 1, test 2 x 1 (12ab-0004 skipped)
EXPECTED_COUNTS = {"train": 9, "val": 5, "test": 2}


# -- the planted truth -------------------------------------------------------------------------

def scaled_k() -> np.ndarray:
    """The real K for frames 1/40 the size (pixel centres on integers: u' = (u + 0.5) s - 0.5)."""
    K = REAL_K * SCALE
    K[:2, 2] = (REAL_K[:2, 2] + 0.5) * SCALE - 0.5
    K[2, 2] = 1.0
    return K


def _looking_at(centre, target, roll) -> np.ndarray:
    """4x4 world->camera of a camera at ``centre`` looking at ``target`` (world = left camera: y down)."""
    forward = np.asarray(target, float) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    R = np.stack([c * right + s * down, -s * right + c * down, forward])
    return np.block([[R, (-R @ centre)[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])


@lru_cache(maxsize=None)
def planted_extrinsic(subject: str, camera: str) -> np.ndarray:
    if camera == "left":
        return np.eye(4)
    if camera == "right":
        if subject == "04ac":
            return REAL_RIGHT_EXTRINSIC.copy()
        return _looking_at(np.array([17500.0, -300.0, 7000.0]), [-350.0, 300.0, 18500.0], -0.01)
    shift = 0.0 if subject == "04ac" else 900.0
    return _looking_at(np.array([8200.0 + shift, -500.0, 3100.0]), [-400.0, 250.0, 18600.0], 0.03)


def planted_camera(subject: str, camera: str) -> Camera:
    extrinsic = planted_extrinsic(subject, camera)
    return Camera(K=scaled_k(), R=extrinsic[:3, :3], t=extrinsic[:3, 3])


@lru_cache(maxsize=None)
def planted_world(subject: str, clip: str, num_frames: int) -> np.ndarray:
    """[frames, 17, 3] world mm (= left camera frame): the real pose, walking and moving its joints."""
    rng = np.random.default_rng(int(clip))
    jitter = rng.normal(scale=25.0, size=(num_frames, 17, 3))
    steps = np.arange(num_frames)[:, None, None] * np.array([35.0, 0.0, 25.0])
    return REAL_JOINTS[None] + steps + jitter + (0.0 if subject == "04ac" else 300.0)


def planted_boxes(subject, clip, camera, world) -> np.ndarray:
    uv = planted_camera(subject, camera).world_to_image(world)
    return np.concatenate([uv.min(axis=1) - 2.0, uv.max(axis=1) + 2.0], axis=1)


def render(camera: Camera, joints_world: np.ndarray, frame: int) -> np.ndarray:
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    image = np.stack([90 + 40 * np.sin(u / 9 + 0.2 * frame) + 20 * np.cos(v / 13),
                      80 + 30 * np.cos(v / 7 - 0.1 * frame) + 20 * np.sin(u / 17),
                      70 + 35 * np.sin((u + v) / 11)], axis=-1)
    for x, y in camera.world_to_image(joints_world):
        image += 150 * np.exp(-((u - x) ** 2 + (v - y) ** 2) / 1.5)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


# -- writing the raw tree ----------------------------------------------------------------------

def write_camera(path: Path, extrinsic: np.ndarray, *, flat: bool = False, drop: str | None = None,
                 intrinsic: np.ndarray | None = None) -> None:
    K = np.concatenate([scaled_k(), np.zeros((3, 1))], axis=1) if intrinsic is None else intrinsic
    write_camera_json(path, K, extrinsic, flat=flat)
    if drop is not None:
        data = json.loads(path.read_text())
        del data[drop]
        path.write_text(json.dumps(data))


def views_of(camera_id: str) -> tuple:
    return CAMERAS if camera_id == "all" else (camera_id,)


def build_raw(root: Path, *, frames: bool, videos: bool) -> Path:
    root.mkdir(parents=True)
    write_splits_csv(root / "splits.csv", [(s, c, split, cam) for s, c, split, cam, _ in CLIPS])
    for subject, folder in (("04ac", "trainval"), ("12ab", "test")):
        for camera in CAMERAS:
            write_camera(root / folder / "cameras" / subject / f"{subject}-{camera}.json",
                         planted_extrinsic(subject, camera), flat=camera == "mid")  # both forms occur
    for subject, clip, split, camera_id, num_frames in CLIPS:
        split_dir = root / FOLDER[split]
        world = planted_world(subject, clip, num_frames)
        if (subject, clip) != MISSING_TEST_JOINTS:
            write_c3d(split_dir / "joints_3d" / subject / f"{subject}-{clip}.c3d", world)
        for camera in views_of(camera_id):
            stem = f"{subject}-{clip}-{camera}"
            boxes = planted_boxes(subject, clip, camera, world)
            if (subject, clip, camera) == EMPTY_BOX[:3]:
                boxes[EMPTY_BOX[3]] = np.nan
            write_boxes_csv(split_dir / "boxes" / subject / f"{stem}.csv", boxes)
            images = [render(planted_camera(subject, camera), world[f], f) for f in range(num_frames)]
            if frames:
                folder = split_dir / "frames" / subject / stem
                folder.mkdir(parents=True)
                for f, image in enumerate(images):
                    Image.fromarray(image).save(folder / f"{f:06d}.jpg", quality=95)
            if videos:
                write_video(split_dir / "videos" / subject / f"{stem}.mkv", images, bit_rate=8_000_000)
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return build_raw(tmp_path_factory.mktemp("aspset") / "aspset", frames=True, videos=True)


@pytest.fixture(scope="module")
def converted(pristine, tmp_path_factory):
    return convert(aspset, pristine, tmp_path_factory.mktemp("aspset_store") / "aspset.zarr", image_size=IMAGE_SIZE)


def examples_of(raw_root, given=None):
    return list(aspset.read_examples(raw_root, resolve_options(aspset, given)))


def decoded(store, key):
    table = store.attrs["codes"][key]
    return [table[i] for i in store.load(key)]


def clip_frames(sequence: str) -> int:
    return next(n for s, c, *_, n in CLIPS if f"{s}-{c}" == sequence)


# -- protocol ----------------------------------------------------------------------------------

def test_registered_with_the_declared_options():
    assert get_converter("aspset") is aspset
    assert (aspset.NAME, aspset.SKELETON, aspset.CAMERAS) == ("aspset", "aspset_17", CAMERAS)
    options = resolve_options(aspset, None)
    # 50 fps videos; the test protocol evaluates every 5th frame
    assert options.frame_step == aspset.DEFAULT_FRAME_STEP == 5 and options.cameras == CAMERAS
    assert options.extra == {"check_boxes": True}
    with pytest.raises(OptionError, match="cameras"):
        resolve_options(aspset, {"cameras": ["centre"]})
    with pytest.raises(OptionError, match="check_boxes"):
        list(aspset.read_examples(Path("/nonexistent"), resolve_options(aspset, {"check_boxes": "yes"})))
    assert inspect.isgenerator(aspset.read_examples(Path("/nonexistent"), options))  # lazy: nothing read yet


def test_c3d_joint_labels_are_the_project_aspset_17_order():
    """posekit's aspset_17j names (the C3D POINT:LABELS) in the order of the project's aspset_17."""
    short = {"right": "r", "left": "l", "ankle": "ank", "knee": "kne", "hip": "hip", "wrist": "wri",
             "elbow": "elb", "shoulder": "sho", "head_top": "htop", "head": "head", "neck": "neck",
             "spine": "spin", "pelvis": "pelv"}

    def abbreviated(label):
        side, _, part = label.partition("_")
        return short[side] + short[part] if side in ("right", "left") else short[label]

    assert [abbreviated(label) for label in aspset.JOINT_LABELS] == list(get_skeleton("aspset_17").joint_names)


# -- conversion ----------------------------------------------------------------------------------

def test_planted_joints_come_back_through_every_camera(converted):
    """3D to < 0.1 mm after the crop rotation, in each camera's frame and in the world (= left) frame."""
    store = open_store(converted.path)
    pose3d, pose2d = store.load("pose3d").astype(np.float64), store.load("pose2d").astype(np.float64)
    extrinsics, intrinsics = store.load("extrinsics").astype(np.float64), store.load("intrinsics").astype(np.float64)
    subjects, sequences, cameras = decoded(store, "subject"), decoded(store, "sequence"), decoded(store, "camera")
    frames = store.load("frame")
    assert set(cameras) == set(CAMERAS)
    for i in range(len(store)):
        world = planted_world(subjects[i], sequences[i].split("-")[1], clip_frames(sequences[i]))[frames[i]]
        frame_camera = planted_camera(subjects[i], cameras[i])
        rotation = extrinsics[i, :3, :3] @ frame_camera.R.T  # frame camera -> crop camera
        tolerance = 1e-6 * np.abs(world).max() + 0.01  # float32 storage of ~18.5 m coordinates
        np.testing.assert_allclose(pose3d[i] @ rotation, frame_camera.world_to_camera(world), atol=tolerance)
        np.testing.assert_allclose((pose3d[i] - extrinsics[i, :3, 3]) @ extrinsics[i, :3, :3], world, atol=tolerance)
        # 2D: the planted frame pixels, seen through the crop camera (same centre, rotated, its own K)
        rays = np.concatenate([frame_camera.image_to_normalized(frame_camera.world_to_image(world)),
                               np.ones((17, 1))], axis=1) @ rotation.T
        expected = (rays[:, :2] / rays[:, 2:]) @ intrinsics[i][:2, :2].T + intrinsics[i][:2, 2]
        np.testing.assert_allclose(pose2d[i], expected, atol=1e-4 * IMAGE_SIZE)
    assert store.load("joint_valid").all() and store.attrs["skeleton"] == "aspset_17"


def test_splits_identities_and_frames(converted):
    store = open_store(converted.path)
    assert converted.counts == EXPECTED_COUNTS
    splits = [store.attrs["codes"]["split"][s] for s in store.load("split")]
    keys = set(zip(decoded(store, "sequence"), decoded(store, "camera"), store.load("frame").tolist(), splits))
    expected = set()
    for subject, clip, split, camera_id, num_frames in CLIPS:
        if (subject, clip) == MISSING_TEST_JOINTS:
            continue
        for camera in views_of(camera_id):
            expected |= {(f"{subject}-{clip}", camera, f, split) for f in range(0, num_frames, 5)
                         if (subject, clip, camera, f) != EMPTY_BOX}
    assert keys == expected
    assert set(decoded(store, "subject")) == {"04ac", "12ab"}


def test_store_passes_every_quality_check(converted):
    failed = {o.name: o.description for o in run_store_checks(converted.path) if not o.passed}
    assert not failed


def test_labels_sit_on_the_person_in_the_crops(converted):
    """The rendered joint blobs are where pose2d says: calibration, frames and crop agree."""
    assert_labels_on_the_rendered_joints(open_store(converted.path), IMAGE_SIZE)


# -- pitfalls ------------------------------------------------------------------------------------

def test_world_is_the_left_camera(pristine, raw):
    """Pitfall: the C3D joints are in the left camera's frame; its extrinsic is the identity."""
    examples = examples_of(pristine, {"cameras": ["left"], "frame_step": 1})
    assert examples and {e.camera for e in examples} == {"left"}
    for e in examples:
        world = planted_world(e.subject, e.sequence.split("-")[1], clip_frames(e.sequence))[e.frame]
        np.testing.assert_array_equal(e.frame_camera.extrinsic_matrix, np.eye(4))
        np.testing.assert_allclose(e.pose3d, world, rtol=1e-6)  # float32 in the C3D
    # a left camera that is not the identity is not ASPset's world frame
    path = raw / "trainval" / "cameras" / "04ac" / "04ac-left.json"
    write_camera(path, planted_extrinsic("04ac", "mid"))
    with pytest.raises(RawDataError, match="extrinsic_matrix.*identity") as info:
        examples_of(raw)
    assert info.value.path == path


def test_real_04ac_right_camera_reproduces_the_official_projection(tmp_path):
    """The release's matrices (3x4 K|0, world->camera 4x4 in mm) as the converter reads them give the
    official toolkit's 2D joints of 04ac-0026-right."""
    path = tmp_path / "04ac-right.json"
    write_camera(path, REAL_RIGHT_EXTRINSIC, intrinsic=np.concatenate([REAL_K, np.zeros((3, 1))], axis=1))
    camera = aspset.load_camera(path, "right")
    np.testing.assert_allclose(camera.world_to_image(REAL_JOINTS[:3]), REAL_RIGHT_PIXELS, rtol=1e-7)
    assert 18000 < camera.world_to_camera(REAL_JOINTS)[:, 2].min()  # ~19.5 m in front of the right camera


def test_intrinsics_are_3x4_and_nested_or_flat(tmp_path):
    """Pitfall: intrinsic_matrix is 3x4 (K|0); both matrices may be nested rows or flat lists."""
    nested, flat = tmp_path / "nested.json", tmp_path / "flat.json"
    extrinsic = planted_extrinsic("04ac", "mid")
    write_camera(nested, extrinsic)
    write_camera(flat, extrinsic, flat=True)
    assert len(json.loads(flat.read_text())["intrinsic_matrix"]) == 12
    a, b = aspset.load_camera(nested, "mid"), aspset.load_camera(flat, "mid")
    for key in ("K", "R", "t"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    np.testing.assert_allclose(a.K, scaled_k())
    np.testing.assert_allclose(a.extrinsic_matrix, extrinsic)
    bad = tmp_path / "bad.json"
    for intrinsic, got in ((scaled_k(), r"\[3, 3\]"), (np.concatenate([scaled_k(), np.ones((3, 1))], axis=1),
                                                        "last column")):
        write_camera(bad, extrinsic, intrinsic=intrinsic)
        with pytest.raises(RawDataError, match=f"field 'intrinsic_matrix'.*{got}"):
            aspset.load_camera(bad, "mid")


def test_flat_and_nested_camera_files_give_the_same_examples(pristine, raw):
    for camera in CAMERAS:  # the tree stores mid flat and the others nested: swap them
        write_camera(raw / "trainval" / "cameras" / "04ac" / f"04ac-{camera}.json", planted_extrinsic("04ac", camera),
                     flat=camera != "mid")
    a, b = examples_of(pristine), examples_of(raw)
    assert [(e.sequence, e.camera, e.frame) for e in a] == [(e.sequence, e.camera, e.frame) for e in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.pose3d, y.pose3d)


def test_box_csv_header_is_skipped_and_an_empty_row_skips_its_frame(pristine, tmp_path):
    """Pitfall: the box CSV has one header row; data row i is frame i. A frame without a box is skipped."""
    subject, clip, camera, frame = EMPTY_BOX
    path = pristine / "trainval" / "boxes" / subject / f"{subject}-{clip}-{camera}.csv"
    assert path.read_text().splitlines()[0] == "x1,y1,x2,y2"
    boxes = aspset.read_boxes(path)
    world = planted_world(subject, clip, clip_frames(f"{subject}-{clip}"))
    planted = planted_boxes(subject, clip, camera, world)
    assert len(boxes) == len(planted) == 8
    np.testing.assert_allclose(np.delete(boxes, frame, axis=0), np.delete(planted, frame, axis=0), atol=1e-4)
    assert np.isnan(boxes[frame]).all()
    trailing = tmp_path / "trailing.csv"
    trailing.write_text(path.read_text() + "\n\n")  # blank lines at the end are not frames
    np.testing.assert_array_equal(aspset.read_boxes(trailing), boxes)
    kept = {(e.camera, e.frame) for e in examples_of(pristine, {"frame_step": 1}) if e.sequence == f"{subject}-{clip}"}
    assert (camera, frame) not in kept and {("left", frame), ("right", frame), (camera, frame - 1)} <= kept


def test_splits_csv_has_no_header_and_all_means_three_cameras(pristine, raw):
    """Pitfall: splits.csv has no header row (the first row is a clip); 'all' = left, mid, right."""
    rows = aspset.read_splits(pristine)
    assert rows[0] == ("04ac", "0026", "train", CAMERAS) and rows[2] == ("12ab", "0003", "test", ("mid",))
    splits = raw / "splits.csv"
    splits.write_text("subject_id,clip_id,split,camera_id\n" + splits.read_text())
    with pytest.raises(RawDataError, match=r"splits\.csv: field 'row 1'.*no header"):
        aspset.read_splits(raw)


def test_test_joints_present_or_absent(pristine, raw, caplog):
    """The test joints ship in their own archive: a test clip without them is skipped with a log message;
    a train/val clip without them is an error."""
    with caplog.at_level(logging.WARNING, logger="assets.converters.aspset"):
        examples = examples_of(pristine)
    assert {e.sequence for e in examples if e.split == "test"} == {"12ab-0003"}
    assert any("12ab-0004" in r.getMessage() and "test-joints_3d" in r.getMessage() for r in caplog.records)
    shutil.rmtree(raw / "test" / "joints_3d")  # the test-joints archive not extracted at all
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="assets.converters.aspset"):
        examples = examples_of(raw)
    assert not [e for e in examples if e.split == "test"] and len(examples) == 14
    assert sum("skipping test clip" in r.getMessage() for r in caplog.records) == 2


def test_metres_are_converted_and_unknown_units_refused(tmp_path):
    """POINT:UNITS decides the scale: m -> x1000; an unknown unit, or metres labelled mm, is an error."""
    world = planted_world("04ac", "0026", 3)
    write_c3d(tmp_path / "m.c3d", world / 1000.0, units="m")
    np.testing.assert_allclose(aspset.read_joints(tmp_path / "m.c3d"), world, rtol=1e-6)
    write_c3d(tmp_path / "inch.c3d", world / 25.4, units="in")
    with pytest.raises(RawDataError, match=r"inch\.c3d: field 'POINT:UNITS'.*'in'"):
        aspset.read_joints(tmp_path / "inch.c3d")
    write_c3d(tmp_path / "mislabelled.c3d", world / 1000.0, units="mm")
    with pytest.raises(RawDataError, match=r"mislabelled\.c3d: field 'POINT:UNITS'.*metres"):
        aspset.read_joints(tmp_path / "mislabelled.c3d")


def test_c3d_labels_decide_the_joint_order_and_invalid_points_are_unlabelled(tmp_path):
    world = planted_world("04ac", "0026", 3)
    order = np.random.default_rng(1).permutation(17)
    shuffled = world[:, order].copy()
    shuffled[1, 4] = np.nan  # written as C3D's invalid point
    write_c3d(tmp_path / "shuffled.c3d", shuffled, labels=[aspset.JOINT_LABELS[j] for j in order])
    joints = aspset.read_joints(tmp_path / "shuffled.c3d")
    invalid = order[4]  # the 5th point of the file is joint order[4]
    assert np.isnan(joints[1, invalid]).all() and np.isfinite(np.delete(joints, 1, axis=0)).all()
    joints[1, invalid] = world[1, invalid]
    np.testing.assert_allclose(joints, world, rtol=1e-6)


def test_the_boxes_check_the_calibration(raw):
    """Joints projected through a wrong extrinsic (here with the translation in metres) miss the boxes."""
    path = raw / "trainval" / "cameras" / "04ac" / "04ac-right.json"
    metres = REAL_RIGHT_EXTRINSIC.copy()
    metres[:3, 3] /= 1000.0
    write_camera(path, metres)
    with pytest.raises(RawDataError, match=r"04ac-right\.json: field 'extrinsic_matrix'.*boxes") as info:
        examples_of(raw)
    assert info.value.path == path
    assert examples_of(raw, {"check_boxes": False, "cameras": ["left"]})


# -- frames from videos or folders ---------------------------------------------------------------

def test_video_and_frame_folders_give_the_same_labels(pristine, converted, tmp_path):
    videos_only = Path(shutil.copytree(pristine, tmp_path / "raw"))
    for folder in videos_only.glob("*/frames"):
        shutil.rmtree(folder)
    examples = examples_of(videos_only)
    assert all(e.image_path.suffix == ".mkv" and e.frame_index == e.frame for e in examples)
    # one video's frames in ascending order, one video after the other
    order = [(e.image_path, e.frame) for e in examples]
    assert all(a[1] < b[1] for a, b in zip(order, order[1:]) if a[0] == b[0])
    runs = [path for k, (path, _) in enumerate(order) if k == 0 or order[k - 1][0] != path]
    assert len(runs) == len(set(runs)) == 7  # each video once: 2 clips x 3 views + 1 test view
    from_video = open_store(convert(aspset, videos_only, tmp_path / "v.zarr", image_size=IMAGE_SIZE).path)
    from_frames = open_store(converted.path)
    key = lambda s: list(zip(decoded(s, "sequence"), decoded(s, "camera"), s.load("frame").tolist()))  # noqa: E731
    assert key(from_video) == key(from_frames)
    for name in ("pose3d", "pose2d", "intrinsics", "extrinsics", "joint_valid"):
        np.testing.assert_array_equal(from_video.load(name), from_frames.load(name))
    difference = np.abs(from_video.load("image").astype(float) - from_frames.load("image").astype(float))
    assert difference.mean() < 6  # JPEG vs mpeg4 of the same rendered frames


def test_frame_folders_are_preferred_and_missing_jpgs_come_from_the_video(raw):
    folder = raw / "trainval" / "frames" / "04ac" / "04ac-0026-mid"
    (folder / "000005.jpg").unlink()
    examples = [e for e in examples_of(raw) if e.sequence == "04ac-0026" and e.camera == "mid"]
    assert [(e.frame, e.image_path.name, e.frame_index) for e in examples] == [
        (0, "000000.jpg", None), (5, "04ac-0026-mid.mkv", 5), (10, "000010.jpg", None)]


def test_frame_step_and_cameras_options(pristine, tmp_path):
    result = convert(aspset, pristine, tmp_path / "o.zarr", image_size=16,
                     options={"frame_step": 2, "cameras": ["mid", "right"]})
    store = open_store(result.path)
    assert set(decoded(store, "camera")) == {"mid", "right"}
    got = set(zip(decoded(store, "sequence"), decoded(store, "camera"), store.load("frame").tolist()))
    expected = {(f"{s}-{c}", cam, f) for s, c, _, camera_id, n in CLIPS if (s, c) != MISSING_TEST_JOINTS
                for cam in views_of(camera_id) if cam in ("mid", "right") for f in range(0, n, 2)}
    assert got == expected  # 12ab-0003 is a mid-camera test clip: kept; no val mid frame 5 at step 2 anyway
    assert store.attrs["converter_options"] == {"frame_step": 2, "cameras": ["mid", "right"], "check_boxes": True}


# -- bad input -----------------------------------------------------------------------------------

def _bad_cases():
    def c3d_wrong_point_count(root):
        path = root / "trainval" / "joints_3d" / "04ac" / "04ac-0027.c3d"
        write_c3d(path, planted_world("04ac", "0027", 8)[:, :16], labels=aspset.JOINT_LABELS[:16])
        return path, "POINT:USED"

    def c3d_unknown_unit(root):
        path = root / "trainval" / "joints_3d" / "04ac" / "04ac-0026.c3d"
        write_c3d(path, planted_world("04ac", "0026", 11), units="furlong")
        return path, "POINT:UNITS"

    def c3d_wrong_rate(root):
        path = root / "test" / "joints_3d" / "12ab" / "12ab-0003.c3d"
        write_c3d(path, planted_world("12ab", "0003", 6), rate=100.0)
        return path, "POINT:RATE"

    def c3d_truncated(root):
        path = root / "trainval" / "joints_3d" / "04ac" / "04ac-0026.c3d"
        path.write_bytes(path.read_bytes()[:1500])
        return path, None

    def missing_trainval_joints(root):
        path = root / "trainval" / "joints_3d" / "04ac" / "04ac-0027.c3d"
        path.unlink()
        return path, None

    def camera_without_intrinsics(root):
        path = root / "trainval" / "cameras" / "04ac" / "04ac-right.json"
        write_camera(path, REAL_RIGHT_EXTRINSIC, drop="intrinsic_matrix")
        return path, "intrinsic_matrix"

    def camera_extrinsic_not_rigid(root):
        path = root / "test" / "cameras" / "12ab" / "12ab-mid.json"
        write_camera(path, planted_extrinsic("12ab", "mid") * np.array([[1.2], [1.2], [1.2], [1.0]]))
        return path, "extrinsic_matrix"

    def malformed_box_row(root):
        path = root / "trainval" / "boxes" / "04ac" / "04ac-0026-left.csv"
        lines = path.read_text().splitlines()
        lines[3] = lines[3].rsplit(",", 1)[0]  # frame 2: three numbers
        path.write_text("\n".join(lines) + "\n")
        return path, "row 4 (frame 2)"

    def box_not_a_number(root):
        path = root / "test" / "boxes" / "12ab" / "12ab-0003-mid.csv"
        lines = path.read_text().splitlines()
        lines[1] = "12.5,abc,40.0,50.0"
        path.write_text("\n".join(lines) + "\n")
        return path, "row 2 (frame 0)"

    def box_file_without_header(root):
        path = root / "trainval" / "boxes" / "04ac" / "04ac-0027-right.csv"
        path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
        return path, "row 1"

    def more_boxes_than_joint_frames(root):
        path = root / "trainval" / "boxes" / "04ac" / "04ac-0026-mid.csv"
        path.write_text(path.read_text() + "1,2,3,4\n")
        return path, None

    def splits_unknown_camera(root):
        path = root / "splits.csv"
        path.write_text(path.read_text().replace("12ab,0003,test,mid", "12ab,0003,test,centre"))
        return path, "row 3"

    def no_video_and_no_frames(root):
        shutil.rmtree(root / "trainval" / "frames" / "04ac" / "04ac-0027-left")
        path = root / "trainval" / "videos" / "04ac" / "04ac-0027-left.mkv"
        path.unlink()
        return path, None

    return {f.__name__: f for f in (c3d_wrong_point_count, c3d_unknown_unit, c3d_wrong_rate, c3d_truncated,
                                    missing_trainval_joints, camera_without_intrinsics, camera_extrinsic_not_rigid,
                                    malformed_box_row, box_not_a_number, box_file_without_header,
                                    more_boxes_than_joint_frames, splits_unknown_camera, no_video_and_no_frames)}


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_bad_input_names_file_and_field_and_keeps_the_published_store(raw, converted, tmp_path, case):
    # a private copy of the published store location (its versions and the pointer to the current one)
    store_path = Path(shutil.copytree(converted.path.parent, tmp_path / "aspset.zarr"))
    damaged, field = _bad_cases()[case](raw)
    error = assert_refused_keeping_the_store(
        lambda: convert(aspset, raw, store_path, image_size=IMAGE_SIZE), store_path, damaged,
        repr(field) if field else None)
    assert error.path == damaged and error.field == field
