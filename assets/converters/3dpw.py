"""Converter for the official 3DPW release (3D Poses in the Wild; docs/converters/3dpw.md).

Raw layout, as released (the registry loads this module by its file name, ``3dpw``)::

    sequenceFiles/{train,validation,test}/<sequence>.pkl    Python-2 pickles, one per sequence
    imageFiles/<sequence>/image_%05d.jpg                   0-based: image i is row i of the per-frame arrays

Each pickle is a dict with, per actor p (one or two per sequence), ``jointPositions[p]`` [N, 72] (24 SMPL
joints x xyz, world frame, METRES), ``campose_valid[p]`` [N] and ``poses2d[p]`` [N, 3, 18] (OpenPose
detections, all zero where fewer than 6 joints were found), and per frame ``cam_poses`` [N, 4, 4]
(world->camera, translation in METRES) and one ``cam_intrinsics`` 3x3 (no lens distortion).

One example per actor and image frame where the camera pose is valid for that actor and (option
``skip_undetected``, on by default, as PosePile and the official evaluation do) the actor has a detection.
pose3d is the actor's 24 joints in the frame camera's coordinates in mm. poses2d are detections in another
joint order (COCO-18), not labels: they only decide which frames are kept, and the stored 2D labels are the
projections of the 3D labels (done by ``convert``).

Splits stay as released (train, validation -> val, test). The paper uses 3DPW for evaluation only; which
splits a run trains or evaluates on is a config decision (PosePile's ``tdpw`` puts all three into its test
set, its evaluation has a ``--testset-only`` switch).

Subject: ``<sequence>/<actor index>``. The files carry no actor identity across sequences: only genders (two
values) and per-sequence SMPL betas, and nothing documents that equal betas mean the same person. So, as
PosePile, VIBE and the official evaluation key actors, a person is a sequence plus their index in its
per-actor lists (the same actor filmed in two sequences gets two subject codes).
"""

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.common import RawExample
from assets.converters.interface import ConverterOptions, OptionError
from assets.converters.raw_io import RawDataError, as_array
from assets.skeletons import get_skeleton

NAME = "3dpw"
VERSION = "1"
SKELETON = "smpl_24"
# PosePile (posepile/ds/tdpw/main.py) and the official evaluation (3dpw-eval check_valid_inds) use every
# valid image frame (30 fps); the stores are for evaluation, so nothing is subsampled by default
DEFAULT_FRAME_STEP = 1
CAMERAS: tuple[str, ...] = ()  # one moving phone camera per sequence: no camera choice
DEFAULT_CAMERAS: tuple[str, ...] = ()
EXTRA_OPTIONS = {
    # skip an actor's frame when its poses2d detection is all zeros (fewer than 6 joints detected):
    # PosePile's and the 3DPW evaluation protocol's selection
    "skip_undetected": True,
    # top-level modules (e.g. ["chumpy"]) whose objects load as inert stand-ins instead of stopping the
    # conversion: for data in fields this converter does not read. Nothing of theirs is imported or run.
    "inert_modules": [],
}

FOLDER_SPLITS = {"train": "train", "validation": "val", "test": "test"}
NUM_JOINTS = 24
CAMERA_NAME = "phone"
IMAGE_NAME = "image_{:05d}.jpg"
# the median SMPL bone is ~0.1-0.4 m: a median above this many "metres" means the file holds millimetres
MAX_MEDIAN_BONE_M = 10.0
# handheld footage of people: a median camera-to-pelvis distance above this means t was not in metres
MAX_CAMERA_DISTANCE_M = 100.0
_RIGID_TOLERANCE = 1e-3
_REQUIRED_KEYS = ("jointPositions", "cam_poses", "cam_intrinsics", "campose_valid")
# readme spellings that differ from the real files' keys
_README_NAMES = {"poses2d": "poses2D", "genders": "gender"}


# -- safe loading ---------------------------------------------------------------------------------------
# A pickle is a program: its GLOBAL/STACK_GLOBAL opcodes name any importable object (os.system, eval, ...)
# and REDUCE calls it, so ``pickle.load`` on a file from the internet can run arbitrary code. Every such
# name goes through ``Unpickler.find_class``. Ours hands back only what a 3DPW file needs -- numpy's array,
# dtype and scalar reconstruction and a few inert builtin containers -- and refuses everything else, so a
# malicious file stops with an error before anything it names is ever called. Plain dicts, lists, tuples,
# strings and numbers have opcodes of their own and never reach find_class.
def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as Python 3 writes bytes into protocol-2 pickles; limited to latin-1."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1",
                                                                                                      "iso88591"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors="strict")


def _allowed_globals() -> dict:
    multiarray = _numpy_multiarray()
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("builtins", "__builtin__"):  # Python 2 files name the builtins module __builtin__
        for name, obj in (("set", set), ("frozenset", frozenset), ("complex", complex), ("bytearray", bytearray)):
            allowed[(module, name)] = obj
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class Inert:
    """Stands in for an object of a module listed in the ``inert_modules`` option (e.g. chumpy arrays in a field
    this converter does not read): the module is never imported and nothing it names is ever called."""

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self):
        return f"<inert {self.qualified_name}>"


def _inert_reconstructor(cls, base, state=None):
    """``copy_reg._reconstructor`` (protocol 0/1 objects), for inert stand-ins only."""
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls()
    raise _RefusedGlobal("copy_reg", f"_reconstructor of {getattr(cls, '__name__', cls)!r}")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = None

    def __init__(self, handle, *, inert_modules=(), **kwargs):
        super().__init__(handle, **kwargs)
        self.inert_modules = tuple(inert_modules)
        self._inert_classes = {}

    def find_class(self, module, name):
        if _NumpyOnlyUnpickler._ALLOWED is None:
            _NumpyOnlyUnpickler._ALLOWED = _allowed_globals()
        key = (module, name)
        if key in self._ALLOWED:
            return self._ALLOWED[key]
        module, name = str(module), str(name)
        if self.inert_modules:
            if key in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
                return _inert_reconstructor
            if module.split(".")[0] in self.inert_modules:
                if key not in self._inert_classes:
                    self._inert_classes[key] = type("Inert", (Inert,), {"qualified_name": f"{module}.{name}"})
                return self._inert_classes[key]
        raise _RefusedGlobal(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


def load_sequence_pickle(path: Path, inert_modules=()) -> dict:
    """A 3DPW sequence file as a dict, loaded without running any code the file might name.

    Objects of ``inert_modules`` (top-level module names) load as ``Inert`` stand-ins instead of being refused.
    """
    if not path.is_file():
        raise RawDataError(path, None, "an existing sequence file", "no such file")
    try:
        with open(path, "rb") as handle:
            # Python-2 pickles: numpy payloads are byte strings, which only latin-1 maps 1:1 to str
            data = _NumpyOnlyUnpickler(handle, encoding="latin1", inert_modules=inert_modules).load()
    except _RefusedGlobal as exc:
        raise RawDataError(path, None, "a pickle of numpy arrays and plain containers only",
                           f"a reference to {exc.qualified_name} (refused; nothing was run; if it is data this "
                           f"converter does not read, option inert_modules can load that module's objects as "
                           f"inert stand-ins)") from None
    except RecursionError:
        raise RawDataError(path, None, "a readable sequence pickle", "too deeply nested data") from None
    except Exception as exc:  # truncated or not a pickle: the unpickler raises many kinds of errors
        raise RawDataError(path, None, "a readable Python-2 pickle (loaded with encoding='latin1')",
                           f"an unreadable file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise RawDataError(path, None, "a pickled dict of sequence fields", f"a pickled {type(data).__name__}")
    return data


# -- parsing --------------------------------------------------------------------------------------------
def _field(data: dict, key: str, path: Path):
    if key not in data:
        hint = ""
        readme_name = _README_NAMES.get(key)
        if readme_name and readme_name in data:
            hint = f" (the file has the readme's {readme_name!r}; released files use {key!r})"
        raise RawDataError(path, key, "the field to be present", f"it is missing{hint}")
    return data[key]


def _per_actor(data: dict, key: str, path: Path, num_actors: int | None, entry_ndim: int | None = None) -> list:
    """A per-actor list field (a list of arrays, or one array stacked over actors)."""
    value = _field(data, key, path)
    if isinstance(value, np.ndarray) and value.dtype != object and entry_ndim is not None \
            and value.ndim != entry_ndim + 1:
        raise RawDataError(path, key, f"a list with one {entry_ndim}-D array per actor",
                           f"one array of shape {list(value.shape)}")
    if not isinstance(value, (list, tuple, np.ndarray)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        raise RawDataError(path, key, "a list with one entry per actor", type(value).__name__)
    value = list(value)
    if not value:
        raise RawDataError(path, key, "one entry per actor (1 or 2)", "an empty list")
    if num_actors is not None and len(value) != num_actors:
        raise RawDataError(path, key, f"one entry per actor ({num_actors}, as jointPositions)", f"{len(value)}")
    return value


def _frames_of(arr: np.ndarray, path: Path, field: str, num_frames: int) -> None:
    if arr.shape[0] != num_frames:
        raise RawDataError(path, field, f"{num_frames} frames (as many as cam_poses)", f"{arr.shape[0]} frames")


def _check_rigid(cam_poses: np.ndarray, frames: np.ndarray, path: Path) -> None:
    """Every used cam_poses entry is finite and a rigid transform [R t; 0 0 0 1] with a proper rotation."""
    for f in frames:
        m = cam_poses[f]
        problem = None
        if not np.all(np.isfinite(m)):
            problem = "non-finite values"
        elif not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
            problem = f"last row {m[3].tolist()}"
        else:
            rotation = m[:3, :3]
            if (np.abs(rotation @ rotation.T - np.eye(3)).max() > _RIGID_TOLERANCE
                    or np.linalg.det(rotation) < 0):
                problem = "a rotation part that is not a proper rotation"
        if problem:
            raise RawDataError(path, f"cam_poses[{f}]", "a 4x4 rigid world->camera transform", problem)


def _median_bone_length(joints: list[np.ndarray]) -> float:
    edges = np.array(get_skeleton(SKELETON).edges)
    lengths = [np.linalg.norm(j[:, edges[:, 0]] - j[:, edges[:, 1]], axis=-1).ravel() for j in joints if len(j)]
    return float(np.median(np.concatenate(lengths))) if lengths else float("nan")


def _parse_sequence(path: Path, data: dict, skip_undetected: bool) -> dict:
    """Validated arrays of one sequence file (world joints still in metres)."""
    for key in _REQUIRED_KEYS:
        _field(data, key, path)
    if skip_undetected:
        _field(data, "poses2d", path)

    cam_poses = as_array(_field(data, "cam_poses", path), path, "cam_poses", (-1, 4, 4))
    num_frames = len(cam_poses)
    if num_frames == 0:
        raise RawDataError(path, "cam_poses", "at least one frame", "0 frames")
    K = as_array(_field(data, "cam_intrinsics", path), path, "cam_intrinsics", (3, 3))
    try:
        Camera(K=K)
    except ValueError as exc:
        raise RawDataError(path, "cam_intrinsics", "a finite 3x3 K = [[fx,0,cx],[0,fy,cy],[0,0,1]]", str(exc)) from None

    joints = []
    for p, entry in enumerate(_per_actor(data, "jointPositions", path, None, 2)):
        field = f"jointPositions[{p}]"
        arr = as_array(entry, path, field, (-1, -1))
        if arr.shape[1] != NUM_JOINTS * 3:
            raise RawDataError(path, field, f"[N, {NUM_JOINTS * 3}] ({NUM_JOINTS} SMPL joints x xyz per frame)",
                               f"{list(arr.shape)} ({arr.shape[1] / 3:g} joints)")
        _frames_of(arr, path, field, num_frames)
        joints.append(arr.reshape(num_frames, NUM_JOINTS, 3))
    num_actors = len(joints)

    valid = []
    for p, entry in enumerate(_per_actor(data, "campose_valid", path, num_actors, 1)):
        arr = as_array(entry, path, f"campose_valid[{p}]", (-1,))
        _frames_of(arr, path, f"campose_valid[{p}]", num_frames)
        valid.append(arr != 0)
    detected = [np.ones(num_frames, dtype=bool) for _ in range(num_actors)]
    if "poses2d" in data or skip_undetected:
        for p, entry in enumerate(_per_actor(data, "poses2d", path, num_actors, 3)):
            field = f"poses2d[{p}]"
            arr = np.asarray(as_array(entry, path, field, (-1, -1, -1)))
            if arr.shape[1:] != (3, 18):
                raise RawDataError(path, field, "[N, 3, 18] (rows x, y, confidence of 18 OpenPose joints)",
                                   str(list(arr.shape)))
            _frames_of(arr, path, field, num_frames)
            if skip_undetected:
                # no detection: stored as all zeros (3dpw-eval check_valid_inds, PosePile tdpw)
                detected[p] = ~np.all(np.nan_to_num(arr, nan=0.0) == 0, axis=(1, 2))
    if "genders" in data:
        _per_actor(data, "genders", path, num_actors)
    if "img_frame_ids" in data:  # not read; its length still has to agree
        _frames_of(as_array(data["img_frame_ids"], path, "img_frame_ids", (-1,)), path, "img_frame_ids", num_frames)

    used = [valid[p] & detected[p] for p in range(num_actors)]
    any_used = np.flatnonzero(np.any(used, axis=0))
    _check_rigid(cam_poses, any_used, path)
    used_joints = [joints[p][used[p]] for p in range(num_actors)]
    for p in range(num_actors):
        if not np.all(np.isfinite(used_joints[p])):
            raise RawDataError(path, f"jointPositions[{p}]", "finite numbers in frames with a valid camera pose",
                               "non-finite values")
    median_bone = _median_bone_length(used_joints)
    if median_bone > MAX_MEDIAN_BONE_M:
        raise RawDataError(path, "jointPositions", f"METRES (median bone <= {MAX_MEDIAN_BONE_M:g})",
                           f"a median bone length of {median_bone:.1f} (millimetres?)")
    distances = [np.linalg.norm(np.einsum("fij,fj->fi", cam_poses[used[p], :3, :3], used_joints[p][:, 0])
                                + cam_poses[used[p], :3, 3], axis=-1) for p in range(num_actors)]
    distances = np.concatenate(distances)
    if len(distances) and np.median(distances) > MAX_CAMERA_DISTANCE_M:
        raise RawDataError(path, "cam_poses", f"a translation in METRES (actors within {MAX_CAMERA_DISTANCE_M:g} m "
                                              f"of the camera)",
                           f"a median camera-to-pelvis distance of {np.median(distances):.0f} (millimetres?)")
    return {"K": K, "cam_poses": cam_poses, "joints": joints, "used": used, "num_frames": num_frames}


def _sequence_files(raw_root: Path) -> list[tuple[Path, str]]:
    folder = raw_root / "sequenceFiles"
    if not folder.is_dir():
        raise RawDataError(folder, None, "the folder sequenceFiles/{train,validation,test}", "no such folder")
    files, seen = [], {}
    for path in sorted(folder.glob("*/*.pkl")):
        split_folder = path.parent.name
        if split_folder not in FOLDER_SPLITS:
            raise RawDataError(path.parent, None, f"a split folder of {sorted(FOLDER_SPLITS)}", split_folder)
        if path.stem in seen:
            raise RawDataError(path, None, "each sequence in one split folder only", f"also in {seen[path.stem]}")
        seen[path.stem] = path
        files.append((path, FOLDER_SPLITS[split_folder]))
    if not files:
        raise RawDataError(folder, None, "sequence files <split>/<sequence>.pkl", "none")
    return files


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> Iterator[RawExample]:
    raw_root = Path(raw_root)
    options = options or ConverterOptions(frame_step=DEFAULT_FRAME_STEP)
    skip_undetected = options.extra.get("skip_undetected", EXTRA_OPTIONS["skip_undetected"])
    if not isinstance(skip_undetected, bool):
        raise OptionError("skip_undetected", f"must be true or false, got {skip_undetected!r}")
    inert_modules = options.extra.get("inert_modules") or []
    if isinstance(inert_modules, str):
        inert_modules = [inert_modules]
    if not isinstance(inert_modules, (list, tuple)) or not all(
            isinstance(m, str) and m.isidentifier() for m in inert_modules):
        raise OptionError("inert_modules", f"must be a list of top-level module names, got {inert_modules!r}")
    for path, split in _sequence_files(raw_root):
        data = load_sequence_pickle(path, inert_modules)
        sequence = path.stem
        named = data.get("sequence", sequence)
        if named != sequence:
            raise RawDataError(path, "sequence", f"the file's own name {sequence!r}", repr(named)[:80])
        seq = _parse_sequence(path, data, skip_undetected)
        image_folder = raw_root / "imageFiles" / sequence
        if any(u.any() for u in seq["used"]) and not image_folder.is_dir():
            raise RawDataError(image_folder, "imageFiles", f"the image folder of sequence {sequence!r}",
                               "no such folder")
        cameras = {}
        for p, joints_m in enumerate(seq["joints"]):
            for f in np.flatnonzero(seq["used"][p]):
                f = int(f)
                if not options.keeps_frame(f):
                    continue
                if f not in cameras:
                    extrinsics = seq["cam_poses"][f]
                    cameras[f] = Camera(K=seq["K"], R=extrinsics[:3, :3], t=extrinsics[:3, 3] * 1000.0,
                                        name=f"{sequence} frame {f}")
                camera = cameras[f]
                pose3d = camera.world_to_camera(joints_m[f] * 1000.0)
                if not np.any(pose3d[:, 2] > 0):
                    if skip_undetected:  # detected in the image, yet behind the camera: a wrong cam_poses entry
                        raise RawDataError(path, f"cam_poses[{f}]",
                                           f"a world->camera transform with actor {p} in front of the camera",
                                           "every joint behind it")
                    continue
                image_path = image_folder / IMAGE_NAME.format(f)
                if not image_path.is_file():
                    raise RawDataError(image_path, "imageFiles",
                                       f"the image of frame {f} of {sequence!r} (image_%05d.jpg, 0-based)",
                                       "no such file")
                yield RawExample(image_path=image_path, frame_camera=camera, split=split,
                                 subject=f"{sequence}/{p}", sequence=sequence, frame=f, camera=CAMERA_NAME,
                                 pose3d=pose3d, world_known=True)
