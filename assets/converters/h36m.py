"""Converter for Human3.6M exactly as released (docs/converters/h36m.md).

Reads, per subject ``S<n>/``:

* ``MyPoseFeatures/D3_Positions_mono/<Seq>.<cam>.cdf``: the 32 joints in the camera's frame, mm (NASA
  CDF, zVariable ``Pose``, one record of shape [N, 96], read as (1, N, 96));
* ``MyPoseFeatures/D2_Positions/<Seq>.<cam>.cdf`` (optional folder): the same joints in frame pixels,
  [N, 64]; stored as independent 2D labels, so the store's reprojection check compares two labels;
* frames from ``Images/<Seq>.<cam>/frame_%06d.jpg`` (PosePile's extraction; 0-based = CDF row) where
  present, otherwise decoded from ``Videos/<Seq>.<cam>.mp4`` (``frame_index`` = CDF row);
* cameras from ``Release-v1.2/metadata.xml`` (or ``metadata.xml`` at the raw root): the ``<w0>`` text of
  300 numbers. ``w0[:264]`` = [camera][subject 1..11][a, b, c, Tx, Ty, Tz], world->camera
  ``R = Rx(a) Ry(b) Rz(c)``, ``T`` = the camera centre in world mm, so ``t = -R T``; ``w0[264:]`` =
  [camera][f(2), c(2), k(3), p(2)].

Alternatively (``source: videopose3d``, or automatically when no subject has ``D3_Positions_mono``)
VideoPose3D's ``data_3d_h36m.npz`` (world metres, 32 joints, pickled dict) at the raw root, with
``data_2d_h36m_gt.npz`` (17 joints, pixels) when present; cameras still come from metadata.xml and
frames from ``S<n>/Images`` or ``S<n>/Videos`` as above.

Skeleton: ``h36m_25``, PosePile's 25-joint H36M format (``make_h36m_alljoints`` in
``posepile/ds/h36m/main.py``), which the paper's merged training set (and so its model) uses; it keeps
the feet, toes, thumbs and finger ends that ``h36m_17`` drops. File joints, in ``h36m_25`` order:
``[1..10, 12, 13, 14, 15, 17, 18, 19, 21, 22, 25, 26, 27, 29, 30, 0]``.

Lens distortion: H36M's model is not OpenCV's; the cameras use PosePile's OpenCV approximation
``dist = [k1, k2, p1, p2, k3]`` with p in w0 order. The two differ by ``tan * (x, y)`` in normalised
coordinates (``tan = p1 y + p2 x``): at most 0.35 px in the central half of a 1000 px frame and up to
1.4 px in its corners (camera 55011271).

Splits (PosePile, the paper): train S1, S5, S6, S7, S8; test S9, S11; no validation subject. The tags
``<train_subjects>`` etc. in metadata.xml are a different protocol and are ignored. Other subjects
(S2, S3, S4, S10: the withheld test set, no poses released) are skipped.

Sampling: PosePile takes every 5th frame of the training subjects and every 64th of the test subjects;
the options ``train_frame_step`` (5) and ``test_frame_step`` (64) do this here, so ``DEFAULT_FRAME_STEP``
is 1. ``convert()``'s generic ``frame_step`` filter applies to every example on top (a frame is kept
when it is a multiple of both steps: ``frame_step: 5`` makes the test sampling every 320th frame).

S9 ``SittingDown 1``, ``Waiting 1`` and ``Greeting``: the released world poses are shifted by 200 mm
along world x against the images; PosePile subtracts 200 mm from world x (``correct_world_coords``).
D3_Positions_mono is D3_Positions transformed with the same cameras (the dataset README), so it carries
the same shift, which in a camera's frame is ``200 * R[:, 0]``; ``correct_s9`` (default true)
subtracts that from the camera-frame joints and moves the 2D labels by the shift's projection.

Identifiers: subject ``S1``; sequence ``S1/Directions 1`` (subject / file stem; the store's code tables
are per dataset, and a sequence is one calibration and one take, so the stem alone would merge
different subjects' takes); camera the camera id; frame = CDF row.
"""

import logging
import re
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.common import RawExample
from assets.converters.interface import ConverterOptions, OptionError
from assets.converters.raw_io import RawDataError, require_file
from assets.converters.video import ExtractedFramesOrVideo

log = logging.getLogger(__name__)

NAME = "h36m"
VERSION = "1"
SKELETON = "h36m_25"
DEFAULT_FRAME_STEP = 1  # the per-split steps below do PosePile's sampling; see the module docstring
CAMERAS = ("54138969", "55011271", "58860488", "60457274")  # metadata.xml dbcameras/index2id order
DEFAULT_CAMERAS = CAMERAS
EXTRA_OPTIONS = {
    "train_frame_step": 5,  # PosePile: every 5th frame of the training subjects
    "test_frame_step": 64,  # PosePile and the usual protocol: every 64th frame of S9 and S11
    "correct_s9": True,  # undo the 200 mm world-x shift of three S9 sequences, as PosePile does
    "source": "auto",  # "cdf" (the release's CDF files), "videopose3d" (data_3d_h36m.npz) or "auto"
    "exclude_sequences": [],  # "S11/Directions" (every camera) or "S11/Directions.54138969" (one camera)
}
SOURCES = ("auto", "cdf", "videopose3d")

SUBJECT_SPLITS = {"S1": "train", "S5": "train", "S6": "train", "S7": "train", "S8": "train",
                  "S9": "test", "S11": "test"}
NUM_FILE_JOINTS = 32
# h36m_25 (PosePile's make_h36m_alljoints) from the 32 joints of the files
FILE_JOINTS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 17, 18, 19, 21, 22, 25, 26, 27, 29, 30, 0)
# VideoPose3D's 17 joints: the 32 without its static ones, in file order
VIDEOPOSE3D_JOINTS = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
# PosePile's correct_world_coords: these S9 takes (file stems) are shifted by +200 mm along world x
S9_SHIFTED = frozenset({"SittingDown 1", "Waiting 1", "Greeting"})
S9_SHIFT_WORLD_MM = np.array([200.0, 0.0, 0.0])
# VideoPose3D's prepare_data_h36m.py renames S1's stems
VIDEOPOSE3D_RENAMES = (("Photo", "TakingPhoto"), ("WalkDog", "WalkingDog"))
METADATA_PATHS = ("Release-v1.2/metadata.xml", "metadata.xml")
NUM_W0 = 300
# a body's median bone (h36m_25 edges) is ~250 mm; below this the numbers are metres
MIN_MEDIAN_BONE_MM = 10.0
_FILE_NAME = re.compile(r"^(?P<stem>.+)\.(?P<camera>[^.]+)$")


# -- cameras -----------------------------------------------------------------------------------

def metadata_path(raw_root: Path) -> Path:
    for relative in METADATA_PATHS:
        if (raw_root / relative).is_file():
            return raw_root / relative
    raise RawDataError(raw_root / METADATA_PATHS[0], None,
                       "the camera file of the H36M code-v1.2 bundle (Release-v1.2/metadata.xml, or metadata.xml "
                       "at the raw root)", "neither exists")


def rotation_xyz(a: float, b: float, c: float) -> np.ndarray:
    """World->camera rotation of metadata.xml: Rx(a) @ Ry(b) @ Rz(c)."""
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rx @ ry @ rz


def read_w0(path: Path) -> np.ndarray:
    import xml.etree.ElementTree as ElementTree

    require_file(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, UnicodeDecodeError) as exc:
        raise RawDataError(path, None, "valid XML", f"a parse error ({exc})") from None
    element = root if root.tag == "w0" else root.find(".//w0")
    if element is None:
        raise RawDataError(path, "w0", "the camera parameter element <w0>", "it is missing")
    text = (element.text or "").strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise RawDataError(path, "w0", f"[ {NUM_W0} numbers ]", repr(text[:40]))
    try:
        numbers = np.array([float(x) for x in text[1:-1].split()])
    except ValueError as exc:
        raise RawDataError(path, "w0", f"{NUM_W0} numbers", f"a non-number ({exc})") from None
    if numbers.shape != (NUM_W0,):
        raise RawDataError(path, "w0", f"{NUM_W0} numbers (4 cameras x 11 subjects x 6 extrinsics + 4 x 9 "
                                       f"intrinsics)", f"{len(numbers)} numbers")
    if not np.all(np.isfinite(numbers)):
        raise RawDataError(path, "w0", "finite numbers", f"{int(np.sum(~np.isfinite(numbers)))} non-finite")
    index2id = root.find(".//dbcameras/index2id")
    if index2id is not None:
        ids = tuple((item.text or "").strip() for item in index2id)
        if ids != CAMERAS:
            raise RawDataError(path, "dbcameras/index2id", f"the cameras {list(CAMERAS)}", f"{list(ids)}")
    return numbers


def read_cameras(path: Path) -> dict[tuple[int, str], Camera]:
    """(subject number 1..11, camera id) -> Camera, world->camera in mm, OpenCV-approximated distortion."""
    w0 = read_w0(path)
    extrinsics = w0[:264].reshape(4, 11, 6)
    intrinsics = w0[264:].reshape(4, 9)
    cameras = {}
    for c, camera_id in enumerate(CAMERAS):
        f, center, k, p = np.split(intrinsics[c], (2, 4, 7))
        K = [[f[0], 0.0, center[0]], [0.0, f[1], center[1]], [0.0, 0.0, 1.0]]
        dist = [k[0], k[1], p[0], p[1], k[2]]  # p in w0 order (PosePile's make_h36m_camera)
        for s in range(11):
            a, b, g, *centre = extrinsics[c, s]
            R = rotation_xyz(a, b, g)
            try:
                cameras[s + 1, camera_id] = Camera(K=K, dist=dist, R=R, t=-R @ np.array(centre),
                                                   name=f"S{s + 1}/{camera_id}")
            except ValueError as exc:
                raise RawDataError(path, f"w0 (camera {camera_id}, subject S{s + 1})", "a valid camera",
                                   str(exc)) from None
    return cameras


# -- pose files --------------------------------------------------------------------------------

def read_pose_cdf(path: Path, dims: int) -> np.ndarray:
    """The ``Pose`` zVariable of an H36M CDF as [N, 32, dims] float64."""
    import cdflib  # optional, pure-Python: only this converter needs it

    if not path.is_file():
        raise RawDataError(path, None, "an existing CDF file", "no such file")
    try:
        cdf = cdflib.CDF(str(path))
        info = cdf.cdf_info()
        names = [*info.zVariables, *info.rVariables]
    except Exception as exc:  # cdflib raises anything from OSError to ValueError on a damaged file
        raise RawDataError(path, None, "a readable NASA CDF file", f"a read error ({exc})") from None
    try:
        if "Pose" not in names:
            raise RawDataError(path, "Pose", "the variable to be present", f"only {names}")
        try:
            data = np.asarray(cdf.varget("Pose"))
        except Exception as exc:
            raise RawDataError(path, "Pose", "readable values", f"a read error ({exc})") from None
    finally:
        del cdf  # cdflib keeps the file open while the object lives
    values = NUM_FILE_JOINTS * dims
    if data.ndim == 3 and data.shape[0] == 1:  # the release's layout: one record of [N, values]
        data = data[0]
    if data.ndim != 2 or data.shape[0] == 0:
        raise RawDataError(path, "Pose", f"one record of [frames, {values}] (read as (1, N, {values}))",
                           f"shape {data.shape}")
    if data.shape[1] != values:
        raise RawDataError(path, "Pose", f"{values} values per frame ({NUM_FILE_JOINTS} joints x {dims})",
                           f"{data.shape[1]} ({data.shape[1] / dims:g} joints)")
    if not np.issubdtype(data.dtype, np.number):
        raise RawDataError(path, "Pose", "numbers", str(data.dtype))
    if not np.all(np.isfinite(data)):
        raise RawDataError(path, "Pose", "finite numbers", f"{int(np.sum(~np.isfinite(data)))} non-finite values")
    return data.astype(np.float64).reshape(len(data), NUM_FILE_JOINTS, dims)


def median_bone_length(joints: np.ndarray) -> float:
    """Median h36m_25 bone length of [N, 25, 3] joints."""
    from assets.skeletons import get_skeleton

    edges = np.array(get_skeleton(SKELETON).edges)
    return float(np.median(np.linalg.norm(joints[:, edges[:, 0]] - joints[:, edges[:, 1]], axis=-1)))


def check_millimetres(joints: np.ndarray, path: Path, field: str) -> None:
    median = median_bone_length(joints)
    if median < MIN_MEDIAN_BONE_MM:
        raise RawDataError(path, field, "millimetres", f"metres (median bone length {median:.3g})")


# -- frames ------------------------------------------------------------------------------------

def _frame_folder_and_video(subject_dir: Path, stem: str, camera: str) -> tuple[Path, Path]:
    """Where the frames of one ``<Seq>.<cam>`` come from: extracted jpgs where present, else the video."""
    return subject_dir / "Images" / f"{stem}.{camera}", subject_dir / "Videos" / f"{stem}.{camera}.mp4"


def _frame_source(subject_dir: Path, stem: str, camera: str) -> ExtractedFramesOrVideo:
    images, video = _frame_folder_and_video(subject_dir, stem, camera)
    return ExtractedFramesOrVideo(images, video, "frame_{:06d}.jpg",
                                  f"the take's video (or its frames extracted to {images}/frame_%06d.jpg)")


def _media_takes(subject_dir: Path) -> set[tuple[str, str]]:
    """(stem, camera) of every video and extracted-frame folder of a subject."""
    takes = set()
    for path in [*(subject_dir / "Videos").glob("*.mp4"), *(subject_dir / "Images").glob("*")]:
        name = path.stem if path.suffix == ".mp4" else path.name
        match = _FILE_NAME.match(name)
        if (path.suffix == ".mp4" or path.is_dir()) and match and match["camera"] in CAMERAS:
            takes.add((match["stem"], match["camera"]))
    return takes


# -- options -----------------------------------------------------------------------------------

def _settings(options: ConverterOptions | None) -> dict:
    extra = {**EXTRA_OPTIONS, **(options.extra if options is not None else {})}
    for key in ("train_frame_step", "test_frame_step"):
        value = extra[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(key, f"must be a whole number >= 1, got {value!r}")
    if not isinstance(extra["correct_s9"], bool):
        raise OptionError("correct_s9", f"must be true or false, got {extra['correct_s9']!r}")
    if extra["source"] not in SOURCES:
        raise OptionError("source", f"must be one of {list(SOURCES)}, got {extra['source']!r}")
    excluded = extra["exclude_sequences"]
    if isinstance(excluded, str):
        excluded = [excluded]
    if not isinstance(excluded, (list, tuple)) or not all(isinstance(e, str) and "/" in e for e in excluded):
        raise OptionError("exclude_sequences", f"must be a list like ['S11/Directions', "
                                               f"'S11/Directions.54138969'], got {excluded!r}")
    extra["exclude_sequences"] = frozenset(excluded)
    return extra


def _excluded(settings: dict, subject: str, stem: str, camera: str) -> bool:
    return f"{subject}/{stem}" in settings["exclude_sequences"] or \
        f"{subject}/{stem}.{camera}" in settings["exclude_sequences"]


def _frames(num_frames: int, split: str, settings: dict, options: ConverterOptions) -> range | list:
    step = settings["train_frame_step" if split == "train" else "test_frame_step"]
    return [f for f in range(0, num_frames, step) if options.keeps_frame(f)]


def _subjects(raw_root: Path) -> list[tuple[str, Path]]:
    found = sorted((p for p in raw_root.glob("S*") if p.is_dir() and re.fullmatch(r"S\d+", p.name)),
                   key=lambda p: int(p.name[1:]))
    known = [(p.name, p) for p in found if p.name in SUBJECT_SPLITS]
    skipped = [p.name for p in found if p.name not in SUBJECT_SPLITS]
    if skipped:
        log.info("h36m: skipping %s (no poses released)", ", ".join(skipped))
    return known


def _s9_shift(subject: str, stem: str, settings: dict) -> bool:
    return settings["correct_s9"] and subject == "S9" and stem in S9_SHIFTED


def _shift_labels(pose3d: np.ndarray, pose2d: np.ndarray | None, camera: Camera):
    """Undo the S9 world-x shift in camera-frame joints [N,J,3] and their pixel labels [N,J,2]."""
    shift = camera.R @ S9_SHIFT_WORLD_MM  # the world shift in this camera's frame
    corrected = pose3d - shift
    if pose2d is not None:
        pose2d = pose2d + camera.camera_to_image(corrected) - camera.camera_to_image(pose3d)
    return corrected, pose2d


# -- reading -----------------------------------------------------------------------------------

def read_examples(raw_root: Path, options: ConverterOptions | None = None):
    raw_root = Path(raw_root)
    settings = _settings(options)
    options = options or ConverterOptions(cameras=DEFAULT_CAMERAS)
    cameras = read_cameras(metadata_path(raw_root))
    subjects = _subjects(raw_root)
    source = settings["source"]
    if source == "auto":
        has_cdf = any((d / "MyPoseFeatures" / "D3_Positions_mono").is_dir() for _, d in subjects)
        source = "cdf" if has_cdf or not (raw_root / "data_3d_h36m.npz").is_file() else "videopose3d"
    if source == "cdf":
        if not subjects:
            raise RawDataError(raw_root, None, f"subject folders {', '.join(SUBJECT_SPLITS)} (S<n>/MyPoseFeatures/"
                                               f"D3_Positions_mono/...)", "none")
        yield from _read_cdf_release(raw_root, subjects, cameras, settings, options)
    else:
        yield from _read_videopose3d(raw_root, cameras, settings, options)


def _read_cdf_release(raw_root, subjects, cameras, settings, options):
    chosen = options.cameras or CAMERAS
    for subject, subject_dir in subjects:
        split = SUBJECT_SPLITS[subject]
        mono_dir = subject_dir / "MyPoseFeatures" / "D3_Positions_mono"
        d2_dir = subject_dir / "MyPoseFeatures" / "D2_Positions"
        if not mono_dir.is_dir():
            raise RawDataError(mono_dir, None, "the folder of camera-frame poses (archive Poses_D3_Positions_mono)",
                               "no such folder")
        takes = {}
        for path in sorted(mono_dir.glob("*.cdf")):
            match = _FILE_NAME.match(path.name[:-len(".cdf")])
            if not match or match["camera"] not in CAMERAS:
                raise RawDataError(path, None, f"a file name <Sequence>.<camera>.cdf with a camera of {list(CAMERAS)}",
                                   repr(path.name))
            if not match["stem"].startswith("_"):  # "_ALL 1": the whole recording, not an action take
                takes[match["stem"], match["camera"]] = path
        for stem, camera in sorted(_media_takes(subject_dir) - set(takes)):
            if not stem.startswith("_") and camera in chosen and not _excluded(settings, subject, stem, camera):
                raise RawDataError(mono_dir / f"{stem}.{camera}.cdf", None,
                                   "an existing file (the poses of the take's video)", "no such file")
        if not takes:
            raise RawDataError(mono_dir, None, "<Sequence>.<camera>.cdf files", "none")
        if not d2_dir.is_dir():
            log.info("h36m: %s has no D2_Positions folder; 2D labels come from the 3D ones", subject)
        for (stem, camera), mono_path in sorted(takes.items(), key=lambda kv: (kv[0][0], CAMERAS.index(kv[0][1]))):
            if camera not in chosen or _excluded(settings, subject, stem, camera):
                continue
            frame_camera = cameras[int(subject[1:]), camera]
            joints = read_pose_cdf(mono_path, 3)[:, FILE_JOINTS]
            check_millimetres(joints, mono_path, "Pose")
            pixels = None
            if d2_dir.is_dir():
                d2_path = d2_dir / mono_path.name
                pixels = read_pose_cdf(d2_path, 2)[:, FILE_JOINTS]
                if len(pixels) != len(joints):
                    raise RawDataError(d2_path, "Pose", f"{len(joints)} frames, as {mono_path}", f"{len(pixels)}")
            if _s9_shift(subject, stem, settings):
                joints, pixels = _shift_labels(joints, pixels, frame_camera)
            yield from _take_examples(subject_dir, subject, split, stem, camera, frame_camera, joints, pixels,
                                      settings, options)


def _take_examples(subject_dir, subject, split, stem, camera, frame_camera, joints, pixels, settings, options):
    frames = _frames(len(joints), split, settings, options)
    if not frames:
        return
    source = _frame_source(subject_dir, stem, camera)
    for f in frames:
        image_path, frame_index = source.locate(f)
        yield RawExample(
            image_path=image_path, frame_index=frame_index, frame_camera=frame_camera, split=split,
            subject=subject, sequence=f"{subject}/{stem}", frame=f, camera=camera, pose3d=joints[f],
            pose2d=None if pixels is None else pixels[f], world_known=True)


# -- VideoPose3D's npz files -------------------------------------------------------------------

def _load_pickled(path: Path, key: str) -> dict:
    """A dict pickled into an npz (VideoPose3D's format; loading it runs the pickle: the user's own file)."""
    import zipfile

    require_file(path)
    try:
        with np.load(path, allow_pickle=True) as data:
            if key not in data.files:
                raise RawDataError(path, key, "the array to be present", f"only {sorted(data.files)}")
            value = data[key]
    except RawDataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, ImportError, AttributeError) as exc:
        raise RawDataError(path, None, "a readable .npz archive", f"an unreadable file ({exc})") from None
    if value.dtype != object or value.shape != () or not isinstance(value.item(), dict):
        raise RawDataError(path, key, "a pickled dict {subject: {action: ...}}", f"{value.dtype} {value.shape}")
    return value.item()


def _media_stem(subject_dir: Path, action: str, camera: str) -> str | None:
    """The file stem of a VideoPose3D action key (it renamed S1's TakingPhoto/WalkingDog)."""
    candidates = [action]
    for new, old in VIDEOPOSE3D_RENAMES:
        if action.startswith(new):
            candidates.append(old + action[len(new):])
    for stem in candidates:
        if ExtractedFramesOrVideo.available(*_frame_folder_and_video(subject_dir, stem, camera)):
            return stem
    return None


def _read_videopose3d(raw_root, cameras, settings, options):
    path3d, path2d = raw_root / "data_3d_h36m.npz", raw_root / "data_2d_h36m_gt.npz"
    positions = _load_pickled(path3d, "positions_3d")
    positions2d = _load_pickled(path2d, "positions_2d") if path2d.is_file() else None
    chosen = options.cameras or CAMERAS
    subjects = sorted((s for s in positions if s in SUBJECT_SPLITS), key=lambda s: int(s[1:]))
    if not subjects:
        raise RawDataError(path3d, "positions_3d", f"subjects of {list(SUBJECT_SPLITS)}", f"{sorted(positions)}")
    for subject in subjects:
        split = SUBJECT_SPLITS[subject]
        subject_dir = raw_root / subject
        actions = positions[subject]
        if not isinstance(actions, dict):
            raise RawDataError(path3d, f"positions_3d[{subject}]", "a dict {action: [N, 32, 3]}",
                               type(actions).__name__)
        for action in sorted(actions):
            field = f"positions_3d[{subject}][{action}]"
            world = np.asarray(actions[action])
            if world.ndim != 3 or world.shape[1:] != (NUM_FILE_JOINTS, 3) or not np.issubdtype(world.dtype, np.number):
                raise RawDataError(path3d, field, f"[N, {NUM_FILE_JOINTS}, 3] numbers (world metres)",
                                   f"{world.dtype} {world.shape}")
            if not np.all(np.isfinite(world)):
                raise RawDataError(path3d, field, "finite numbers", "non-finite values")
            median = median_bone_length(world[:, FILE_JOINTS].astype(np.float64))
            if median >= MIN_MEDIAN_BONE_MM:
                raise RawDataError(path3d, field, "metres (VideoPose3D divides the CDF millimetres by 1000)",
                                   f"millimetres? (median bone length {median:.3g})")
            world_mm = world[:, FILE_JOINTS].astype(np.float64) * 1000.0
            pixels_all = _videopose3d_2d(positions2d, path2d, subject, action, len(world))
            for c, camera in enumerate(CAMERAS):
                if camera not in chosen:
                    continue
                stem = _media_stem(subject_dir, action, camera)
                if stem is None:
                    raise RawDataError(subject_dir / "Videos" / f"{action}.{camera}.mp4", None,
                                       f"the video (or extracted frames) of {path3d.name}'s {subject} {action!r}",
                                       "no such file")
                if _excluded(settings, subject, stem, camera):
                    continue
                frame_camera = cameras[int(subject[1:]), camera]
                pixels = None if pixels_all is None else pixels_all[c]
                subject_world = world_mm
                if _s9_shift(subject, stem, settings):
                    subject_world = world_mm - S9_SHIFT_WORLD_MM  # PosePile's correction, on world data
                    pixels = None  # VideoPose3D projected the shifted poses: use the corrected 3D's projection
                joints = frame_camera.world_to_camera(subject_world)
                yield from _take_examples(subject_dir, subject, split, stem, camera, frame_camera, joints, pixels,
                                          settings, options)


def _videopose3d_2d(positions2d, path2d, subject, action, num_frames):
    """[4 cameras][N, 25, 2] pixels of the 17 joints VideoPose3D keeps (NaN elsewhere), or None."""
    if positions2d is None:
        return None
    field = f"positions_2d[{subject}][{action}]"
    try:
        views = positions2d[subject][action]
    except (KeyError, TypeError):
        raise RawDataError(path2d, field, "the action to be present (as in data_3d_h36m.npz)",
                           "it is missing") from None
    if not isinstance(views, (list, tuple)) or len(views) != len(CAMERAS):
        raise RawDataError(path2d, field, f"a list of {len(CAMERAS)} arrays, one per camera",
                           f"{type(views).__name__} of {len(views) if hasattr(views, '__len__') else '?'}")
    out = []
    for c, view in enumerate(views):
        view = np.asarray(view)
        expected = (num_frames, len(VIDEOPOSE3D_JOINTS), 2)
        if view.shape != expected or not np.issubdtype(view.dtype, np.number):
            raise RawDataError(path2d, f"{field}[{c}]", f"{list(expected)} numbers (VideoPose3D's 17 joints)",
                               f"{view.dtype} {view.shape}")
        pixels = np.full((num_frames, len(FILE_JOINTS), 2), np.nan)
        for j, file_joint in enumerate(FILE_JOINTS):
            if file_joint in VIDEOPOSE3D_JOINTS:
                pixels[:, j] = view[:, VIDEOPOSE3D_JOINTS.index(file_joint)]
        out.append(pixels)
    return out
