"""The panoptic converter on small raw trees in the real CMU Panoptic layout (docs/converters/panoptic.md).

The trees are written as the panoptic-toolbox leaves them: ``<seq>/calibration_<seq>.json`` (HD, VGA and
Kinect cameras; centimetres; ``t`` a 3x1 nested list; world y pointing down),
``<seq>/hdPose3d_stage1_coco19/body3DScene_%08d.json`` (one sequence in the nested ``.../hd/`` variant),
``<seq>/hdImgs/00_XX/00_XX_%08d.jpg`` and ``<seq>/hdVideos/hd_00_XX.mp4``. Bodies are plausible coco_19 poses of
the synthetic body model, turned from its z-up world into Panoptic's y-down one and written in centimetres.
Each frame shows a coloured disk at every body's pelvis (colour by body id), so a crop's content can be
checked against its labels.
"""

import inspect
import json
import shutil
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assets.cameras import Camera
from assets.converters import get_converter
from assets.converters.common import convert, person_box
from assets.converters.interface import OptionError, resolve_options
from assets.converters.raw_io import RawDataError
from assets.quality import run_store_checks
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.synthetic.motion import sample_all_formats
from converter_checks import assert_refused_keeping_the_store
from raw_media import write_video

av = pytest.importorskip("av")
panoptic = get_converter("panoptic")

W, H = 96, 64
K = np.array([[60.0, 0.0, 47.5], [0.0, 60.0, 31.5], [0.0, 0.0, 1.0]])
DIST = [-0.3, 0.12, 0.004, -0.006, 0.01]  # k1, k2, p1, p2, k3: strong, so that it shows in a 96 px frame
IMAGE_SIZE = 64
SEQ_A, SEQ_B = "171204_pose1", "170407_haggling_a1"  # SEQ_B uses the nested hdPose3d_stage1_coco19/hd/ layout
FRAMES = {SEQ_A: 6, SEQ_B: 3}
# camera name -> (centre in world mm, y down); 00_07 / 00_05 are calibrated but have no frames or video
RIGS = {
    SEQ_A: {"00_00": (0.0, -1300.0, -3500.0), "00_03": (0.0, -1300.0, 3500.0), "00_07": (3500.0, -1300.0, 0.0)},
    SEQ_B: {"00_00": (-2400.0, -1500.0, -2600.0), "00_05": (2600.0, -1400.0, 2400.0)},
}
TARGET = (0.0, -900.0, 0.0)
IMAGES = {SEQ_A: ("00_00",), SEQ_B: ("00_00",)}  # cameras with hdImgs/ folders
VIDEOS = {SEQ_A: ("00_00", "00_03"), SEQ_B: ()}  # cameras with hdVideos/ files
# body id -> horizontal offset (x, z) in world mm
OFFSETS = {0: (-450.0, 0.0), 1: (450.0, 0.0), 2: (0.0, -5000.0), 3: (100.0, 200.0), 5: (0.0, 900.0),
           6: (0.0, 900.0)}
COLOURS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (255, 0, 255), 6: (255, 255, 0)}
MARKED = (SEQ_A, 2, 1)  # (sequence, frame, body id) with confidence markers
MARKERS = {15: -1.0, 16: -1.0, 17: 0.05, 18: 0.1, 4: 0.11}  # joint -> confidence; <= 0.1 is unlabelled
SIX_JOINTS = (0, 2, 3, 6, 9, 12)  # neck, pelv, lsho, lhip, rsho, rhip: body 6 has only these
PELVIS = 2


# -- the planted world ------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _poses() -> np.ndarray:
    """Plausible coco_19 poses, world mm, y down (floor at y = 0), pelvis over the origin."""
    poses = sample_all_formats(12, seed=11, formats=("coco_19",))["coco_19"]
    poses = poses - np.concatenate([poses[:, 2:3, :2], np.zeros((len(poses), 1, 1))], axis=-1)
    z_up_to_y_down = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # a proper rotation
    return poses @ z_up_to_y_down.T


def bodies_of(sequence: str, frame: int) -> list[int]:
    if sequence == SEQ_B:
        return [3]
    return [0, 1] + {3: [5, 6], 4: [2]}.get(frame, [])


def planted_world(sequence: str, frame: int, body: int) -> np.ndarray:
    """[19, 3] world mm of a body (all joints, labelled or not)."""
    pose = _poses()[(3 * frame + body + 5 * (sequence == SEQ_B)) % len(_poses())]
    x, z = OFFSETS[body]
    return pose + [x, 0.0, z]


def confidences(sequence: str, frame: int, body: int) -> np.ndarray:
    c = np.linspace(0.4, 0.9, 19)
    if (sequence, frame, body) == MARKED:
        for joint, value in MARKERS.items():
            c[joint] = value
    if body == 5:
        c[:] = -1.0
        c[list(SIX_JOINTS[:5])] = 0.7
    if body == 6:
        c[:] = -1.0
        c[list(SIX_JOINTS)] = 0.7
    return c


def labelled_world(sequence: str, frame: int, body: int) -> np.ndarray:
    world = planted_world(sequence, frame, body).copy()
    world[confidences(sequence, frame, body) <= 0.1] = np.nan
    return world


def planted_camera(sequence: str, name: str) -> Camera:
    """Level camera at the rig position looking at TARGET, in the y-down world."""
    centre = np.array(RIGS[sequence][name])
    forward = np.asarray(TARGET) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return Camera(K=K, dist=DIST, R=R, t=-R @ centre)


# -- writing the release ----------------------------------------------------------------------------------

def camera_entry(name: str, camera: Camera, t_nested: bool = True) -> dict:
    panel, node = (int(v) for v in name.split("_"))
    t_cm = camera.t / 10.0
    return {"name": name, "type": "hd", "resolution": [W, H], "panel": panel, "node": node, "K": K.tolist(),
            "distCoef": list(DIST), "R": camera.R.tolist(),
            "t": t_cm.reshape(3, 1).tolist() if t_nested else t_cm.tolist()}


def calibration_of(sequence: str) -> dict:
    cameras = [camera_entry(name, planted_camera(sequence, name)) for name in RIGS[sequence]]
    # VGA and Kinect cameras: never read (deliberately incomplete here). VGA cameras come first, so a reader
    # that took camera i of the list for hd_00_i would get them
    vga = [{"name": f"{panel:02d}_{node:02d}", "type": "vga", "resolution": [640, 480], "panel": panel,
            "node": node, "K": "not read"} for panel, node in ((1, 1), (1, 2), (20, 24))]
    cameras = vga + cameras
    cameras.append({"name": "50_01", "type": "kinect-color", "resolution": [1920, 1080], "panel": 50, "node": 1})
    return {"calibDataSource": f"{sequence}_calib", "cameras": cameras}


def body_json(sequence: str, frame: int) -> dict:
    bodies = []
    for body in bodies_of(sequence, frame):
        world_cm = planted_world(sequence, frame, body) / 10.0
        c = confidences(sequence, frame, body)
        world_cm[c == -1.0] = 0.0  # whatever a missing joint's coordinates are, they must not be used
        bodies.append({"id": body, "joints19": np.concatenate([world_cm, c[:, None]], axis=1).reshape(-1).tolist()})
    return {"version": 0.7, "univTime": 53541.542 + frame / 29.97, "fpsType": "hd_29_97", "bodies": bodies}


def body_folder(root: Path, sequence: str) -> Path:
    folder = root / sequence / "hdPose3d_stage1_coco19"
    return folder / "hd" if sequence == SEQ_B else folder


def render(sequence: str, name: str, frame: int) -> np.ndarray:
    """A dim background (its level tells frames and cameras apart) and a coloured disk at each pelvis."""
    yy, xx = np.mgrid[0:H, 0:W]
    level = 40 + 8 * frame + 5 * list(RIGS[sequence]).index(name)
    image = np.stack([level + 0.2 * xx, level + 0.2 * yy, np.full((H, W), level + 10.0)], axis=-1)
    camera = planted_camera(sequence, name)
    for body in bodies_of(sequence, frame):
        if body not in COLOURS:
            continue
        pelvis = camera.world_to_camera(planted_world(sequence, frame, body)[PELVIS])
        if pelvis[2] <= 0:
            continue
        u, v = camera.camera_to_image(pelvis)
        image[(xx - u) ** 2 + (yy - v) ** 2 <= 3.0 ** 2] = COLOURS[body]
    return np.clip(image, 0, 255).astype(np.uint8)


def write_raw_tree(root: Path) -> Path:
    for sequence, num_frames in FRAMES.items():
        seq_dir = root / sequence
        seq_dir.mkdir(parents=True)
        (seq_dir / f"calibration_{sequence}.json").write_text(json.dumps(calibration_of(sequence)))
        folder = body_folder(root, sequence)
        folder.mkdir(parents=True)
        for frame in range(num_frames):
            (folder / f"body3DScene_{frame:08d}.json").write_text(json.dumps(body_json(sequence, frame)))
        for name in IMAGES[sequence]:
            image_dir = seq_dir / "hdImgs" / name
            image_dir.mkdir(parents=True)
            for frame in range(num_frames):
                Image.fromarray(render(sequence, name, frame)).save(image_dir / f"{name}_{frame:08d}.jpg",
                                                                     quality=95, subsampling=0)
        for name in VIDEOS[sequence]:
            write_video(seq_dir / "hdVideos" / f"hd_{name}.mp4", [render(sequence, name, f) for f in range(num_frames)],
                        rate=Fraction(30000, 1001), gop_size=3)  # 29.97 fps, as the HD videos
    (root / "README.txt").write_text("not a sequence folder")
    (root / "panoptic-toolbox").mkdir()  # a clone of the toolbox next to the sequences: not a sequence
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_raw_tree(tmp_path_factory.mktemp("panoptic") / "panoptic")


EVERY_FRAME = {"frame_step": 1}


@pytest.fixture(scope="module")
def converted(pristine, tmp_path_factory):
    out = tmp_path_factory.mktemp("panoptic_store") / "panoptic.zarr"
    return convert(panoptic, pristine, out, image_size=IMAGE_SIZE, options=EVERY_FRAME)


def examples_of(root, options=None) -> list:
    return list(panoptic.read_examples(root, resolve_options(panoptic, {**EVERY_FRAME, **(options or {})})))


def names(store, key: str) -> list[str]:
    return [store.attrs["codes"][key][c] for c in store.load(key)]


def keys(store) -> list[tuple]:
    return list(zip(names(store, "sequence"), names(store, "camera"), store.load("frame").tolist(),
                    [int(s.rsplit("/", 1)[1]) for s in names(store, "subject")]))


def expected_keys() -> set[tuple]:
    """(sequence, camera, frame, body) of every example the planted tree should give."""
    cameras = {sequence: sorted(set(IMAGES[sequence]) | set(VIDEOS[sequence])) for sequence in FRAMES}
    expected = set()
    for sequence, num_frames in FRAMES.items():
        for frame in range(num_frames):
            for body in bodies_of(sequence, frame):
                if body == 5:
                    continue  # five labelled joints: fewer than min_joints
                for camera in cameras[sequence]:
                    if body == 2 and camera == "00_00":
                        continue  # behind 00_00
                    expected.add((sequence, camera, frame, body))
    return expected


# -- protocol ---------------------------------------------------------------------------------------------

def test_registered_with_the_declared_protocol():
    assert get_converter("panoptic") is panoptic
    assert (panoptic.NAME, panoptic.SKELETON, panoptic.DEFAULT_FRAME_STEP) == ("panoptic", "coco_19", 10)
    assert panoptic.CAMERAS == tuple(f"00_{i:02d}" for i in range(31)) == panoptic.DEFAULT_CAMERAS
    options = resolve_options(panoptic, None)
    assert options.frame_step == 10 and options.cameras == panoptic.CAMERAS and options.extra == {"min_joints": 6}
    with pytest.raises(OptionError, match="cameras"):
        resolve_options(panoptic, {"cameras": ["01_01"]})  # a VGA camera is no choice
    with pytest.raises(OptionError, match="min_joints"):
        list(panoptic.read_examples(Path("/nonexistent"), resolve_options(panoptic, {"min_joints": 0})))
    assert inspect.isgenerator(panoptic.read_examples(Path("/nonexistent"), options))  # lazy


def test_joints19_order_is_the_project_coco_19():
    """The README's joints19 order (not OpenPose's) with BodyCenter as the pelvis is coco_19 as it stands."""
    readme = ["Neck", "Nose", "BodyCenter", "lShoulder", "lElbow", "lWrist", "lHip", "lKnee", "lAnkle",
              "rShoulder", "rElbow", "rWrist", "rHip", "rKnee", "rAnkle", "lEye", "lEar", "rEye", "rEar"]
    short = {"Neck": "neck", "Nose": "nose", "BodyCenter": "pelv", "Shoulder": "sho", "Elbow": "elb",
             "Wrist": "wri", "Hip": "hip", "Knee": "kne", "Ankle": "ank", "Eye": "eye", "Ear": "ear"}
    as_project = [short.get(n) or n[0] + short[n[1:]] for n in readme]
    assert list(get_skeleton("coco_19").joint_names) == as_project


# -- labels -----------------------------------------------------------------------------------------------

def test_planted_joints_come_back_in_millimetres(converted):
    """joints19 and t are centimetres: both x 10. Through the stored extrinsics the crop camera's joints are
    the planted world joints (mm), and the crop camera sits at the planted camera centre."""
    store = open_store(converted.path)
    assert set(keys(store)) == expected_keys() and len(store) == len(expected_keys())
    pose3d, extrinsics = store.load("pose3d").astype(np.float64), store.load("extrinsics").astype(np.float64)
    for i, (sequence, camera, frame, body) in enumerate(keys(store)):
        truth = labelled_world(sequence, frame, body)
        world = (pose3d[i] - extrinsics[i, :3, 3]) @ extrinsics[i, :3, :3]
        labelled = np.isfinite(truth).all(axis=-1)
        assert np.array_equal(np.isfinite(pose3d[i]).all(axis=-1), labelled)
        scale = np.abs(truth[labelled]).max()
        np.testing.assert_allclose(world[labelled], truth[labelled], atol=max(0.1, 1e-6 * scale))
        centre = -extrinsics[i, :3, :3].T @ extrinsics[i, :3, 3]
        np.testing.assert_allclose(centre, RIGS[sequence][camera], atol=0.1)  # t x 10, not t as it stands


def test_calibration_t_is_centimetres_in_a_nested_3x1_list(tmp_path):
    entry = camera_entry("00_03", planted_camera(SEQ_A, "00_03"))
    assert np.array(entry["t"]).shape == (3, 1)
    camera, size = panoptic.parse_camera(entry, tmp_path / "calibration.json", "00_03")
    np.testing.assert_allclose(camera.center, RIGS[SEQ_A]["00_03"], atol=1e-9)
    np.testing.assert_allclose(camera.dist, DIST)
    assert size == (W, H)
    flat, _ = panoptic.parse_camera(camera_entry("00_03", planted_camera(SEQ_A, "00_03"), t_nested=False),
                                    tmp_path / "calibration.json", "00_03")
    np.testing.assert_allclose(flat.t, camera.t)


def test_y_down_world_passes_every_quality_check(converted):
    """Panoptic's world y points down: no axis is changed, and the store's vertical-axis and chirality
    checks (which find the world's up from the cameras) pass."""
    head, feet = planted_world(SEQ_A, 0, 0)[1], planted_world(SEQ_A, 0, 0)[[8, 14]]
    assert (head[1] < feet[:, 1]).all()  # the nose is above the ankles: smaller y
    outcomes = {o.name: o for o in run_store_checks(converted.path)}
    failed = {name: o.description for name, o in outcomes.items() if not o.passed}
    assert not failed
    assert "skipped" not in outcomes["vertical_axis"].metadata and "skipped" not in outcomes["chirality"].metadata
    extrinsics = open_store(converted.path).load("extrinsics")
    assert (extrinsics[:, 1, :3] @ [0.0, 1.0, 0.0] > 0.9).all()  # every crop camera's down is the world's +y


def test_distortion_is_in_the_frame_camera(converted):
    """The person box (frame pixels) is the box of the planted joints projected WITH distCoef, and each body's
    coloured pelvis disk lands on its stored 2D pelvis in the crop."""
    store = open_store(converted.path)
    boxes, pose2d, intrinsics = store.load("bbox"), store.load("pose2d"), store.load("intrinsics")
    images = store.load("image")
    shifts = []
    for i, (sequence, camera, frame, body) in enumerate(keys(store)):
        frame_camera = planted_camera(sequence, camera)
        truth = labelled_world(sequence, frame, body)
        uv = frame_camera.world_to_image(truth[np.isfinite(truth).all(axis=-1)])
        np.testing.assert_allclose(boxes[i], person_box(uv), atol=1e-3 * max(W, H))
        undistorted = Camera(K=K, R=frame_camera.R, t=frame_camera.t).world_to_image(
            truth[np.isfinite(truth).all(axis=-1)])
        shifts.append(np.abs(person_box(undistorted) - boxes[i]).max())
        if camera not in IMAGES[sequence]:
            continue  # video frames: compared with the image path in another test
        colour = np.array(COLOURS[body])
        image = images[i].astype(float)
        mask = np.abs(image - colour).max(axis=-1) < 90
        assert mask.sum() >= 3, (sequence, camera, frame, body)
        found = np.array([np.nonzero(mask)[1].mean(), np.nonzero(mask)[0].mean()])
        scale = intrinsics[i, 0, 0] / K[0, 0]
        assert np.linalg.norm(found - pose2d[i, PELVIS]) < 0.6 * scale + 0.5, (sequence, camera, frame, body)
    assert np.median(shifts) > 0.3  # ignoring distCoef would move the boxes by this many pixels


def test_two_people_in_one_frame_give_two_examples_each_centred_on_its_person(converted):
    store = open_store(converted.path)
    pose2d = store.load("pose2d")
    rows = {k: i for i, k in enumerate(keys(store))}
    for camera in ("00_00", "00_03"):
        pair = [rows[SEQ_A, camera, 0, body] for body in (0, 1)]
        assert names(store, "subject")[pair[0]] == f"{SEQ_A}/0" and names(store, "subject")[pair[1]] == f"{SEQ_A}/1"
        for i in pair:
            box = person_box(pose2d[i])
            centre = box[:2] + box[2:] / 2
            assert np.linalg.norm(centre - (IMAGE_SIZE - 1) / 2) < 2.0
        # the crops differ: each is centred on its own person
        assert np.abs(store.load("extrinsics")[pair[0]] - store.load("extrinsics")[pair[1]]).max() > 0.01


def test_confidence_markers_make_joints_unlabelled(pristine, converted):
    """c = -1 and c <= 0.1 (0.05, exactly 0.1) are unlabelled, whatever their coordinates; 0.11 is labelled."""
    [example] = [e for e in examples_of(pristine, {"cameras": ["00_00"]})
                 if (e.sequence, e.frame, e.subject) == (MARKED[0], MARKED[1], f"{MARKED[0]}/{MARKED[2]}")]
    unlabelled = [j for j, c in MARKERS.items() if c <= 0.1]
    assert np.isnan(example.pose3d[unlabelled]).all()
    assert np.isfinite(np.delete(example.pose3d, unlabelled, axis=0)).all()
    store = open_store(converted.path)
    i = keys(store).index((MARKED[0], "00_00", MARKED[1], MARKED[2]))
    valid = store.load("joint_valid")[i]
    assert not valid[unlabelled].any() and valid[4] and valid.sum() == 19 - len(unlabelled)


def test_bodies_need_min_joints_labelled_joints(pristine):
    """PosePile's rule, kept: a body with 5 labelled joints is dropped, one with 6 kept (option min_joints)."""
    subjects = {e.subject for e in examples_of(pristine) if e.frame == 3}
    assert f"{SEQ_A}/6" in subjects and f"{SEQ_A}/5" not in subjects
    subjects = {e.subject for e in examples_of(pristine, {"min_joints": 7}) if e.frame == 3}
    assert f"{SEQ_A}/6" not in subjects and f"{SEQ_A}/0" in subjects
    subjects = {e.subject for e in examples_of(pristine, {"min_joints": 5}) if e.frame == 3}
    assert f"{SEQ_A}/5" in subjects


def test_a_person_outside_a_cameras_view_gives_no_example_there(pristine):
    """Body 2 stands behind camera 00_00: an example in 00_03 only (PosePile: >= 6 joints inside the frame)."""
    seen = {e.camera for e in examples_of(pristine) if e.subject == f"{SEQ_A}/2"}
    assert seen == {"00_03"}


def test_only_hd_cameras_with_frames_or_video_give_examples(converted):
    """VGA and Kinect entries (incomplete here) are never read; HD cameras without media give nothing."""
    store = open_store(converted.path)
    assert set(store.attrs["codes"]["camera"]) == {"00_00", "00_03"}
    assert set(names(store, "split")) == {"train"}  # Panoptic is training data only


# -- layout -----------------------------------------------------------------------------------------------

def test_a_root_without_sequence_folders_is_refused(tmp_path):
    (tmp_path / "empty" / "panoptic-toolbox").mkdir(parents=True)
    with pytest.raises(RawDataError, match="calibration_<seq>.json") as info:
        examples_of(tmp_path / "empty")
    assert info.value.path == tmp_path / "empty"


def test_nested_hd_folder_and_a_single_sequence_folder_as_root(pristine):
    """SEQ_B's body files are in hdPose3d_stage1_coco19/hd/. A sequence folder works as the raw root too."""
    assert not any((pristine / SEQ_B / "hdPose3d_stage1_coco19").glob("*.json"))
    everything = examples_of(pristine)
    from_root = [(e.sequence, e.camera, e.frame, e.subject) for e in everything if e.sequence == SEQ_B]
    assert [f for _, _, f, _ in from_root] == [0, 1, 2]
    alone = examples_of(pristine / SEQ_B)
    assert [(e.sequence, e.camera, e.frame, e.subject) for e in alone] == from_root
    for a, b in zip(alone, (e for e in everything if e.sequence == SEQ_B)):
        np.testing.assert_array_equal(a.pose3d, b.pose3d)


def test_frames_are_hdimgs_files_or_video_frames_by_hd_index(pristine):
    """hdImgs/00_XX/00_XX_%08d.jpg, 0-based = the body3DScene number; a camera without an hdImgs folder is
    decoded from hdVideos/hd_00_XX.mp4 at frame_index = that number, one video's frames in ascending order."""
    examples = examples_of(pristine)
    for e in examples:
        if e.camera in IMAGES[e.sequence]:
            assert e.image_path == pristine / e.sequence / "hdImgs" / e.camera / f"{e.camera}_{e.frame:08d}.jpg"
            assert e.frame_index is None
        else:
            assert e.image_path == pristine / e.sequence / "hdVideos" / f"hd_{e.camera}.mp4"
            assert e.frame_index == e.frame
    video_frames = [e.frame_index for e in examples if e.frame_index is not None]
    assert video_frames == sorted(video_frames) and len(set(video_frames)) == FRAMES[SEQ_A]


def test_frames_missing_from_an_extraction_come_from_the_video(raw):
    (raw / SEQ_A / "hdImgs" / "00_00" / "00_00_00000003.jpg").unlink()
    examples = [e for e in examples_of(raw, {"cameras": ["00_00"]}) if e.sequence == SEQ_A]
    assert {(e.frame, e.frame_index) for e in examples if e.frame_index is not None} == {(3, 3)}
    assert all(e.image_path.suffix == ".jpg" for e in examples if e.frame != 3)


def test_video_frames_give_the_same_labels_as_hdimgs(pristine, converted, tmp_path):
    root = Path(shutil.copytree(pristine, tmp_path / "raw"))
    shutil.rmtree(root / SEQ_A / "hdImgs")  # 00_00 of SEQ_A now comes from hd_00_00.mp4
    result = convert(panoptic, root, tmp_path / "video.zarr", image_size=IMAGE_SIZE, options=EVERY_FRAME)
    video, images = open_store(result.path), open_store(converted.path)
    assert keys(video) == keys(images)
    for name in ("pose3d", "pose2d", "joint_valid", "intrinsics", "extrinsics", "bbox"):
        np.testing.assert_array_equal(video.load(name), images.load(name), err_msg=name)
    from_video = np.array([(s, c) == (SEQ_A, "00_00") for s, c, _, _ in keys(video)])
    difference = np.abs(video.load("image")[from_video].astype(float) - images.load("image")[from_video].astype(float))
    # mpeg4 with 4:2:0 chroma vs a JPEG of the same frame: saturated disks bleed a few levels around them
    assert difference.mean() < 10
    # the right frame: another frame's image is far off (background level and disks move per frame)
    shifted = np.abs(video.load("image")[from_video][1:].astype(float) - images.load("image")[from_video][:-1])
    assert shifted.mean() > 2 * difference.mean(), (shifted.mean(), difference.mean())


def test_annotated_frames_beyond_the_media_are_skipped(raw):
    before = len(examples_of(raw))
    folder = body_folder(raw, SEQ_A)
    (folder / "body3DScene_00000006.json").write_text(json.dumps(body_json(SEQ_A, 5)))
    assert len(examples_of(raw)) == before  # 6 jpgs, 6 video frames: frame 6 has no image anywhere


# -- options ----------------------------------------------------------------------------------------------

def test_frame_step_and_cameras_options(pristine, tmp_path):
    result = convert(panoptic, pristine, tmp_path / "o.zarr", image_size=16,
                     options={"frame_step": 2, "cameras": ["00_03"]})
    store = open_store(result.path)
    assert set(names(store, "camera")) == {"00_03"}
    assert set(keys(store)) == {k for k in expected_keys() if k[1] == "00_03" and k[2] % 2 == 0}
    assert store.attrs["converter_options"] == {"frame_step": 2, "cameras": ["00_03"], "min_joints": 6}
    # the default step (10) keeps frame 0 of each sequence only
    default = list(panoptic.read_examples(pristine, resolve_options(panoptic, None)))
    assert {e.frame for e in default} == {0}


# -- bad input --------------------------------------------------------------------------------------------

def _calibration(root: Path, sequence: str = SEQ_A) -> Path:
    return root / sequence / f"calibration_{sequence}.json"


def _edit_json(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def _hd(data: dict, name: str) -> dict:
    return next(c for c in data["cameras"] if c["name"] == name)


def _bad_cases():
    def body_without_bodies(root):
        path = body_folder(root, SEQ_A) / "body3DScene_00000002.json"
        return _edit_json(path, lambda d: d.pop("bodies")), "bodies"

    def joints19_of_the_wrong_length(root):
        path = body_folder(root, SEQ_A) / "body3DScene_00000001.json"
        return _edit_json(path, lambda d: d["bodies"][1].__setitem__("joints19", d["bodies"][1]["joints19"][:75])), \
            "bodies[1].joints19"

    def body_without_id(root):
        path = body_folder(root, SEQ_B) / "body3DScene_00000001.json"
        return _edit_json(path, lambda d: d["bodies"][0].pop("id")), "bodies[0].id"

    def unreadable_body_file(root):
        path = body_folder(root, SEQ_B) / "body3DScene_00000002.json"
        path.write_text(path.read_text()[:50])
        return path, None

    def joints_in_metres(root):
        folder = body_folder(root, SEQ_B)
        for path in folder.glob("*.json"):
            def to_metres(d):
                for body in d["bodies"]:
                    v = np.array(body["joints19"]).reshape(19, 4)
                    v[:, :3] /= 100.0
                    body["joints19"] = v.reshape(-1).tolist()
            _edit_json(path, to_metres)
        return folder, "joints19"

    def calibration_without_K(root):
        return _edit_json(_calibration(root), lambda d: _hd(d, "00_03").pop("K")), "cameras[00_03].K"

    def calibration_without_cameras(root):
        return _edit_json(_calibration(root, SEQ_B), lambda d: d.pop("cameras")), "cameras"

    def calibration_missing(root):
        path = _calibration(root)
        path.unlink()
        return path, None

    def calibration_t_in_millimetres(root):
        def to_mm(d):
            for c in d["cameras"]:
                if c.get("type") == "hd":
                    c["t"] = (np.array(c["t"]) * 10).tolist()
        return _edit_json(_calibration(root), to_mm), "t"

    def camera_with_frames_missing_from_calibration(root):
        return _edit_json(_calibration(root), lambda d: d["cameras"].remove(_hd(d, "00_03"))), "cameras"

    def resolution_missing(root):
        return _edit_json(_calibration(root, SEQ_B), lambda d: _hd(d, "00_00").pop("resolution")), \
            "cameras[00_00].resolution"

    def rotation_not_a_rotation(root):
        def scale(d):
            _hd(d, "00_00")["R"] = (np.array(_hd(d, "00_00")["R"]) * 1.5).tolist()
        return _edit_json(_calibration(root), scale), "cameras[00_00].R"

    def body_file_in_both_layouts(root):
        nested = body_folder(root, SEQ_B) / "body3DScene_00000001.json"
        shutil.copy(nested, nested.parent.parent / nested.name)  # the error names both copies
        return nested, None

    def pose_archive_not_extracted(root):
        folder = root / SEQ_B / "hdPose3d_stage1_coco19"
        shutil.rmtree(folder)
        (root / SEQ_B / "hdPose3d_stage1_coco19.tar").write_bytes(b"")
        return folder, None

    def missing_jpg_without_video(root):
        (root / SEQ_B / "hdImgs" / "00_00" / "00_00_00000001.jpg").unlink()
        return root / SEQ_B / "hdImgs" / "00_00" / "00_00_00000001.jpg", None

    def truncated_jpg(root):
        path = root / SEQ_A / "hdImgs" / "00_00" / "00_00_00000004.jpg"
        path.write_bytes(path.read_bytes()[:200])
        return path, None

    return {name: fn for name, fn in locals().items() if callable(fn)}


@pytest.fixture(scope="module")
def published(converted, tmp_path_factory) -> Path:
    """A store location with a version published from the undamaged tree (every refused case leaves it so)."""
    return Path(shutil.copytree(converted.path.parent, tmp_path_factory.mktemp("published") / "panoptic.zarr"))


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_bad_input_names_file_and_field_and_keeps_the_published_store(raw, converted, published, case):
    damaged, field = _bad_cases()[case](raw)
    error = assert_refused_keeping_the_store(
        lambda: convert(panoptic, raw, published, image_size=16, options=EVERY_FRAME), published, damaged,
        repr(field) if field else None)
    assert error.path == damaged and error.field == field
    # no half-written version is left behind
    assert sorted(p.name for p in published.iterdir()) == sorted(p.name for p in converted.path.parent.iterdir())
