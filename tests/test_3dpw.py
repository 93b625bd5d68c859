"""The 3dpw converter on small raw trees in the real 3DPW layout (docs/converters/3dpw.md).

The trees are written as the release is: ``sequenceFiles/<split>/<sequence>.pkl`` pickled the way Python 2
pickled them (protocol 2, numpy payloads as byte strings, so only ``encoding='latin1'`` loads them) and
``imageFiles/<sequence>/image_%05d.jpg``. World joints are planted poses of the synthetic body model in the
SMPL-24 joint order with real bone lengths, stored in metres as 3DPW does.
"""

import inspect
import pickle
import shutil
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assets.converters import get_converter
from assets.converters.common import convert
from assets.converters.interface import OptionError, resolve_options
from assets.converters.raw_io import RawDataError
from assets.quality import run_store_checks
from assets.store import open_store
from assets.synthetic.motion import sample_all_formats
from assets.synthetic.rigs import look_at
from converter_checks import assert_refused_keeping_the_store

IMAGE_W, IMAGE_H = 72, 96  # portrait, as the phone footage often is (1080 x 1920 in the release)
K = np.array([[90.0, 0.0, 35.5], [0.0, 90.0, 47.5], [0.0, 0.0, 1.0]])
# name -> (split folder, actors, frames)
SEQUENCES = {
    "courtyard_pair_00": ("train", 2, 4),
    "outdoors_walk_01": ("validation", 1, 3),
    "downtown_stairs_00": ("test", 1, 3),
}
TWO = "courtyard_pair_00"
INVALID_CAMPOSE = (TWO, 0, 2)  # actor 0 of TWO has no valid camera pose in frame 2 (actor 1 has)
UNDETECTED = (TWO, 1, 1)  # actor 1 of TWO has an all-zero poses2d in frame 1
ACTOR_X_MM = (0.0, 900.0)
EXPECTED_COUNTS = {"train": 6, "val": 3, "test": 3}

threedpw = get_converter("3dpw")  # the module is named after the converter: assets/converters/3dpw.py


# -- writing pickles as Python 2 did -------------------------------------------------------------------
class _Global:
    """Stands for a global by name (pickling only writes the name; it is never called here)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # save_reduce wants a callable
        raise NotImplementedError


_PY2_RECONSTRUCT = _Global("numpy.core.multiarray", "_reconstruct")


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote it: str and numpy buffers as byte strings (BINSTRING), numpy
    arrays rebuilt by ``numpy.core.multiarray._reconstruct``. Python 3 loads such byte strings as ``str``
    decoded with the ``encoding`` argument, which fails for array bytes unless it is latin-1."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, handle):
        super().__init__(handle, protocol=2)

    def _byte_string(self, raw: bytes, obj) -> None:
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def save_bytes_py2(self, obj: bytes) -> None:
        self._byte_string(obj, obj)

    def save_str_py2(self, obj: str) -> None:
        self._byte_string(obj.encode("ascii"), obj)

    def save_global_py2(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[bytes] = save_bytes_py2
    dispatch[str] = save_str_py2
    dispatch[_Global] = save_global_py2

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            arr = np.ascontiguousarray(obj)
            return _PY2_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, arr.shape, arr.dtype, False, arr.tobytes())
        return NotImplemented


def write_py2_pickle(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        Py2Pickler(handle).dump(data)


def read_pickle(path: Path) -> dict:
    return threedpw.load_sequence_pickle(path)


# -- the planted raw tree ------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _poses() -> np.ndarray:
    """Plausible SMPL-24 poses, world mm, z up, pelvis over the origin."""
    poses = sample_all_formats(16, seed=5, formats=("smpl_24",))["smpl_24"]
    return poses - np.concatenate([poses[:, :1, :2], np.zeros((len(poses), 1, 1))], axis=-1)


def _cameras(num_frames: int, seq_index: int):
    cams = []
    for f in range(num_frames):
        centre = [450.0 - 400.0 + 250.0 * f + 150 * seq_index, -4800.0 + 120.0 * f, 1600.0]
        cams.append(look_at(K, np.zeros(5), centre, [450.0, 0.0, 900.0], roll=0.02 * f))
    return cams


def planted_world_mm(sequence: str) -> np.ndarray:
    """[actors, frames, 24, 3] world mm of a planted sequence."""
    seq_index = list(SEQUENCES).index(sequence)
    _, actors, frames = SEQUENCES[sequence]
    poses = _poses()
    out = np.empty((actors, frames, 24, 3))
    for p in range(actors):
        for f in range(frames):
            out[p, f] = poses[(5 * seq_index + 4 * p + f) % len(poses)] + [ACTOR_X_MM[p], 0.0, 0.0]
    return out


def planted_cameras(sequence: str):
    return _cameras(SEQUENCES[sequence][2], list(SEQUENCES).index(sequence))


def _sequence_dict(sequence: str) -> dict:
    _, actors, frames = SEQUENCES[sequence]
    world = planted_world_mm(sequence)
    cams = planted_cameras(sequence)
    cam_poses = np.stack([np.block([[c.R, c.t[:, None] / 1000.0], [np.zeros((1, 3)), np.ones((1, 1))]]) for c in cams])
    rng = np.random.default_rng(len(sequence))
    poses2d, valid = [], []
    for p in range(actors):
        # OpenPose COCO-18 detections: another joint order, noisy, rows x, y, confidence
        det = np.zeros((frames, 3, 18))
        det[:, 0] = rng.uniform(0, IMAGE_W, size=(frames, 18))
        det[:, 1] = rng.uniform(0, IMAGE_H, size=(frames, 18))
        det[:, 2] = rng.uniform(0.2, 0.9, size=(frames, 18))
        if (sequence, p) == UNDETECTED[:2]:
            det[UNDETECTED[2]] = 0.0
        poses2d.append(det)
        ok = np.ones(frames, dtype=bool)
        if (sequence, p) == INVALID_CAMPOSE[:2]:
            ok[INVALID_CAMPOSE[2]] = False
        valid.append(ok)
    return {
        "sequence": sequence,
        "genders": ["m", "f"][:actors],
        "betas": [rng.normal(size=10) for _ in range(actors)],
        "poses": [np.zeros((frames, 72)) for _ in range(actors)],
        "trans": [world[p, :, 0] / 1000.0 for p in range(actors)],
        "jointPositions": [world[p].reshape(frames, 72) / 1000.0 for p in range(actors)],
        "poses2d": poses2d,
        "cam_poses": cam_poses,
        "cam_intrinsics": K.copy(),
        "campose_valid": valid,
        "img_frame_ids": np.arange(frames) * 2,
    }


def write_raw_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for sequence, (folder, _, frames) in SEQUENCES.items():
        write_py2_pickle(root / "sequenceFiles" / folder / f"{sequence}.pkl", _sequence_dict(sequence))
        image_dir = root / "imageFiles" / sequence
        image_dir.mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            pixels = rng.integers(0, 255, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(image_dir / f"image_{f:05d}.jpg", quality=80)
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_raw_tree(tmp_path_factory.mktemp("threedpw") / "3dpw")


@pytest.fixture(scope="module")
def converted(pristine, tmp_path_factory):
    out = tmp_path_factory.mktemp("threedpw_store") / "3dpw.zarr"
    return convert(threedpw, pristine, out, image_size=32)


def _names(store, key: str) -> list[str]:
    return [store.attrs["codes"][key][c] for c in store.load(key)]


# -- conversion ----------------------------------------------------------------------------------------
def test_registered_with_the_declared_protocol():
    assert get_converter("3dpw") is threedpw
    assert (threedpw.NAME, threedpw.SKELETON, threedpw.CAMERAS) == ("3dpw", "smpl_24", ())
    options = resolve_options(threedpw, None)
    assert options.frame_step == threedpw.DEFAULT_FRAME_STEP == 1 and options.cameras == ()
    assert options.extra == {"skip_undetected": True, "inert_modules": []}
    with pytest.raises(OptionError, match="no camera choice"):
        resolve_options(threedpw, {"cameras": ["phone"]})
    assert inspect.isgenerator(threedpw.read_examples(Path("/nonexistent"), options))  # lazy


def test_the_planted_files_are_python2_pickles(pristine):
    """Pitfall: the release is Python-2 pickled; Python 3's default encoding cannot load it."""
    path = pristine / "sequenceFiles" / "train" / f"{TWO}.pkl"
    with open(path, "rb") as handle, pytest.raises(UnicodeDecodeError):
        pickle.load(handle)
    assert b"numpy.core.multiarray\n_reconstruct" in path.read_bytes()
    data = read_pickle(path)
    assert sorted(data) == sorted(_sequence_dict(TWO))
    np.testing.assert_array_equal(data["cam_poses"], _sequence_dict(TWO)["cam_poses"])
    assert data["campose_valid"][0].dtype == bool and data["genders"] == ["m", "f"]


def test_planted_joints_come_back_in_the_camera_frame(converted):
    store = open_store(converted.path)
    pose3d = store.load("pose3d").astype(np.float64)
    extrinsics = store.load("extrinsics").astype(np.float64)
    sequences, subjects, frames = _names(store, "sequence"), _names(store, "subject"), store.load("frame")
    worst = 0.0
    for i in range(len(store)):
        actor = int(subjects[i].rsplit("/", 1)[1])
        world = planted_world_mm(sequences[i])[actor, frames[i]]
        camera = planted_cameras(sequences[i])[frames[i]]
        # the store holds the crop camera's frame: rotate back to the world, then into the frame camera
        recovered_world = (pose3d[i] - extrinsics[i, :3, 3]) @ extrinsics[i, :3, :3]
        np.testing.assert_allclose(recovered_world, world, atol=0.1)
        error = np.abs(camera.world_to_camera(recovered_world) - camera.world_to_camera(world)).max()
        worst = max(worst, error)
        # and the crop camera differs from the frame camera by a rotation only (same optical centre)
        np.testing.assert_allclose(-extrinsics[i, :3, :3].T @ extrinsics[i, :3, 3], camera.center, atol=0.1)
    assert worst < 0.1


def test_splits_identities_and_selection_as_released(converted):
    store = open_store(converted.path)
    assert converted.counts == EXPECTED_COUNTS
    subjects = _names(store, "subject")
    assert set(subjects) == {f"{TWO}/0", f"{TWO}/1", "outdoors_walk_01/0", "downtown_stairs_00/0"}
    assert set(store.attrs["codes"]["sequence"]) == set(SEQUENCES)
    split_of = {0: "train", 1: "val", 2: "test"}
    splits = [split_of[int(s)] for s in store.load("split")]
    folder_split = {"train": "train", "validation": "val", "test": "test"}
    for sequence, split in zip(_names(store, "sequence"), splits):
        assert split == folder_split[SEQUENCES[sequence][0]]
    kept = {(s.rsplit("/", 1)[0], int(s.rsplit("/", 1)[1]), int(f)) for s, f in zip(subjects, store.load("frame"))}
    assert INVALID_CAMPOSE not in kept  # campose_valid is per person: the other actor keeps that frame
    assert (TWO, 1, INVALID_CAMPOSE[2]) in kept
    assert UNDETECTED not in kept and (TWO, 0, UNDETECTED[2]) in kept
    assert set(_names(store, "camera")) == {"phone"}


def test_2d_labels_are_projections_not_the_detections(converted):
    """Pitfall: poses2d are OpenPose detections (another order, [N, 3, 18]); labels are projected 3D."""
    store = open_store(converted.path)
    assert "confidence2d" not in store
    pose2d, pose3d = store.load("pose2d"), store.load("pose3d")
    intrinsics, distortion = store.load("intrinsics"), store.load("distortion")
    for i in range(len(store)):
        assert not np.any(distortion[i])
        projected = (pose3d[i][:, :2] / pose3d[i][:, 2:]) @ intrinsics[i][:2, :2].T + intrinsics[i][:2, 2]
        np.testing.assert_allclose(pose2d[i], projected, atol=1e-2)
    assert store.load("joint_valid").all()


def test_quality_checks_pass_on_the_clean_store(converted):
    outcomes = run_store_checks(converted.path)
    failed = {o.name: o.description for o in outcomes if not o.passed}
    assert not failed


def test_frame_step_keeps_every_nth_image_frame(pristine, tmp_path):
    result = convert(threedpw, pristine, tmp_path / "3dpw.zarr", image_size=32, options={"frame_step": 2})
    frames = open_store(result.path).load("frame")
    assert set(frames.tolist()) == {0, 2}
    assert result.num_examples == 7  # TWO: actor 0 frame 0 (frame 2 invalid), actor 1 frames 0, 2; others 0, 2


def test_undetected_frames_are_kept_on_request(pristine, tmp_path):
    result = convert(threedpw, pristine, tmp_path / "3dpw.zarr", image_size=32,
                     options={"skip_undetected": False})
    assert result.num_examples == sum(EXPECTED_COUNTS.values()) + 1


def test_python3_protocol2_pickles_load_too(tmp_path):
    """A file re-saved by Python 3 names numpy._core and _codecs.encode: still only data."""
    data = _sequence_dict(TWO)
    path = tmp_path / "resaved.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    loaded = threedpw.load_sequence_pickle(path)
    np.testing.assert_array_equal(loaded["jointPositions"][1], data["jointPositions"][1])


# -- malicious pickles ---------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("where", ["whole file", "inside jointPositions"])
def test_a_malicious_pickle_is_refused_without_running(raw, tmp_path, where):
    # the payload is live: an unrestricted load runs it
    probe = tmp_path / "probe_marker"
    pickle.loads(pickle.dumps(_Payload(probe), protocol=2))
    assert probe.exists()

    marker = tmp_path / "marker"
    path = raw / "sequenceFiles" / "test" / "downtown_stairs_00.pkl"
    if where == "whole file":
        content = _Payload(marker)
    else:
        content = read_pickle(path)
        content["jointPositions"] = [_Payload(marker)]
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(RawDataError) as info:
        convert(threedpw, raw, tmp_path / "3dpw.zarr", image_size=32)
    assert info.value.path == path and "exec" in str(info.value) and "refused" in str(info.value)
    assert not marker.exists()
    assert not (tmp_path / "3dpw.zarr").exists()


class _ChumpyLike:
    """Pickles as an object of a module the converter must not import (as SMPL tools' chumpy arrays)."""


def test_objects_of_other_modules_are_refused_unless_declared_inert(raw, tmp_path):
    path = _seq_path(raw)
    data = read_pickle(path)
    data["v_template_clothed"] = [_ChumpyLike(), _ChumpyLike()]

    class Pickler(Py2Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, _ChumpyLike):
                return _Global("chumpy.ch", "Ch"), (), {"x": np.zeros((3, 3))}
            return super().reducer_override(obj)

    with open(path, "wb") as handle:
        Pickler(handle).dump(data)
    with pytest.raises(RawDataError, match=r"chumpy\.ch\.Ch .*inert_modules") as info:
        convert(threedpw, raw, tmp_path / "refused.zarr", image_size=16)
    assert info.value.path == path
    loaded = threedpw.load_sequence_pickle(path, inert_modules=["chumpy"])
    assert all(isinstance(v, threedpw.Inert) for v in loaded["v_template_clothed"])
    result = convert(threedpw, raw, tmp_path / "inert.zarr", image_size=16, options={"inert_modules": ["chumpy"]})
    assert result.counts == EXPECTED_COUNTS
    # an inert stand-in where numbers are read is still bad input
    data["cam_intrinsics"] = _ChumpyLike()
    with open(path, "wb") as handle:
        Pickler(handle).dump(data)
    with pytest.raises(RawDataError, match="cam_intrinsics"):
        convert(threedpw, raw, tmp_path / "inert.zarr", image_size=16, options={"inert_modules": ["chumpy"]})
    with pytest.raises(OptionError, match="inert_modules"):
        convert(threedpw, raw, tmp_path / "x.zarr", image_size=16, options={"inert_modules": ["os.path"]})


# -- bad input -----------------------------------------------------------------------------------------
def _seq_path(root: Path, sequence: str = TWO) -> Path:
    return root / "sequenceFiles" / SEQUENCES[sequence][0] / f"{sequence}.pkl"


def _edit(root: Path, change, sequence: str = TWO) -> Path:
    path = _seq_path(root, sequence)
    data = read_pickle(path)
    change(data)
    write_py2_pickle(path, data)
    return path


def _drop(key):
    def damage(root):
        return _edit(root, lambda d: d.pop(key)), key
    return damage


def _bad_cases():
    def missing_sequence_files(root):
        shutil.rmtree(root / "sequenceFiles")
        return root / "sequenceFiles", None

    def truncated_pickle(root):
        path = _seq_path(root)
        path.write_bytes(path.read_bytes()[:700])
        return path, None

    def not_a_pickle(root):
        path = _seq_path(root)
        path.write_bytes(b"<html>404 Not Found</html>\n")
        return path, None

    def pickle_of_a_list(root):
        path = _seq_path(root)
        write_py2_pickle(path, [np.zeros(3)])
        return path, None

    def wrong_joint_count(root):
        return _edit(root, lambda d: d["jointPositions"].__setitem__(0, d["jointPositions"][0][:, :69])), \
            "jointPositions[0]"

    def millimetres_for_metres(root):
        def change(d):
            d["jointPositions"] = [j * 1000 for j in d["jointPositions"]]
            d["cam_poses"][:, :3, 3] *= 1000
        return _edit(root, change), "jointPositions"

    def camera_translation_in_mm(root):
        return _edit(root, lambda d: d["cam_poses"][:, :3, 3].__imul__(1000)), "cam_poses"

    def fewer_joint_frames(root):
        return _edit(root, lambda d: d["jointPositions"].__setitem__(1, d["jointPositions"][1][:-1])), \
            "jointPositions[1]"

    def fewer_campose_valid_frames(root):
        return _edit(root, lambda d: d["campose_valid"].__setitem__(0, d["campose_valid"][0][:-1])), \
            "campose_valid[0]"

    def one_campose_valid_for_two_actors(root):
        return _edit(root, lambda d: d.__setitem__("campose_valid", d["campose_valid"][:1])), "campose_valid"

    def poses2d_transposed(root):
        return _edit(root, lambda d: d.__setitem__("poses2d", [a.transpose(0, 2, 1) for a in d["poses2d"]])), \
            "poses2d[0]"

    def readme_key_names(root):
        def change(d):
            d["poses2D"] = d.pop("poses2d")
            d["gender"] = d.pop("genders")
        return _edit(root, change), "poses2d"

    def bad_intrinsics(root):
        return _edit(root, lambda d: d.__setitem__("cam_intrinsics", d["cam_intrinsics"][:2])), "cam_intrinsics"

    def scaled_camera_rotation(root):
        return _edit(root, lambda d: d["cam_poses"][0, :3, :3].__imul__(1.5)), "cam_poses[0]"

    def camera_facing_away(root):
        flip = np.diag([-1.0, 1.0, -1.0])  # 180 degrees about the camera's y axis
        def change(d):
            d["cam_poses"][1, :3, :3] = flip @ d["cam_poses"][1, :3, :3]
            d["cam_poses"][1, :3, 3] = flip @ d["cam_poses"][1, :3, 3]
        return _edit(root, change), "cam_poses[1]"

    def fewer_img_frame_ids(root):
        return _edit(root, lambda d: d.__setitem__("img_frame_ids", d["img_frame_ids"][:-1])), "img_frame_ids"

    def renamed_sequence(root):
        return _edit(root, lambda d: d.__setitem__("sequence", "courtyard_other_00")), "sequence"

    def missing_image(root):
        path = root / "imageFiles" / TWO / "image_00001.jpg"
        path.unlink()
        return path, "imageFiles"

    def missing_image_folder(root):
        path = root / "imageFiles" / "downtown_stairs_00"
        shutil.rmtree(path)
        return path, "imageFiles"

    def truncated_image(root):
        path = root / "imageFiles" / "outdoors_walk_01" / "image_00002.jpg"
        path.write_bytes(path.read_bytes()[:100])
        return path, None

    def unknown_split_folder(root):
        folder = root / "sequenceFiles" / "extra"
        folder.mkdir()
        shutil.copy(_seq_path(root), folder / "courtyard_copy_00.pkl")
        return folder, None

    found = dict(locals())
    cases = {name: fn for name, fn in found.items() if callable(fn)}
    for key in ("jointPositions", "cam_poses", "cam_intrinsics", "campose_valid", "poses2d"):
        cases[f"missing key {key}"] = _drop(key)
    return cases


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_bad_input_names_file_and_field_and_keeps_the_published_store(raw, tmp_path, case):
    store_path = tmp_path / "3dpw.zarr"
    convert(threedpw, raw, store_path, image_size=16)
    damaged, field = _bad_cases()[case](raw)
    error = assert_refused_keeping_the_store(lambda: convert(threedpw, raw, store_path, image_size=16), store_path,
                                             damaged, repr(field) if field else None)
    assert error.path == damaged and error.field == field
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("3dpw")) == ["3dpw.zarr"]
