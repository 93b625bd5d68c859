import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from assets.cameras import Camera
from assets.converters import pose2sim_demo
from assets.converters.common import convert
from assets.converters.raw_io import RawDataError
from assets.real import blazepose
from assets.real.cache import POSE2SIM_WHEEL, AcquisitionError, mediapipe_python, pose2sim_wheel, read_member
from assets.real.pose2sim import BONES, CALIBRATION_MEMBER, build, synchronised_views
from assets.real.qca import read_qca
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.triangulation import triangulate

MINIMAL_QCA = """<?xml version='1.0' encoding='ASCII'?>
<calibration type="regular"><cameras>
  <camera active="1" avg-residual="0.4" model="none" serial="cam01">
    <fov_video bottom="1919" left="0" right="1087" top="0"/>
    <transform r11="1" r12="0" r13="0" r21="0" r22="1" r23="0" r31="0" r32="0" r33="1" x="0" y="0" z="3000"/>
    <intrinsic centerPointU="34816" centerPointV="61440" focalLengthU="107520" focalLengthV="107520"
      radialDistortion1="0" radialDistortion2="0" radialDistortion3="0"
      tangentalDistortion1="0" tangentalDistortion2="0"/>
  </camera>
</cameras></calibration>
"""


@pytest.fixture(scope="module")
def wheel():
    try:
        return pose2sim_wheel()
    except AcquisitionError as exc:
        pytest.skip(f"the Pose2Sim wheel is not cached and could not be downloaded: {exc}")


@pytest.fixture(scope="module")
def mediapipe(wheel):
    try:
        return mediapipe_python()
    except AcquisitionError as exc:
        pytest.skip(f"the MediaPipe virtualenv could not be created: {exc}")


# -- calibration ---------------------------------------------------------------------------------------

def test_qca_conversion_reproduces_the_demo_calibration(wheel):
    text = read_member(wheel, CALIBRATION_MEMBER)
    cameras = read_qca(text, CALIBRATION_MEMBER)
    assert [c.name for c in cameras] == ["cam01", "cam02", "cam03", "cam04"]
    assert all(c.image_size == (1088, 1920) for c in cameras)  # fov_video 0..1087 x 0..1919, inclusive
    cam01 = cameras[0].camera
    # the transform's x, y, z is the camera position in world millimetres
    np.testing.assert_allclose(cam01.center, [1460.2323709212087, -1909.1590482454608, 1896.5058524092062])
    # intrinsics in 1/64 pixel
    np.testing.assert_allclose(cam01.K, [[107599.671875 / 64, 0, 34110.316406 / 64],
                                         [0, 107588.828125 / 64, 60680.792969 / 64], [0, 0, 1]])
    np.testing.assert_allclose(cam01.dist, np.array([-0.046183, 0.139983, 0.000608, 0.00069, 0.0]) / 64)
    # the same extrinsics as Pose2Sim's calib_qca_fun: read by column, inverted, turned by pi about x
    m = np.array([[0.5536380477336265, 0.8046719867383512, 0.2144479094331626],
                  [-0.4345300743838753, 0.05946489349975602, 0.8986921279821063],
                  [0.7104002579937896, -0.5907342212870501, 0.3825762057979294]])
    r_read = m.T
    r, t = r_read.T, -r_read.T @ cam01.center
    flip = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(cam01.R, flip @ r, atol=1e-12)
    np.testing.assert_allclose(cam01.t, flip @ t, atol=1e-9)
    # every camera has the capture volume's origin in front of it and inside its image
    for q in cameras:
        assert q.camera.world_to_camera(np.zeros(3))[2] > 0
        u, v = q.camera.world_to_image(np.zeros(3))
        assert 0 < u < q.image_size[0] and 0 < v < q.image_size[1]


@pytest.mark.parametrize("change, field", [
    (('focalLengthU="107520"', 'focalLengthU="abc"'), "cameras/camera[0][serial=cam01]/intrinsic@focalLengthU"),
    (('centerPointV="61440" ', ''), "cameras/camera[0][serial=cam01]/intrinsic@centerPointV"),
    (('r22="1"', 'r22="3"'), "cameras/camera[0][serial=cam01]/transform@r11..r33"),
    (('z="3000"', 'z="nan"'), "cameras/camera[0][serial=cam01]/transform@z"),
    (('<fov_video bottom="1919" left="0" right="1087" top="0"/>', ''), "cameras/camera[0][serial=cam01]/fov_video"),
])
def test_corrupted_calibration_names_file_and_field(tmp_path, change, field):
    path = tmp_path / "Calib.qca.txt"
    assert change[0] in MINIMAL_QCA
    path.write_text(MINIMAL_QCA.replace(*change))
    with pytest.raises(RawDataError) as error:
        read_qca(path)
    assert error.value.path == path and error.value.field == field


def test_truncated_calibration_names_the_file(tmp_path):
    assert read_qca(MINIMAL_QCA.encode(), "ok.qca.txt")[0].camera.K[0, 0] == 107520 / 64
    path = tmp_path / "Calib.qca.txt"
    path.write_text(MINIMAL_QCA[:300])
    with pytest.raises(RawDataError, match=f"{path}: expected well-formed Qualisys XML"):
        read_qca(path)


# -- the raw layout and its converter (hand-made, no download) ------------------------------------------

def _look_at(position, name) -> Camera:
    forward = -np.asarray(position, float) / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(forward, right), forward])
    return Camera(K=[[1200, 0, 320], [0, 1200, 480], [0, 0, 1]], dist=[-0.01, 0.02, 0, 0, 0], R=R,
                  t=-R @ np.asarray(position, float), name=name)


def _write_layout(root, cameras, pose, missing=()):
    """A raw pose2sim_demo layout: every camera sees ``pose`` [F, 33, 3] (world mm) except ``missing``."""
    offsets = {"camA": 0, "camB": -1}
    num_frames = len(pose)
    (root / "calibration").mkdir(parents=True)
    (root / "detections").mkdir()
    (root / "calibration" / "cameras.json").write_text(json.dumps({"units": "mm", "cameras": [
        {"name": c.name, "image_size": [640, 960], "K": c.K.tolist(), "dist": c.dist.tolist(), "R": c.R.tolist(),
         "t": c.t.tolist()} for c in cameras]}))
    for camera in cameras:
        frames = np.arange(num_frames) + offsets[camera.name]  # video frame of each global frame
        uv = camera.world_to_image(pose)
        landmarks = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1).astype(np.float32)
        boxes = np.tile(np.array([0, 0, 640, 640], np.float32), (num_frames, 1))
        for frame in range(num_frames):
            if (camera.name, frame) in missing:
                landmarks[frame, :, :2], landmarks[frame, :, 2], boxes[frame] = np.nan, 0.0, np.nan
            else:
                folder = root / "images" / camera.name
                folder.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 64), (90, 90, 90)).save(folder / f"{frames[frame]:06d}.jpg")
        np.savez(root / "detections" / f"{camera.name}.npz", frames=frames.astype(np.int32), landmarks=landmarks,
                 crop_boxes=boxes, video_size=np.array([640, 960]), fps=60.0)
    (root / "manifest.json").write_text(json.dumps({
        "layout_version": 1, "skeleton": "blazepose_33", "subject": "s", "sequence": "q", "cameras": ["camA", "camB"],
        "num_frames": num_frames, "frame_offsets": offsets, "test_from_frame": num_frames - 1}))


@pytest.fixture
def handmade(tmp_path):
    rng = np.random.default_rng(0)
    pose = np.array([0.0, 0.0, 1000.0]) + rng.uniform(-300, 300, (3, 33, 3))
    cameras = [_look_at([3000, 500, 1200], "camA"), _look_at([-500, 3000, 1300], "camB")]
    root = tmp_path / "pose2sim_demo"
    _write_layout(root, cameras, pose, missing={("camB", 1)})
    return root, cameras, pose


def test_converter_reads_the_layout_by_global_frame(handmade, tmp_path):
    root, cameras, pose = handmade
    assert get_skeleton("blazepose_33").num_joints == 33  # registered by importing the converter
    examples = pose2sim_demo.read_examples(root)
    assert [(e.camera, e.frame, e.split) for e in examples] == [
        ("camA", 0, "train"), ("camA", 1, "train"), ("camA", 2, "test"), ("camB", 0, "train"), ("camB", 2, "test")]
    camb_frame2 = examples[-1]
    assert camb_frame2.image_path.name == "000001.jpg"  # video frame = global frame + offset (-1)
    np.testing.assert_allclose(camb_frame2.pose2d, cameras[1].world_to_image(pose[2]), atol=1e-3)
    # the synchronised views triangulate back to the pose
    _, uv, visibility, _ = synchronised_views(root)
    result = triangulate(uv, visibility, cameras)
    np.testing.assert_allclose(result.points3d[[0, 2]], pose[[0, 2]], atol=0.5)
    assert np.isnan(result.points3d[1]).all()  # camB missed frame 1: one view only

    store = open_store(convert(pose2sim_demo, root, tmp_path / "stores" / "p.zarr", image_size=32).path)
    assert store.attrs["skeleton"] == "blazepose_33" and store.attrs["counts"] == {"train": 3, "val": 0, "test": 2}
    assert store.load("confidence2d").shape == (5, 33)


@pytest.mark.parametrize("damage, field", [
    (lambda root: _rewrite_json(root / "calibration" / "cameras.json",
                                lambda d: d["cameras"][1].update(K=[[1, 0, 0], [0, None, 0], [0, 0, 1]])),
     "cameras[1]"),
    (lambda root: _rewrite_json(root / "manifest.json", lambda d: d.pop("frame_offsets")), "frame_offsets"),
    (lambda root: _rewrite_npz(root / "detections" / "camA.npz", landmarks=np.zeros((3, 17, 3), np.float32)),
     "landmarks"),
    (lambda root: _rewrite_npz(root / "detections" / "camB.npz", landmarks=np.full((3, 33, 3), 2, np.float32)),
     "landmarks[..., 2]"),
])
def test_converter_errors_name_file_and_field(handmade, damage, field):
    root = handmade[0]
    damage(root)
    with pytest.raises(RawDataError) as error:
        pose2sim_demo.read_examples(root)
    assert error.value.field == field and error.value.path.is_relative_to(root)


def _rewrite_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _rewrite_npz(path, **arrays):
    with np.load(path) as data:
        contents = {k: data[k] for k in data.files}
    np.savez(path, **{**contents, **arrays})


def test_a_failed_build_keeps_the_existing_dataset(handmade, tmp_path):
    root = handmade[0]
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / POSE2SIM_WHEEL, "w") as zf:
        zf.writestr("Pose2Sim/README.md", "not the demo")
    with pytest.raises(RawDataError, match="Calib.qca.txt"):
        build(root, cache=cache, report=lambda _: None)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert [p.name for p in root.parent.iterdir() if ".tmp-" in p.name] == []


# -- the real recording: detection on a few frames --------------------------------------------------------

@pytest.fixture(scope="module")
def few_frames(mediapipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("raw") / "pose2sim_demo"
    messages = []
    build(out, max_frames=6, max_sync_offset=0, report=messages.append)
    return out, messages


def test_detects_converts_and_triangulates_a_few_frames(few_frames, tmp_path):
    out, messages = few_frames
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_frames"] == 6 and manifest["test_from_frame"] == 5
    assert manifest["frame_offsets"] == {"cam01": 0, "cam02": 0, "cam03": 0, "cam04": 0}
    assert any(m.startswith("cam04: 6/6 frames") for m in messages)
    for name in manifest["cameras"]:
        with np.load(out / "detections" / f"{name}.npz") as data:
            assert data["landmarks"].shape == (6, 33, 3)
            assert (data["landmarks"][..., 2] > 0.5).mean() > 0.8  # the person is plainly visible
        with Image.open(out / "images" / name / "000005.jpg") as image:
            assert image.size == (256, 256)
    assert (out / "calibration" / "Calib.qca.txt").is_file()

    store = open_store(convert(pose2sim_demo, out, tmp_path / "p.zarr").path)
    assert store.attrs["counts"] == {"train": 20, "val": 0, "test": 4}

    # detections and calibration agree: the views meet in 3D with a small error and a human-sized leg
    cameras, uv, visibility, sizes = synchronised_views(out)
    result = triangulate(uv, visibility, cameras, image_sizes=sizes)
    assert np.nanmedian(result.reprojection_error) < 25.0
    skeleton = blazepose.BLAZEPOSE_33
    hip, knee = (skeleton.index("l" + j) for j in BONES["thigh"])
    thigh = np.linalg.norm(result.points3d[:, hip] - result.points3d[:, knee], axis=-1)
    assert 300 < np.nanmedian(thigh) < 550


def test_rebuilding_with_the_same_settings_keeps_the_dataset(few_frames):
    out = few_frames[0]
    stamp = os.stat(out / "manifest.json").st_mtime_ns
    messages = []
    build(out, max_frames=6, max_sync_offset=0, report=messages.append)
    assert os.stat(out / "manifest.json").st_mtime_ns == stamp
    assert messages == [f"{out}: already built with these settings (use --force to rebuild)"]


def test_an_undecodable_video_is_named(mediapipe, tmp_path):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2048))
    with pytest.raises(RawDataError, match=f"{video}: expected a decodable video"):
        blazepose.detect_video(mediapipe, video, tmp_path / "broken.npz", tmp_path / "images")


# -- flip augmentation on real crops ------------------------------------------------------------------------

def body_handedness(poses: np.ndarray, skeleton) -> np.ndarray:
    """(left × up) · forward per pose [N]: positive for a real person in a right-handed frame (the camera's),
    negative for a mirror image whose left/right labels were not swapped. Left runs from the right to the left
    shoulder, up from the hips' midpoint to the shoulders', forward from the shoulders' midpoint to the nose."""
    lsho, rsho, lhip, rhip, nose = (skeleton.index(n) for n in ("lsho", "rsho", "lhip", "rhip", "nose"))
    shoulders = (poses[:, lsho] + poses[:, rsho]) / 2
    left = poses[:, lsho] - poses[:, rsho]
    up = shoulders - (poses[:, lhip] + poses[:, rhip]) / 2
    return np.einsum("nd,nd->n", np.cross(left, up), poses[:, nose] - shoulders)


def test_a_flipped_real_crop_carries_the_mirrored_pose(few_frames, tmp_path):
    from assets.joint_names import mirror_permutation, skeleton_joint_indices
    from assets.pseudo_gt import triangulate_store, write_pseudo_gt_store
    from model.augmentation import AugmentationSettings
    from model.data import StoreExamples

    detections = open_store(convert(pose2sim_demo, few_frames[0], tmp_path / "detections.zarr").path)
    store_path = write_pseudo_gt_store(detections, triangulate_store(detections, min_views=3),
                                       tmp_path / "pseudo_gt.zarr")
    store = open_store(store_path)
    skeleton = blazepose.BLAZEPOSE_33
    union = (*(f"{n}_blazepose_33" for n in skeleton.joint_names),)
    slots, mirrored = skeleton_joint_indices(union, "blazepose_33"), mirror_permutation(union)
    # the triangulated people are real ones: BlazePose's "left" is the person's left in every labelled pose
    handedness = body_handedness(store.load("pose3d").astype(np.float64), skeleton)
    assert np.isfinite(handedness).sum() >= 12 and (handedness[np.isfinite(handedness)] > 0).all()

    # no shift, zoom or roll: the flipped crop is the stored one mirrored, so pixels can be compared exactly
    still = dict(shift_fraction=0.0, zoom_range=(1.0, 1.0), roll_degrees=0.0)
    plain = StoreExamples(store_path, union, augmentation=AugmentationSettings.geometry_only(flip_probability=0.0, **still))
    flipped = StoreExamples(store_path, union, augmentation=AugmentationSettings.geometry_only(flip_probability=1.0, **still))
    size = plain.image_size
    checked = 0
    for i in range(len(plain)):
        a, b = plain[(i, 0)], flipped[(i, 0)]
        if not np.isfinite(a["pose3d"][slots].numpy()).all(-1).any():
            continue
        np.testing.assert_array_equal(b["image"].numpy(), a["image"].numpy()[:, ::-1])
        pose3d, pose2d = a["pose3d"].numpy(), a["pose2d"].numpy()
        expected3d = (pose3d * [-1, 1, 1])[mirrored]
        expected2d = np.stack([size - 1 - pose2d[:, 0], pose2d[:, 1]], axis=-1)[mirrored]
        scale = np.nanmax(np.abs(pose3d))
        np.testing.assert_allclose(b["pose3d"].numpy(), expected3d, atol=1e-5 * scale, equal_nan=True)
        np.testing.assert_allclose(b["pose2d"].numpy(), expected2d, atol=1e-4 * size, equal_nan=True)
        # the mirrored person is again a real person (labels swapped); a mirror without the swap is not
        real, unswapped = (body_handedness(p[None, slots], skeleton)[0]
                           for p in (b["pose3d"].numpy(), pose3d * [-1, 1, 1]))
        if np.isfinite(real):
            assert real > 0 and unswapped < 0
            checked += 1
    assert checked >= 12
