"""The MPI-INF-3DHP converters on tiny raw trees written in the real release layouts.

Training: ``S<k>/Seq<m>/annot.mat`` (MATLAB v5 via scipy.io.savemat, 14x1 cells), ``camera.calibration``
(Skeletool text), ``imageSequence/video_<c>.avi`` (PyAV) and optionally ffmpeg-style extracted frames
``imageSequence/img_<c>_<r+1:06d>.jpg``. Test set: ``mpi_inf_3dhp_test_set/TS<k>/annot_data.mat`` (MATLAB
v7.3: HDF5 with MATLAB's 512-byte header, datasets as h5py reads MATLAB's 3x17x1xN) and 1-based
``imageSequence/img_%06d.jpg``. Frames are flat colours that say which row (and which source) they are.
"""

import shutil

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")
h5py = pytest.importorskip("h5py")
savemat = pytest.importorskip("scipy.io").savemat

from assets.cameras import Camera  # noqa: E402
from assets.converters import get_converter  # noqa: E402
from assets.converters import mpi_inf_3dhp, mpi_inf_3dhp_test  # noqa: E402
from assets.converters.common import convert  # noqa: E402
from assets.converters.raw_io import RawDataError  # noqa: E402
from assets.quality import run_store_checks  # noqa: E402
from assets.skeletons import get_skeleton  # noqa: E402
from assets.store import open_store  # noqa: E402
from assets.synthetic.body import Body  # noqa: E402
from assets.synthetic.motion import generate_motion  # noqa: E402
from converter_checks import assert_refused_keeping_the_store
from raw_media import write_video

FRAME = 96  # side of the tiny training frames (the release's are 2048)
ROWS = 12  # annotation rows per camera
VIDEO_FRAMES = 10  # the videos end before the annotations do, as some of the release's
CROP = 40
IMAGE_GREEN = 220  # extracted frames are (level, 220, 30); video frames are grey (level, level, level)
# z-up synthetic world -> the 3DHP world (y up): a proper rotation
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
# z-up synthetic world -> a test camera's frame, the person facing the camera 4.5 m ahead
Z_UP_TO_TEST_CAMERA = np.array([[-1.0, 0, 0], [0, 0, -1], [0, -1, 0]])


def level(row: int) -> int:
    return 20 + 15 * row


def ts_level(row: int) -> int:
    return 30 + 25 * row


# -- raw tree writers ----------------------------------------------------------------------------

def walking_poses(fmt: str, rows: int, seed: int) -> np.ndarray:
    """[rows, J, 3] mm, z up, a person walking near the origin."""
    body = Body()
    motion = generate_motion("walk", np.arange(rows) / 25.0, seed, "3dhp", radius=300.0)
    return body.joints(fmt, motion.frames(body))


def studio_cameras(seed: int) -> list[Camera]:
    """14 upright cameras on a ring around the origin, y up, looking at chest height (mm)."""
    rng = np.random.default_rng(seed)
    cameras = []
    for i in range(14):
        angle = 2 * np.pi * i / 14 + rng.uniform(-0.1, 0.1)
        centre = np.array([np.cos(angle) * (4000 + 200 * (i % 3)), 700 + 300 * (i % 4),
                           np.sin(angle) * (4000 + 200 * (i % 3))])
        forward = np.array([0.0, 900.0, 0.0]) + rng.uniform(-100, 100, 3) - centre
        forward /= np.linalg.norm(forward)
        right = np.cross([0.0, -1.0, 0.0], forward)
        right /= np.linalg.norm(right)
        R = np.stack([right, np.cross(forward, right), forward])
        K = [[110.0 + i, 0, 47.5 + 0.5 * (i % 3)], [0, 111.0 + i, 47.5 - 0.4 * (i % 2)], [0, 0, 1]]
        cameras.append(Camera(K=K, R=R, t=-R @ centre))
    return cameras


def _numbers(matrix: np.ndarray) -> str:
    return " ".join(np.format_float_positional(v, precision=10, trim="-") for v in np.ravel(matrix))


def write_calibration(path, cameras: list[Camera], size=(FRAME, FRAME)) -> None:
    lines = ["Skeletool Camera Calibration File V1.0"]
    for i, cam in enumerate(cameras):
        intrinsic = np.eye(4)
        intrinsic[:3, :3] = cam.K
        lines += [f"name          {i}", "  sensor      10 10", f"  size        {size[0]} {size[1]}",
                  "  animated    0", f"  intrinsic   {_numbers(intrinsic)} ",
                  f"  extrinsic   {_numbers(cam.extrinsic_matrix)} ", "  radial      0"]
    path.write_text("\n".join(lines) + "\n")


def cells(arrays) -> np.ndarray:
    """A MATLAB cell column (loadmat's 14x1 object array) holding ``arrays``."""
    out = np.empty((len(arrays), 1), dtype=object)
    for i, arr in enumerate(arrays):
        out[i, 0] = arr
    return out


def write_annot_mat(path, annot2: list, annot3: list) -> None:
    """annot.mat as the release has it: per camera one [F, 56] / [F, 84] cell, rows = frames."""
    rows = len(annot3[0])
    mat = {"annot2": cells([a.reshape(rows, -1) for a in annot2]),
           "annot3": cells([a.reshape(rows, -1) for a in annot3]),
           "univ_annot3": cells([0.9 * a.reshape(rows, -1) for a in annot3]),
           "cameras": np.arange(len(annot3), dtype=np.float64)[None],
           "frames": np.arange(rows, dtype=np.float64)[:, None]}
    savemat(path, mat)


def level_video(path, levels: list[int], size=(FRAME, FRAME)) -> None:
    """A video whose frame i is one flat grey level (tells the frames apart after decoding)."""
    write_video(path, [np.full((size[1], size[0], 3), value, np.uint8) for value in levels], rate=25)


def write_sequence(root, subject: str, sequence: str, seed: int, *, videos=range(14), extracted=None,
                   shift2d=0.0, unit=1.0) -> dict:
    """One training sequence; returns the planted world poses [ROWS, 28, 3] and the cameras."""
    seq_dir = root / subject / sequence
    (seq_dir / "imageSequence").mkdir(parents=True)
    world = walking_poses("mpi_inf_3dhp_28", ROWS, seed) @ Z_UP_TO_Y_UP.T
    cameras = studio_cameras(seed)
    annot3 = [cam.world_to_camera(world) for cam in cameras]  # in each camera's frame: cell c = camera c
    annot2 = [cam.camera_to_image(a) + shift2d for cam, a in zip(cameras, annot3)]
    write_annot_mat(seq_dir / "annot.mat", annot2, [a * unit for a in annot3])
    write_calibration(seq_dir / "camera.calibration", cameras)
    for c in videos:
        level_video(seq_dir / "imageSequence" / f"video_{c}.avi", [level(r) for r in range(VIDEO_FRAMES)])
    for c, rows in (extracted or {}).items():
        for r in rows:  # ffmpeg's img_X_%06d.jpg: the first frame is number 1
            pixels = np.empty((FRAME, FRAME, 3), np.uint8)
            pixels[:] = (level(r), IMAGE_GREEN, 30)
            Image.fromarray(pixels).save(seq_dir / "imageSequence" / f"img_{c}_{r + 1:06d}.jpg", quality=95)
    return {"world": world, "cameras": cameras, "dir": seq_dir}


def write_test_sequence(set_dir, number: int, valid: list[int], seed: int, *, unit=1.0, joints=17) -> dict:
    """TS<number>: annot_data.mat as MATLAB v7.3 writes it, 1-based frames; returns the planted poses."""
    seq_dir = set_dir / f"TS{number}"
    (seq_dir / "imageSequence").mkdir(parents=True)
    camera = mpi_inf_3dhp_test.sequence_camera(number)
    width, height = mpi_inf_3dhp_test.SEQUENCE_CAMERAS[camera.name]["image_size"]
    rows = len(valid)
    # in the camera frame, the person upright ahead; the file's joint order is the toolkit's 'relevant'
    # set, which is the project's mpi_inf_3dhp_17 order
    poses = walking_poses("mpi_inf_3dhp_17", rows, seed) @ Z_UP_TO_TEST_CAMERA.T + [0.0, 900.0, 4500.0]
    annot2 = camera.camera_to_image(poses)  # with the lens distortion of TS5-6
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    path = seq_dir / "annot_data.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in (("annot2", annot2[:, None]), ("annot3", poses[:, None] * unit),
                            ("univ_annot3", 0.9 * poses[:, None]), ("valid_frame", np.array(valid, float)[:, None]),
                            ("activity_annotation", np.ones((rows, 1)))):
            if name in ("annot2", "annot3") and joints != 17:
                value = value[:, :, :joints]
            f.create_dataset(name, data=value)  # h5py's view of MATLAB's [3 x 17 x 1 x N]
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as raw:
        raw.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    for r in range(rows):
        pixels = np.full((height, width, 3), ts_level(r), np.uint8)
        Image.fromarray(pixels).save(seq_dir / "imageSequence" / f"img_{r + 1:06d}.jpg", quality=90)
    return {"poses": poses, "camera": camera, "dir": seq_dir, "valid": np.array(valid, bool)}


@pytest.fixture
def release(tmp_path):
    """Two subjects' training sequences with videos for every camera."""
    root = tmp_path / "mpi_inf_3dhp"
    seqs = {("S1", "Seq1"): write_sequence(root, "S1", "Seq1", seed=1),
            ("S8", "Seq2"): write_sequence(root, "S8", "Seq2", seed=2)}
    return root, seqs


@pytest.fixture
def ts_tree(tmp_path):
    set_dir = tmp_path / "raw" / "mpi_inf_3dhp_test_set"
    seqs = {"TS1": write_test_sequence(set_dir, 1, [1, 1, 0, 1, 1], seed=3),
            "TS5": write_test_sequence(set_dir, 5, [1, 1, 1], seed=4)}
    return set_dir.parent, seqs


# -- reading a store back ------------------------------------------------------------------------

def decoded(store, name):
    return np.array(store.attrs["codes"][name])[store.load(name)]


def world_poses(store) -> np.ndarray:
    """The stored crop-camera poses taken back to the world through each example's extrinsics."""
    ext = store.load("extrinsics").astype(np.float64)
    return np.einsum("nji,nkj->nki", ext[:, :3, :3], store.load("pose3d").astype(np.float64) - ext[:, None, :3, 3])


def crop_medians(store) -> np.ndarray:
    return np.median(store.load("image").reshape(len(store), -1, 3), axis=1)


def checks(path) -> dict:
    return {outcome.name: outcome for outcome in run_store_checks(path)}


# -- training release ------------------------------------------------------------------------------

def test_both_converters_are_registered():
    assert get_converter("mpi_inf_3dhp") is mpi_inf_3dhp
    assert get_converter("mpi_inf_3dhp_test") is mpi_inf_3dhp_test


def test_training_release_from_videos(release, tmp_path):
    root, seqs = release
    result = convert(mpi_inf_3dhp, root, tmp_path / "3dhp.zarr", image_size=CROP)
    store = open_store(result.path)
    subjects, sequences, cameras = decoded(store, "subject"), decoded(store, "sequence"), decoded(store, "camera")
    frames = store.load("frame")
    # the paper's protocol: every training subject trains; PosePile's vnect cameras and every 5th frame
    assert set(store.load("split")) == {0}
    assert set(subjects) == {"S1", "S8"} and set(sequences) == {"Seq1", "Seq2"}
    assert sorted(set(cameras), key=int) == ["0", "1", "2", "4", "5", "6", "7", "8"]
    # row 10 is annotated but past the end of the 10-frame videos: dropped, not an error
    assert set(frames) == {0, 5} and len(store) == 2 * 8 * 2
    # planted joints come back: annot3 is in each camera's frame, the extrinsics only place the camera
    world = world_poses(store)
    for i in range(len(store)):
        planted = seqs[(subjects[i], sequences[i])]["world"][frames[i]]
        np.testing.assert_allclose(world[i], planted, atol=0.1)
        cam = seqs[(subjects[i], sequences[i])]["cameras"][int(cameras[i])]
        # the crop camera shares the frame camera's centre: distances from it are unchanged
        np.testing.assert_allclose(np.linalg.norm(store["pose3d"][i].astype(np.float64), axis=-1),
                                   np.linalg.norm(cam.world_to_camera(planted), axis=-1), atol=0.1)
    # each example shows its row's video frame (frame_index = row)
    medians = crop_medians(store)
    np.testing.assert_allclose(medians[:, 0], [level(f) for f in frames], atol=4)
    outcomes = checks(result.path)
    assert all(o.passed for o in outcomes.values()), {n: o.description for n, o in outcomes.items() if not o.passed}
    assert "skipped" not in outcomes["reprojection"].metadata  # annot2 was compared, independently of annot3
    assert "skipped" not in outcomes["chirality"].metadata


def test_options_choose_cameras_frames_and_validation_subjects(release, tmp_path):
    root, _ = release
    options = {"frame_step": 3, "cameras": ["3", "11"], "val_subjects": ["S8"]}
    store = open_store(convert(mpi_inf_3dhp, root, tmp_path / "s.zarr", image_size=24, options=options).path)
    assert set(decoded(store, "camera")) == {"3", "11"}
    assert set(store.load("frame")) == {0, 3, 6, 9}
    split = dict(zip(decoded(store, "subject"), store.load("split")))
    assert split == {"S1": 0, "S8": 1}
    assert store.attrs["converter_options"]["val_subjects"] == ["S8"]


def test_extracted_frames_are_1_based_and_win_over_the_video(tmp_path):
    root = tmp_path / "raw"
    # camera 0: frames extracted (no video); camera 1: the video and a few extracted frames
    seq = write_sequence(root, "S2", "Seq1", seed=5, videos=[1], extracted={0: range(9), 1: [0, 4]})
    store = open_store(convert(mpi_inf_3dhp, root, tmp_path / "x.zarr", image_size=24,
                               options={"frame_step": 1, "cameras": ["0", "1"]}).path)
    cameras, frames = decoded(store, "camera"), store.load("frame")
    # without a video the last extracted frame ends the camera's rows, as the video's end would
    assert sorted(frames[cameras == "0"]) == list(range(9))
    assert sorted(frames[cameras == "1"]) == list(range(VIDEO_FRAMES))
    medians = crop_medians(store)
    np.testing.assert_allclose(medians[:, 0], [level(f) for f in frames], atol=4)  # img_<c>_<r+1> is row r
    from_images = (cameras == "0") | ((cameras == "1") & np.isin(frames, [0, 4]))
    assert np.all(np.abs(medians[from_images, 1] - IMAGE_GREEN) <= 4)
    assert np.all(np.abs(medians[~from_images, 1] - medians[~from_images, 0]) <= 4)  # grey video frames
    np.testing.assert_allclose(world_poses(store), seq["world"][frames], atol=0.1)


def test_zero_based_frame_names_are_refused_not_read_one_row_off(tmp_path):
    root = tmp_path / "raw"
    seq = write_sequence(root, "S2", "Seq1", seed=5, videos=[0], extracted={0: range(3)})
    zero_based = seq["dir"] / "imageSequence" / "img_0_000000.jpg"  # PosePile's main.py numbering
    shutil.copy(seq["dir"] / "imageSequence" / "img_0_000001.jpg", zero_based)
    with pytest.raises(RawDataError, match="0-based") as info:
        convert(mpi_inf_3dhp, root, tmp_path / "z.zarr", image_size=16, options={"cameras": ["0"]})
    assert str(zero_based) in str(info.value)


def test_rows_are_capped_by_the_official_frame_counts():
    usable = mpi_inf_3dhp.usable_rows
    assert usable("S6", "Seq2", 2, 6300) == 3911  # the short video_2.avi of S6/Seq2
    assert usable("S6", "Seq2", 1, 6300) == 6145
    assert usable("S1", "Seq2", 0, 13000) == 12430
    assert usable("S1", "Seq1", 0, 100) == 100


def test_annot2_is_an_independent_label_the_reprojection_check_compares(tmp_path):
    root = tmp_path / "raw"
    write_sequence(root, "S3", "Seq1", seed=6, videos=[0, 1], shift2d=np.array([6.0, 0.0]))
    result = convert(mpi_inf_3dhp, root, tmp_path / "shifted.zarr", image_size=CROP,
                     options={"frame_step": 1, "cameras": ["0", "1"]})
    outcome = checks(result.path)["reprojection"]
    assert not outcome.passed, outcome.description


# -- bad training input ----------------------------------------------------------------------------

def _seq(root):
    return root / "S1" / "Seq1"


def _rewrite_calibration(old, new):
    def damage(root):
        path = _seq(root) / "camera.calibration"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        return path
    return damage


def _rewrite_annot(change):
    def damage(root):
        path = _seq(root) / "annot.mat"
        from scipy.io import loadmat
        mat = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        change(mat)
        savemat(path, mat)
        return path
    return damage


def _cells_map(mat, name, fn):
    mat[name] = cells([fn(c) for c in mat[name].ravel()])


def _replace_file(name, content):
    def damage(root):
        path = _seq(root) / name
        path.write_bytes(content(path.read_bytes()) if callable(content) else content)
        return path
    return damage


def _remove(name):
    def damage(root):
        path = _seq(root) / name
        path.unlink()
        return path
    return damage


def _as_hdf5(root):
    path = _seq(root) / "annot.mat"
    path.unlink()
    with h5py.File(path, "w", userblock_size=512) as f:
        f["annot3"] = np.zeros((84, 5))
    with open(path, "r+b") as raw:
        raw.write(b"MATLAB 7.3 MAT-file".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    return path


TRAIN_DAMAGE = {
    "missing annot.mat": (_remove("annot.mat"), None),
    "missing camera.calibration": (_remove("camera.calibration"), None),
    "truncated annot.mat": (_replace_file("annot.mat", lambda b: b[:len(b) // 2]), None),
    "annot.mat is not a MAT file": (_replace_file("annot.mat", b"<html>404 Not Found</html>" * 20), None),
    "annot.mat saved as v7.3": (_as_hdf5, None),
    "annot.mat without annot3": (_rewrite_annot(lambda m: m.pop("annot3")), "'annot3'"),
    "annot.mat without annot2": (_rewrite_annot(lambda m: m.pop("annot2")), "'annot2'"),
    "27 joints in annot3": (_rewrite_annot(lambda m: _cells_map(m, "annot3", lambda c: c[:, :81])), "annot3{1}"),
    "27 joints in annot2": (_rewrite_annot(lambda m: _cells_map(m, "annot2", lambda c: c[:, :54])), "annot2{1}"),
    "annot3 in metres": (_rewrite_annot(lambda m: _cells_map(m, "annot3", lambda c: c / 1000)), "annot3 (camera 0)"),
    "calibration intrinsic of 15 numbers": (_rewrite_calibration("intrinsic   110 0", "intrinsic   0"),
                                            "camera 0 'intrinsic'"),
    "calibration text in a matrix": (_rewrite_calibration("intrinsic   110", "intrinsic   f"), "camera 0 'intrinsic'"),
    "calibration without its header": (_rewrite_calibration("Skeletool Camera Calibration File V1.0", ""), "header"),
    "calibration camera block missing": (_rewrite_calibration("name          1\n", "name          15\n"), "'name'"),
    "calibration in metres": (lambda root: _metres_calibration(_seq(root) / "camera.calibration"), "'extrinsic'"),
    "no video and no frames": (_remove("imageSequence/video_1.avi"), None),
}


def _metres_calibration(path):
    cameras = mpi_inf_3dhp.read_calibration(path)
    write_calibration(path, [Camera(K=c.K, R=c.R, t=c.t / 1000) for c in cameras.values()])
    return path


@pytest.mark.parametrize("case", sorted(TRAIN_DAMAGE))
def test_bad_training_input_names_file_and_field_and_keeps_the_old_store(tmp_path, case):
    root = tmp_path / "raw"
    write_sequence(root, "S1", "Seq1", seed=7, videos=[0, 1])
    options = {"cameras": ["0", "1"]}
    store_path = tmp_path / "3dhp.zarr"
    convert(mpi_inf_3dhp, root, store_path, image_size=16, options=options)
    damage, field = TRAIN_DAMAGE[case]
    damaged_file = damage(root)
    assert_refused_keeping_the_store(lambda: convert(mpi_inf_3dhp, root, store_path, image_size=16, options=options),
                                     store_path, damaged_file, field)


def test_a_camera_block_with_lens_distortion_is_refused(tmp_path):
    path = tmp_path / "camera.calibration"
    write_calibration(path, studio_cameras(0))
    path.write_text(path.read_text().replace("radial      0", "radial      0.05", 1))
    with pytest.raises(RawDataError, match="camera 0 'radial'"):
        mpi_inf_3dhp.read_calibration(path)


# -- test set ---------------------------------------------------------------------------------------

def test_test_set(ts_tree, tmp_path):
    raw, seqs = ts_tree
    result = convert(mpi_inf_3dhp_test, raw, tmp_path / "3dhp_test.zarr", image_size=CROP)
    store = open_store(result.path)
    subjects, cameras, frames = decoded(store, "subject"), decoded(store, "camera"), store.load("frame")
    assert set(store.load("split")) == {2}  # test
    # only valid frames, all of them
    assert sorted(zip(subjects, frames)) == [("TS1", 0), ("TS1", 1), ("TS1", 3), ("TS1", 4),
                                             ("TS5", 0), ("TS5", 1), ("TS5", 2)]
    assert set(zip(subjects, cameras)) == {("TS1", "ts1-4"), ("TS5", "ts5-6")}
    assert np.isnan(store.load("extrinsics")).all()  # no world frame
    # row r is img_<r+1>
    np.testing.assert_allclose(crop_medians(store)[:, 0], [ts_level(f) for f in frames], atol=3)
    # planted camera-frame joints come back, up to the crop camera's rotation about the shared centre
    skeleton = get_skeleton("mpi_inf_3dhp_17")
    pose3d = store.load("pose3d").astype(np.float64)
    for i in range(len(store)):
        planted = seqs[subjects[i]]["poses"][frames[i]]
        u, _, vt = np.linalg.svd(pose3d[i].T @ planted)
        rotation = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
        np.testing.assert_allclose(planted @ rotation.T, pose3d[i], atol=0.1)
        assert np.linalg.det(rotation) > 0
        # the test set's order: pelvis, spine, head last (not PosePile's spine, head, pelvis)
        pelvis = skeleton.index("pelv")
        assert pelvis == 14 and np.allclose(planted[14] @ rotation.T, pose3d[i, pelvis], atol=0.1)
    # the intrinsics of TS1-4 and TS5-6 (with its distortion) make annot2 and annot3 agree
    outcomes = checks(result.path)
    assert all(o.passed for o in outcomes.values()), {n: o.description for n, o in outcomes.items() if not o.passed}
    assert "skipped" not in outcomes["reprojection"].metadata


def test_test_set_cameras_are_posepiles():
    ts1, ts5 = mpi_inf_3dhp_test.sequence_camera(1), mpi_inf_3dhp_test.sequence_camera(5)
    np.testing.assert_allclose(ts1.K, [[1500.17, 0, 1017.39], [0, 1500.83, 1043.49], [0, 0, 1]], atol=0.01)
    np.testing.assert_allclose(ts5.K, [[1683.98, 0, 939.86], [0, 1672.59, 556.35], [0, 0, 1]], atol=0.01)
    assert not ts1.dist.any() and ts5.dist[0] == pytest.approx(-0.276859611)
    assert mpi_inf_3dhp_test.sequence_camera(4).name == "ts1-4" and mpi_inf_3dhp_test.sequence_camera(6).name == "ts5-6"


def _ts1(raw):
    return raw / "mpi_inf_3dhp_test_set" / "TS1"


def _rewrite_h5(change):
    def damage(raw):
        path = _ts1(raw) / "annot_data.mat"
        with h5py.File(path, "r+") as f:
            change(f)
        return path
    return damage


def _h5_scale(name, factor):
    def change(f):
        data = f[name][()] * factor
        del f[name]
        f[name] = data
    return change


def _test_file(content):
    def damage(raw):
        path = _ts1(raw) / "annot_data.mat"
        path.write_bytes(content(path.read_bytes()) if callable(content) else content)
        return path
    return damage


def _sixteen_joints(raw):
    seq_dir = _ts1(raw)
    shutil.rmtree(seq_dir)
    write_test_sequence(seq_dir.parent, 1, [1, 1, 0, 1, 1], seed=3, joints=16)
    return seq_dir / "annot_data.mat"


def _unknown_sequence(raw):
    path = raw / "mpi_inf_3dhp_test_set" / "TS7"
    shutil.copytree(_ts1(raw), path)
    return path


def _missing_valid_image(raw):
    path = _ts1(raw) / "imageSequence" / "img_000004.jpg"  # row 3, valid
    path.unlink()
    return path


TEST_DAMAGE = {
    "missing annot_data.mat": (lambda raw: _remove_path(_ts1(raw) / "annot_data.mat"), None),
    "annot_data.mat is not HDF5": (_test_file(b"MATLAB 5.0 MAT-file" + b"\x00" * 300), None),
    "truncated annot_data.mat": (_test_file(lambda b: b[:1500]), None),
    "no valid_frame": (_rewrite_h5(lambda f: f.__delitem__("valid_frame")), "'valid_frame'"),
    "no annot3": (_rewrite_h5(lambda f: f.__delitem__("annot3")), "'annot3'"),
    "no annot2": (_rewrite_h5(lambda f: f.__delitem__("annot2")), "'annot2'"),
    "16 joints": (_sixteen_joints, "'annot3'"),
    "annot3 in metres": (_rewrite_h5(_h5_scale("annot3", 0.001)), "'annot3'"),
    "a sequence without a known camera": (_unknown_sequence, None),
    "a valid frame without its image": (_missing_valid_image, None),
}


def _remove_path(path):
    path.unlink()
    return path


@pytest.mark.parametrize("case", sorted(TEST_DAMAGE))
def test_bad_test_set_input_names_file_and_field_and_keeps_the_old_store(tmp_path, case):
    set_dir = tmp_path / "raw" / "mpi_inf_3dhp_test_set"
    write_test_sequence(set_dir, 1, [1, 1, 0, 1, 1], seed=3)
    store_path = tmp_path / "test.zarr"
    convert(mpi_inf_3dhp_test, set_dir.parent, store_path, image_size=16)
    damage, field = TEST_DAMAGE[case]
    damaged = damage(set_dir.parent)
    assert_refused_keeping_the_store(lambda: convert(mpi_inf_3dhp_test, set_dir.parent, store_path, image_size=16),
                                     store_path, damaged, field)
