"""The Human3.6M converter on small raw trees in the release's own layout.

The trees are written the way the release is: metadata.xml with a <w0> of 300 numbers, CDF files with
one record of [N, 96] / [N, 64] (cdflib's writer), 50 fps mp4 videos (PyAV) and/or PosePile's extracted
frames. Cameras use the real S1 calibration (frames scaled to 1/10 of the real 1000 px), the poses
are a standing person whose world pose and camera-frame joints are planted, so every number the
converter produces can be checked against what was planted.
"""

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")
cdfwrite = pytest.importorskip("cdflib.cdfwrite")

from assets.converters import get_converter  # noqa: E402
from assets.converters import h36m  # noqa: E402
from assets.converters.common import convert  # noqa: E402
from assets.converters.interface import resolve_options  # noqa: E402
from assets.converters.raw_io import RawDataError  # noqa: E402
from assets.quality import run_store_checks  # noqa: E402
from assets.skeletons import get_skeleton  # noqa: E402
from assets.store import open_store  # noqa: E402
from assets.synthetic.release_layouts import write_metadata_xml, write_pose_cdf  # noqa: E402
from converter_checks import assert_labels_on_the_rendered_joints
from raw_media import write_video

CAMERAS = ("54138969", "55011271", "58860488", "60457274")
SCALE = 0.1  # test frames are 1/10 of the real ones
SIZES = {"54138969": (100, 102), "55011271": (100, 100), "58860488": (100, 100), "60457274": (100, 102)}
IMAGE_SIZE = 32
# metadata.xml of the H36M code-v1.2 bundle, S1: a, b, c, T (camera centre, world mm) per camera
S1_EXTRINSICS = np.array([
    [-1.38382776045614, -3.16734304390158, 0.413636308164621, 1841.10702774543, 4955.28462344526, 1563.4453958977],
    [-1.35517119070383, 3.13934427144743, 2.76026318023792, 1761.27853428116, -5078.00659454077, 1606.2649598335],
    [-1.35460453835517, -3.09585375458873, -0.415010681416711, -1846.7776610084, 5215.04650469073, 1491.97246576518],
    [-1.29084725708861, -3.20353825281863, -2.72857298700043, -1794.78972871109, -3722.69891503676, 1574.89272604599],
])
# per camera f(2), c(2), k(3), p(2) as in w0
INTRINSICS = np.array([
    [1145.04940458804, 1143.78109572365, 512.541504956548, 515.4514869776, -0.207098910824901,
     0.247775183068982, -0.00307515035078854, -0.00142447157470321, -0.000975698859470499],
    [1149.67569986785, 1147.59161666764, 508.848621645943, 508.064917088557, -0.194213629607385,
     0.240408539138292, 0.00681997559022603, -0.0027408943961907, -0.001619026613787],
    [1149.14071676148, 1148.7989685676, 519.815837182153, 501.402658888552, -0.208338188251856,
     0.255488007488945, -0.00246049749891915, -0.000759999321030303, 0.00148438698385668],
    [1145.51133842318, 1144.77392807652, 514.968197319863, 501.882018537695, -0.198384093827848,
     0.218323676298049, -0.00894780704152122, -0.00181336200488089, -0.000587205583421232],
])
# VideoPose3D common/h36m_dataset.py, S1 camera 54138969: orientation = camera->world quaternion (w, x, y, z)
VP3D_S1_QUATERNION = (0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088)

# a standing person in the 32 joints of the files (x right, y forward, z up; mm): right side at +x,
# toes and bent knees forward; Site joints and the coinciding shoulders as in the release's tree
BODY = np.array([
    [0, 0, 950], [120, 0, 930], [130, 60, 500], [130, -20, 80], [130, 110, 20], [130, 170, 15],
    [-120, 0, 930], [-130, 60, 500], [-130, -20, 80], [-130, 110, 20], [-130, 170, 15],
    [0, -10, 1100], [0, -10, 1200], [0, 0, 1450], [0, 30, 1550], [0, 20, 1700],
    [0, 0, 1450], [-180, 0, 1420], [-250, 20, 1150], [-280, 60, 900], [-270, 100, 880], [-265, 120, 860],
    [-290, 70, 820], [-290, 70, 820],
    [0, 0, 1450], [180, 0, 1420], [250, 20, 1150], [280, 60, 900], [270, 100, 880], [265, 120, 860],
    [290, 70, 820], [290, 70, 820],
], dtype=np.float64)

# h36m_25's joints among the 32 of the files (metadata.xml's skeleton tree; PosePile's make_h36m_alljoints):
# 13 "Neck" is the thorax, 14 "Head" the neck, 15 its end Site the head top; 21 the thumb's end Site,
# 22 "L_Wrist_End" the finger end
FILE_INDEX = {"pelv": 0, "rhip": 1, "rkne": 2, "rank": 3, "rfoo": 4, "rtoe": 5, "lhip": 6, "lkne": 7, "lank": 8,
              "lfoo": 9, "ltoe": 10, "spin": 12, "neck": 13, "head": 14, "htop": 15, "lsho": 17, "lelb": 18,
              "lwri": 19, "lthu": 21, "lfin": 22, "rsho": 25, "relb": 26, "rwri": 27, "rthu": 29, "rfin": 30}
JOINTS = [FILE_INDEX[name] for name in get_skeleton("h36m_25").joint_names]
D2_OFFSET = np.array([0.2, 0.0])  # planted into D2_Positions so that its labels can be told from projections

# (subject, file stem, frames): S1's stems differ from the other subjects' (TakingPhoto vs Photo)
TAKES = [("S1", "Directions 1", 11), ("S1", "TakingPhoto 1", 6), ("S5", "Photo", 6),
         ("S9", "Greeting", 65), ("S9", "Walking 1", 65), ("S11", "Directions", 65)]
SPLIT = {"S1": "train", "S5": "train", "S9": "test", "S11": "test"}
S9_SHIFT = np.array([200.0, 0, 0])


# -- the planted truth -------------------------------------------------------------------------

def subject_extrinsics(subject: int) -> np.ndarray:
    """[4, 6] a, b, c, T of a subject: S1's calibration moved a little per subject (so a wrong block shows)."""
    ext = S1_EXTRINSICS.copy()
    ext[:, :3] += 0.002 * (subject - 1)
    ext[:, 3:] += 15.0 * (subject - 1)
    return ext


def euler_rotation(a, b, c):
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    return (np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]]) @ np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
            @ np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]]))


def planted_camera(subject: str, camera: str):
    """R (world->camera), T (centre), f, c, k, p of the test calibration."""
    a, b, c, *T = subject_extrinsics(int(subject[1:]))[CAMERAS.index(camera)]
    i = INTRINSICS[CAMERAS.index(camera)]
    return euler_rotation(a, b, c), np.array(T), i[0:2] * SCALE, i[2:4] * SCALE, i[4:7], i[7:9]


def h36m_project(points_cam, f, c, k, p):
    """H36M's own projection (3d-pose-baseline's project_point_radial), p in w0 order."""
    x, y = points_cam[..., 0] / points_cam[..., 2], points_cam[..., 1] / points_cam[..., 2]
    r2 = x * x + y * y
    radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    tan = p[0] * y + p[1] * x
    return np.stack([f[0] * (x * (radial + tan) + p[1] * r2) + c[0],
                     f[1] * (y * (radial + tan) + p[0] * r2) + c[1]], axis=-1)


def true_world(subject: str, stem: str, num_frames: int) -> np.ndarray:
    """[N, 32, 3] world mm of one take: the body turning and walking near the origin."""
    seed = zlib.crc32(f"{subject}/{stem}".encode())
    yaw0, x0, y0 = (seed % 628) / 100, (seed % 401) - 200.0, ((seed // 7) % 401) - 200.0
    poses = []
    for f in range(num_frames):
        yaw = yaw0 + 0.01 * f
        rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        poses.append(BODY @ rot.T + [x0 + 3.0 * f, y0, 0])
    return np.stack(poses)


def annotated_world(subject: str, stem: str, num_frames: int) -> np.ndarray:
    """What the release says: three S9 takes are shifted by +200 mm along world x."""
    world = true_world(subject, stem, num_frames)
    return world + S9_SHIFT if subject == "S9" and stem in ("Greeting", "SittingDown 1", "Waiting 1") else world


def to_camera(world, subject, camera):
    R, T, *_ = planted_camera(subject, camera)
    return (world - T) @ R.T


# -- writing the raw tree ----------------------------------------------------------------------

def write_metadata(path: Path, w0: np.ndarray | None = None) -> None:
    """metadata.xml with the planted calibration (or ``w0``)."""
    if w0 is None:
        extrinsics = np.stack([subject_extrinsics(s) for s in range(1, 12)], axis=1)  # [camera, subject, 6]
        intrinsics = INTRINSICS.copy()
        intrinsics[:, :4] *= SCALE
        w0 = np.concatenate([extrinsics.reshape(-1), intrinsics.reshape(-1)])
    write_metadata_xml(path, w0)


def render(subject, stem, camera, frame, world) -> np.ndarray:
    """A smooth textured frame with a bright blob on every (true) joint."""
    width, height = SIZES[camera]
    R, T, f, c, k, p = planted_camera(subject, camera)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = CAMERAS.index(camera) + 0.1 * frame
    image = np.stack([90 + 40 * np.sin(u / 9 + phase) + 20 * np.cos(v / 13),
                      80 + 30 * np.cos(v / 7 - phase) + 20 * np.sin(u / 17),
                      70 + 35 * np.sin((u + v) / 11 + phase)], axis=-1)
    for uv in h36m_project((world[JOINTS] - T) @ R.T, f, c, k, p):
        x0, y0 = int(uv[0]) - 4, int(uv[1]) - 4
        patch = (slice(max(y0, 0), max(y0 + 10, 0)), slice(max(x0, 0), max(x0 + 10, 0)))
        image[patch] += 120 * np.exp(-((u[patch] - uv[0]) ** 2 + (v[patch] - uv[1]) ** 2) / 4.0)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def build_raw(root: Path, *, images: bool = True, video: bool = False) -> Path:
    write_metadata(root / "Release-v1.2" / "metadata.xml")
    for subject, stem, num_frames in TAKES:
        truth, annotated = true_world(subject, stem, num_frames), annotated_world(subject, stem, num_frames)
        features = root / subject / "MyPoseFeatures"
        for camera in CAMERAS:
            mono = to_camera(annotated, subject, camera)
            _, _, f, c, k, p = planted_camera(subject, camera)
            write_pose_cdf(features / "D3_Positions_mono" / f"{stem}.{camera}.cdf", mono)
            write_pose_cdf(features / "D2_Positions" / f"{stem}.{camera}.cdf",
                           h36m_project(mono, f, c, k, p) + D2_OFFSET)
            frames = [render(subject, stem, camera, i, truth[i]) for i in range(num_frames)]
            if video:
                write_video(root / subject / "Videos" / f"{stem}.{camera}.mp4", frames, gop_size=25,
                            bit_rate=20_000_000)  # near-lossless for textured frames
            if images:  # PosePile's extraction keeps every 5th and every 64th frame
                folder = root / subject / "Images" / f"{stem}.{camera}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(0, num_frames):
                    if i % 5 == 0 or i % 64 == 0:
                        Image.fromarray(frames[i]).save(folder / f"frame_{i:06d}.jpg", quality=95)
    # the whole recording ("_ALL 1") is not an action take, and S2 (withheld test set) has no poses
    write_pose_cdf(root / "S1" / "MyPoseFeatures" / "D3_Positions_mono" / f"_ALL 1.{CAMERAS[0]}.cdf",
              to_camera(true_world("S1", "_ALL 1", 6), "S1", CAMERAS[0]))
    (root / "S2" / "Videos").mkdir(parents=True)
    return root


def write_videopose3d(root: Path, *, metres: bool = True, joints2d: int = 17, offset_px: float = 0.3) -> None:
    """VideoPose3D's data_3d_h36m.npz (world metres, renamed S1 stems, no S11 Directions) and 2D gt."""
    # VideoPose3D's remove_joints([4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]) keeps these 17
    vp3d_joints = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27] if joints2d == 17 else list(range(32))
    positions, positions2d = {}, {}
    for subject, stem, num_frames in TAKES:
        if subject == "S11" and stem == "Directions":
            continue
        action = stem.replace("TakingPhoto", "Photo").replace("WalkingDog", "WalkDog")
        world = annotated_world(subject, stem, num_frames)
        positions.setdefault(subject, {})[action] = (world / (1000.0 if metres else 1.0)).astype(np.float32)
        views = []
        for camera in CAMERAS:
            _, _, f, c, k, p = planted_camera(subject, camera)
            uv = h36m_project(to_camera(world, subject, camera), f, c, k, p)[:, vp3d_joints]
            views.append((uv + [offset_px, 0]).astype(np.float32))  # offset: tells these labels apart
        positions2d.setdefault(subject, {})[action] = views
    np.savez_compressed(root / "data_3d_h36m.npz", positions_3d=positions)
    np.savez_compressed(root / "data_2d_h36m_gt.npz", positions_2d=positions2d,
                        metadata={"num_joints": 17})


@pytest.fixture(scope="module")
def raw_images(tmp_path_factory):
    return build_raw(tmp_path_factory.mktemp("h36m_images") / "h36m", images=True, video=False)


@pytest.fixture(scope="module")
def raw_video(tmp_path_factory):
    return build_raw(tmp_path_factory.mktemp("h36m_video") / "h36m", images=False, video=True)


@pytest.fixture(scope="module")
def store_images(raw_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("h36m_stores") / "h36m.zarr"
    return open_store(convert(h36m, raw_images, out, image_size=IMAGE_SIZE).path)


@pytest.fixture
def raw_copy(raw_images, tmp_path):
    target = tmp_path / "raw"
    shutil.copytree(raw_images, target)
    return target


def decoded(store, key):
    table = store.attrs["codes"][key]
    return [table[i] for i in store.load(key)]


def examples_of(raw_root, given=None):
    return list(h36m.read_examples(raw_root, resolve_options(h36m, given)))


# -- protocol ----------------------------------------------------------------------------------

def test_registered_with_the_papers_defaults():
    assert get_converter("h36m") is h36m
    options = resolve_options(h36m, None)
    assert h36m.SKELETON == "h36m_25" and options.cameras == CAMERAS == h36m.CAMERAS
    assert options.frame_step == 1 and options.extra["train_frame_step"] == 5
    assert options.extra["test_frame_step"] == 64 and options.extra["correct_s9"] is True


def test_splits_subjects_cameras_and_frames_follow_the_paper(store_images):
    subjects, sequences = decoded(store_images, "subject"), decoded(store_images, "sequence")
    cameras, frames = decoded(store_images, "camera"), store_images.load("frame")
    splits = [store_images.attrs["codes"]["split"][s] for s in store_images.load("split")]
    # the metadata.xml tags say S5 is validation and S9/S11 training: ignored
    assert {s: sp for s, sp in zip(subjects, splits)} == SPLIT
    assert set(cameras) == set(CAMERAS)
    expected = set()
    for subject, stem, num_frames in TAKES:
        step = 5 if SPLIT[subject] == "train" else 64
        expected |= {(f"{subject}/{stem}", camera, f) for camera in CAMERAS for f in range(0, num_frames, step)}
    assert set(zip(sequences, cameras, frames.tolist())) == expected
    assert len(frames) == len(expected)
    # file stems differ per subject and are kept as they are; "_ALL" recordings and S2 are not takes
    assert {"S1/TakingPhoto 1", "S5/Photo"} <= set(sequences)
    assert not any("_ALL" in s for s in sequences) and "S2" not in subjects
    assert store_images.attrs["skeleton"] == "h36m_25"


def test_planted_joints_come_back_in_camera_and_world_frames(store_images):
    """Camera-frame joints to < 0.1 mm; the stored extrinsics put them at the planted world pose, which
    they only do when T is read as the camera centre (t = -R T) and Rx Ry Rz as world->camera."""
    pose3d, extrinsics = store_images.load("pose3d"), store_images.load("extrinsics").astype(np.float64)
    subjects, sequences = decoded(store_images, "subject"), decoded(store_images, "sequence")
    cameras, frames = decoded(store_images, "camera"), store_images.load("frame")
    lengths = {f"{s}/{stem}": n for s, stem, n in TAKES}
    for i in range(len(pose3d)):
        stem = sequences[i].split("/", 1)[1]
        truth = true_world(subjects[i], stem, lengths[sequences[i]])[frames[i]][JOINTS]
        R_frame, *_ = planted_camera(subjects[i], cameras[i])
        rotation = extrinsics[i, :3, :3] @ R_frame.T  # frame camera -> crop camera
        np.testing.assert_allclose(pose3d[i] @ rotation, to_camera(truth, subjects[i], cameras[i]), atol=0.1)
        world = (pose3d[i] - extrinsics[i, :3, 3]) @ extrinsics[i, :3, :3]
        np.testing.assert_allclose(world, truth, atol=0.1)


def test_store_passes_every_quality_check(store_images):
    failed = {o.name: o.description for o in run_store_checks(store_images) if not o.passed}
    assert not failed


def test_labels_sit_on_the_person_in_the_crops(store_images):
    """The rendered joint blobs are where pose2d says: intrinsics, distortion and crop agree."""
    assert_labels_on_the_rendered_joints(store_images, IMAGE_SIZE)


def test_video_and_extracted_frames_give_the_same_crops(raw_video, store_images, tmp_path):
    store = open_store(convert(h36m, raw_video, tmp_path / "video.zarr", image_size=IMAGE_SIZE).path)
    key = lambda s: list(zip(decoded(s, "sequence"), decoded(s, "camera"), s.load("frame").tolist()))  # noqa: E731
    assert key(store) == key(store_images)
    np.testing.assert_array_equal(store.load("pose3d"), store_images.load("pose3d"))
    difference = np.abs(store.load("image").astype(float) - store_images.load("image").astype(float))
    assert difference.mean() < 3 and np.percentile(difference, 99) < 20  # JPEG vs mpeg4 at best quality


def test_frames_missing_from_the_extraction_come_from_the_video(raw_video, tmp_path):
    """PosePile extracts only every 5th and 64th frame; other frames come from the video when it is there."""
    root = tmp_path / "raw"
    shutil.copytree(raw_video, root)
    folder = root / "S1" / "Images" / f"Directions 1.{CAMERAS[0]}"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((102, 100, 3), np.uint8)).save(folder / "frame_000005.jpg")
    examples = [e for e in examples_of(root, {"train_frame_step": 1})
                if e.sequence == "S1/Directions 1" and e.camera == CAMERAS[0]]
    assert [(e.frame, e.frame_index) for e in examples if e.frame_index is None] == [(5, None)]
    assert examples[5].image_path == folder / "frame_000005.jpg"
    assert all(e.image_path.suffix == ".mp4" and e.frame_index == e.frame for e in examples if e.frame != 5)


def test_frame_step_and_camera_options_are_honoured(raw_images, tmp_path):
    options = {"frame_step": 10, "cameras": ["55011271"], "test_frame_step": 32}
    store = open_store(convert(h36m, raw_images, tmp_path / "o.zarr", image_size=16, options=options).path)
    assert set(decoded(store, "camera")) == {"55011271"}
    got = set(zip(decoded(store, "sequence"), store.load("frame").tolist()))
    # convert() keeps frames that are multiples of frame_step on top of the per-split steps (lcm)
    expected = {(f"{s}/{stem}", f) for s, stem, n in TAKES
                for f in range(0, n, 10 if SPLIT[s] == "train" else 160)}
    assert got == expected
    assert store.attrs["converter_options"]["test_frame_step"] == 32


def test_missing_extracted_frame_without_video_names_the_frame(raw_images):
    with pytest.raises(RawDataError, match=r"Directions 1\.54138969/frame_000001\.jpg"):
        examples_of(raw_images, {"train_frame_step": 1})


def test_exclude_sequences(raw_images):
    examples = examples_of(raw_images, {"exclude_sequences": ["S11/Directions", f"S9/Greeting.{CAMERAS[1]}"]})
    assert not any(e.sequence == "S11/Directions" for e in examples)
    assert {e.camera for e in examples if e.sequence == "S9/Greeting"} == set(CAMERAS) - {CAMERAS[1]}


def test_2d_labels_come_from_d2_positions(raw_images):
    for e in examples_of(raw_images, {"cameras": [CAMERAS[1]]}):
        _, _, f, c, k, p = planted_camera(e.subject, e.camera)
        np.testing.assert_allclose(e.pose2d - h36m_project(e.pose3d, f, c, k, p), np.tile(D2_OFFSET, (25, 1)),
                                   atol=0.01)


# -- S9's shifted takes -------------------------------------------------------------------------

def test_s9_shift_is_undone_in_the_camera_frame_and_in_2d(raw_images):
    corrected = {(e.sequence, e.camera, e.frame): e for e in examples_of(raw_images)}
    as_released = {(e.sequence, e.camera, e.frame): e for e in examples_of(raw_images, {"correct_s9": False})}
    for (sequence, camera, frame), example in corrected.items():
        subject, stem = sequence.split("/", 1)
        truth = true_world(subject, stem, 65)[frame][JOINTS] if subject == "S9" else None
        if sequence == "S9/Greeting":
            R, T, f, c, k, p = planted_camera(subject, camera)
            np.testing.assert_allclose(example.pose3d, to_camera(truth, subject, camera), atol=0.01)
            np.testing.assert_allclose(as_released[sequence, camera, frame].pose3d,
                                       to_camera(truth + S9_SHIFT, subject, camera), atol=0.01)
            # the 2D labels move with it, onto the person in the image
            np.testing.assert_allclose(example.pose2d - D2_OFFSET,
                                       h36m_project(to_camera(truth, subject, camera), f, c, k, p), atol=0.05)
        else:
            np.testing.assert_array_equal(example.pose3d, as_released[sequence, camera, frame].pose3d)


# -- pitfalls of the release's formats ------------------------------------------------------------

def test_real_w0_rotation_is_world_to_camera_and_T_the_centre(tmp_path):
    """With the real S1 numbers: Rx(a) Ry(b) Rz(c) is the transpose of VideoPose3D's camera->world
    quaternion, and T (not t) is VideoPose3D's translation, the camera centre."""
    path = tmp_path / "metadata.xml"
    write_metadata(path)
    camera = h36m.read_cameras(path)[1, "54138969"]
    w, x, y, z = VP3D_S1_QUATERNION
    camera_to_world = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    np.testing.assert_allclose(camera.R, camera_to_world.T, atol=1e-6)
    np.testing.assert_allclose(camera.center, S1_EXTRINSICS[0, 3:], atol=1e-6)
    np.testing.assert_allclose(camera.t, -camera.R @ S1_EXTRINSICS[0, 3:], atol=1e-6)
    assert not np.allclose(camera.t, S1_EXTRINSICS[0, 3:], atol=100)
    # a person at the world origin is ~5.5 m in front of the camera, upright in the image (world z up)
    assert 5000 < camera.world_to_camera(np.zeros(3))[2] < 6000
    assert camera.R[1] @ [0, 0, 1] < -0.9


def test_p_keeps_w0_order_in_the_opencv_approximation(tmp_path):
    """dist = [k1, k2, p1, p2, k3] with p in w0 order (PosePile): close to H36M's own model, and much
    closer than with p swapped (VideoPose3D's table stores p reversed)."""
    w0 = np.concatenate([np.stack([subject_extrinsics(s) for s in range(1, 12)], 1).reshape(-1),
                         INTRINSICS.reshape(-1)])
    w0[264 + 7: 264 + 9] = [0.02, -0.008]  # exaggerated tangential coefficients of camera 1
    write_metadata(tmp_path / "metadata.xml", w0=w0)
    camera = h36m.read_cameras(tmp_path / "metadata.xml")[1, "54138969"]
    f, c, k, p = INTRINSICS[0, 0:2], INTRINSICS[0, 2:4], INTRINSICS[0, 4:7], w0[264 + 7: 264 + 9]
    np.testing.assert_allclose(camera.dist, [k[0], k[1], p[0], p[1], k[2]])
    grid = np.stack(np.meshgrid(np.linspace(-0.3, 0.3, 13), np.linspace(-0.3, 0.3, 13)), -1).reshape(-1, 2)
    points = np.concatenate([grid, np.ones((len(grid), 1))], axis=1) * 5000
    exact = h36m_project(points, f, c, k, p)
    swapped = type(camera)(K=camera.K, dist=[k[0], k[1], p[1], p[0], k[2]])
    error = np.linalg.norm(camera.camera_to_image(points) - exact, axis=-1)
    error_swapped = np.linalg.norm(swapped.camera_to_image(points) - exact, axis=-1)
    assert error.mean() < 0.5 * error_swapped.mean()


def test_cdf_pose_is_one_record_of_all_frames(tmp_path):
    """The release's CDF reads as (1, N, 96): N frames, not one; a file with one record per frame is read
    the same way."""
    poses = to_camera(true_world("S1", "x", 7), "S1", CAMERAS[0])
    write_pose_cdf(tmp_path / "one_record.cdf", poses)
    np.testing.assert_allclose(h36m.read_pose_cdf(tmp_path / "one_record.cdf", 3), poses, atol=1e-3)
    path = tmp_path / "per_frame.cdf"
    cdf = cdfwrite.CDF(str(path), cdf_spec={"Compressed": False})
    cdf.write_var({"Variable": "Pose", "Data_Type": cdfwrite.CDF.CDF_DOUBLE, "Num_Elements": 1, "Rec_Vary": True,
                   "Dim_Sizes": [96]}, var_data=poses.reshape(7, 96))
    cdf.close()
    np.testing.assert_allclose(h36m.read_pose_cdf(path, 3), poses)


def test_metadata_xml_at_the_root_is_accepted(raw_copy):
    (raw_copy / "Release-v1.2" / "metadata.xml").rename(raw_copy / "metadata.xml")
    assert len(examples_of(raw_copy)) == 52


@pytest.fixture(scope="module")
def raw_videopose3d(tmp_path_factory, raw_images):
    root = tmp_path_factory.mktemp("h36m_vp3d") / "h36m"
    shutil.copytree(raw_images, root)
    write_videopose3d(root)
    return root


def test_videopose3d_files_give_the_same_labels(raw_videopose3d, store_images, tmp_path):
    """World metres with S1's renamed stems ("Photo 1" is the video "TakingPhoto 1") and no S11 Directions."""
    store = open_store(convert(h36m, raw_videopose3d, tmp_path / "vp3d.zarr", image_size=IMAGE_SIZE,
                               options={"source": "videopose3d"}).path)
    key = lambda s: list(zip(decoded(s, "sequence"), decoded(s, "camera"), s.load("frame").tolist()))  # noqa: E731
    reference = {k: i for i, k in enumerate(key(store_images))}
    assert set(reference) - set(key(store)) == {k for k in reference if k[0] == "S11/Directions"}
    rows = [reference[k] for k in key(store)]
    np.testing.assert_allclose(store.load("pose3d"), store_images.load("pose3d")[rows], atol=0.05)
    np.testing.assert_allclose(store.load("extrinsics"), store_images.load("extrinsics")[rows], atol=1e-3)
    assert not [o.name for o in run_store_checks(store) if not o.passed]


def test_videopose3d_2d_has_17_joints_placed_into_h36m_25(raw_videopose3d):
    examples = examples_of(raw_videopose3d, {"source": "videopose3d"})
    names = ("rhip,rkne,rank,rfoo,rtoe,lhip,lkne,lank,lfoo,ltoe,spin,neck,head,htop,lsho,lelb,lwri,lthu,lfin,"
             "rsho,relb,rwri,rthu,rfin,pelv").split(",")
    in_17 = ["pelv", "rhip", "rkne", "rank", "lhip", "lkne", "lank", "spin", "neck", "head", "htop",
             "lsho", "lelb", "lwri", "rsho", "relb", "rwri"]
    labelled = np.array([n in in_17 for n in names])
    for e in examples:
        if e.sequence == "S9/Greeting":  # VideoPose3D projected the shifted poses: 2D comes from corrected 3D
            assert e.pose2d is None
            continue
        assert np.isnan(e.pose2d[~labelled]).all() and np.isfinite(e.pose2d[labelled]).all()
        R, T, f, c, k, p = planted_camera(e.subject, e.camera)
        np.testing.assert_allclose(e.pose2d[labelled] - h36m_project(e.pose3d[labelled], f, c, k, p),
                                   np.tile([0.3, 0.0], (17, 1)), atol=1e-3)


def test_videopose3d_in_millimetres_or_with_32_joint_2d_is_refused(tmp_path, raw_images):
    root = tmp_path / "raw"
    shutil.copytree(raw_images, root)
    write_videopose3d(root, metres=False)
    for folder in root.glob("S*/MyPoseFeatures/D3_Positions_mono"):
        shutil.rmtree(folder)  # no CDF poses: "auto" reads VideoPose3D's files
    with pytest.raises(RawDataError, match=r"data_3d_h36m\.npz: field 'positions_3d\[S1\]\[Directions 1\]'.*metres"):
        examples_of(root)
    write_videopose3d(root, joints2d=32)
    with pytest.raises(RawDataError, match=r"data_2d_h36m_gt\.npz: field 'positions_2d\[S1\]\[Directions 1\]\[0\]'"
                                           r".*17 joints"):
        examples_of(root, {"source": "videopose3d"})


# -- bad inputs --------------------------------------------------------------------------------

def _mono(root, subject="S1", stem="Directions 1", camera=CAMERAS[0]):
    return root / subject / "MyPoseFeatures" / "D3_Positions_mono" / f"{stem}.{camera}.cdf"


def _d2(root, subject="S1", stem="Directions 1", camera=CAMERAS[0]):
    return root / subject / "MyPoseFeatures" / "D2_Positions" / f"{stem}.{camera}.cdf"


def _damage_cases():
    def missing_metadata(root):
        (root / "Release-v1.2" / "metadata.xml").unlink()
        return root / "Release-v1.2" / "metadata.xml", None

    def malformed_w0(root):
        path = root / "Release-v1.2" / "metadata.xml"
        text = path.read_text()
        start = text.index("<w0>[") + len("<w0>[")
        path.write_text(text[:start] + text[start:].split(" ", 1)[1])  # drop the first of the 300 numbers
        return path, "w0"

    def missing_mono(root):
        _mono(root, "S5", "Photo").unlink()  # its frames are there
        return _mono(root, "S5", "Photo"), None

    def missing_d2(root):
        _d2(root, "S9", "Walking 1", CAMERAS[2]).unlink()
        return _d2(root, "S9", "Walking 1", CAMERAS[2]), None

    def truncated_mono(root):
        path = _mono(root, "S11", "Directions", CAMERAS[3])
        path.write_bytes(path.read_bytes()[:700])
        return path, None

    def cdf_without_pose(root):
        path = _mono(root)
        write_pose_cdf(path, to_camera(true_world("S1", "Directions 1", 11), "S1", CAMERAS[0]), variable="Poses")
        return path, "Pose"

    def wrong_joint_count(root):
        path = _mono(root)
        write_pose_cdf(path, to_camera(true_world("S1", "Directions 1", 11), "S1", CAMERAS[0])[:, :31])
        return path, "Pose"

    def length_mismatch(root):
        path = _d2(root, "S1", "TakingPhoto 1", CAMERAS[1])
        _, _, f, c, k, p = planted_camera("S1", CAMERAS[1])
        write_pose_cdf(path, h36m_project(to_camera(true_world("S1", "TakingPhoto 1", 5), "S1", CAMERAS[1]),
                                          f, c, k, p))
        return path, "Pose"

    def metres(root):
        path = _mono(root, "S5", "Photo", CAMERAS[2])
        write_pose_cdf(path, to_camera(true_world("S5", "Photo", 6), "S5", CAMERAS[2]) / 1000)
        return path, "Pose"

    return {f.__name__: f for f in (missing_metadata, malformed_w0, missing_mono, missing_d2, truncated_mono,
                                    cdf_without_pose, wrong_joint_count, length_mismatch, metres)}


@pytest.mark.parametrize("case", sorted(_damage_cases()))
def test_bad_raw_input_names_the_file_and_the_field(raw_copy, tmp_path, case):
    damaged, field = _damage_cases()[case](raw_copy)
    with pytest.raises(RawDataError) as info:
        convert(h36m, raw_copy, tmp_path / "out.zarr", image_size=16)
    assert info.value.path == damaged
    assert str(damaged) in str(info.value)
    if field:
        assert info.value.field == field and f"field {field!r}" in str(info.value)
    if case == "metres":
        assert "metres" in str(info.value)
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("case", ["truncated frame (while writing)", "metres (while reading annotations)"])
def test_a_failed_conversion_keeps_the_published_store(raw_copy, tmp_path, case):
    out = tmp_path / "stores" / "h36m.zarr"
    good = convert(h36m, raw_copy, out, image_size=16)
    before = open_store(out).load("pose3d")
    if case.startswith("truncated"):
        damaged = raw_copy / "S11" / "Images" / f"Directions.{CAMERAS[3]}" / "frame_000064.jpg"
        damaged.write_bytes(damaged.read_bytes()[:300])
    else:
        damaged, _ = _damage_cases()["metres"](raw_copy)
    with pytest.raises(RawDataError) as info:
        convert(h36m, raw_copy, out, image_size=16)
    assert str(damaged) in str(info.value)
    store = open_store(out)
    assert store.attrs["raw_fingerprint"] == good.raw_fingerprint
    np.testing.assert_array_equal(store.load("pose3d"), before)
    assert sorted(p.name for p in (tmp_path / "stores").iterdir() if p.name.startswith("h36m")) == ["h36m.zarr"]
