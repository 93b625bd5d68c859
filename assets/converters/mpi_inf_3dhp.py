"""Converter for the MPI-INF-3DHP training release (docs/converters/mpi_inf_3dhp.md).

Raw layout (the official download, unchanged)::

    S<k>/Seq<m>/annot.mat                   MATLAB v5: annot2, annot3 (14x1 cells, one per camera), cameras, frames
    S<k>/Seq<m>/camera.calibration          Skeletool text calibration of the 14 cameras
    S<k>/Seq<m>/imageSequence/video_<c>.avi the frames, decoded here when no extracted frame is present
    S<k>/Seq<m>/imageSequence/img_<c>_<r+1:06d>.jpg  optional, the README's ffmpeg extraction (1-based)

``annot3`` is already in each camera's frame (mm): it is handed on as is, with the calibration's
extrinsics kept only to place the camera in the world. ``annot2`` (pixels) is an independent 2D label.
Some annotation cells have more rows than the video has frames: rows are capped by the official
per-sequence frame count and by the video's own length.
"""

import logging
import os
import re
import zlib
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.common import RawExample
from assets.converters.interface import ConverterOptions, OptionError
from assets.converters.mpi_inf_3dhp_joints import OFFICIAL_JOINTS, joint_order
from assets.converters.raw_io import RawDataError, check_millimetres, require_file

log = logging.getLogger(__name__)

NAME = "mpi_inf_3dhp"
VERSION = "1"
SKELETON = "mpi_inf_3dhp_28"
NUM_JOINTS = 28
CAMERAS = tuple(str(c) for c in range(14))
# the 'vnect' set of the toolkit's mpii_get_camera_set.m (chest high, knee high and two angled down),
# which PosePile (posepile/ds/tdhp/main.py camera_ids) and margipose train on
DEFAULT_CAMERAS = ("0", "1", "2", "4", "5", "6", "7", "8")
DEFAULT_FRAME_STEP = 5  # PosePile: frame_step = 5
# the paper trains on all eight subjects; PosePile holds out S8 for validation ("my own arbitrary split")
EXTRA_OPTIONS = {"val_subjects": []}

CALIBRATION_HEADER = "Skeletool Camera Calibration File V1.0"
# video frames per sequence (Seq1, Seq2) from the toolkit's mpii_get_sequence_info.m, as in PosePile
SEQUENCE_FRAMES = {
    "S1": (6416, 12430), "S2": (6502, 6081), "S3": (12488, 12283), "S4": (6171, 6675),
    "S5": (12820, 12312), "S6": (6188, 6145), "S7": (6239, 6320), "S8": (6468, 6054),
}
# videos shorter than their sequence: S6/Seq2 video_2.avi (PosePile; margipose's blacklist)
SHORT_VIDEOS = {("S6", "Seq2", 2): 3911}
# a calibration printed with ~7 significant digits is orthonormal to ~1e-6
ROTATION_TOLERANCE = 1e-3

_CALIBRATION_FIELDS = {"sensor": 2, "size": 2, "animated": 1, "intrinsic": 16, "extrinsic": 16, "radial": 1}
_MAT_ERRORS = (ValueError, TypeError, IndexError, KeyError, OSError, EOFError, zlib.error)


# -- camera.calibration --------------------------------------------------------------------------

def read_calibration(path: Path) -> dict[int, Camera]:
    """The cameras of a Skeletool ``camera.calibration`` file, by index ('name').

    Per camera: ``intrinsic`` and ``extrinsic`` are row-major 4x4 matrices, K the intrinsic's top-left
    3x3 and the extrinsic world->camera with t in mm; ``radial`` must be 0 (3DHP has no distortion).
    """
    try:
        lines = require_file(path).read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise RawDataError(path, None, "a text calibration file", f"undecodable bytes ({exc})") from None
    content = [(n, line.split()) for n, line in enumerate(lines, 1) if line.strip()]
    if not content or " ".join(content[0][1]) != CALIBRATION_HEADER:
        got = " ".join(content[0][1])[:60] if content else "an empty file"
        raise RawDataError(path, "header", repr(CALIBRATION_HEADER), repr(got))
    blocks: dict[int, dict] = {}
    current = None
    for lineno, (key, *values) in content[1:]:
        if key == "name":
            try:
                current = int(values[0]) if len(values) == 1 else None
            except ValueError:
                current = None
            if current is None:
                raise RawDataError(path, f"line {lineno} 'name'", "one integer camera index", " ".join(values))
            if current in blocks:
                raise RawDataError(path, f"camera {current} 'name'", "each camera once", "a repeated block")
            blocks[current] = {}
            continue
        if key not in _CALIBRATION_FIELDS:
            continue  # the format's loader ignores what it does not know, as does this one
        where = f"camera {current} '{key}'"
        if current is None:
            raise RawDataError(path, f"line {lineno} '{key}'", "a 'name' line before the camera's fields", "none")
        count = _CALIBRATION_FIELDS[key]
        try:
            numbers = np.array([float(v) for v in values])
        except ValueError:
            numbers = None
        if numbers is None or numbers.size != count or not np.all(np.isfinite(numbers)):
            raise RawDataError(path, where, f"{count} finite numbers", " ".join(values)[:80] or "none")
        blocks[current][key] = numbers
    if not blocks:
        raise RawDataError(path, "name", "at least one camera block", "none")
    cameras = {index: _camera(path, index, block) for index, block in blocks.items()}
    _check_translation_units(path, cameras)
    return cameras


def _camera(path: Path, index: int, block: dict) -> Camera:
    for key in ("intrinsic", "extrinsic"):
        if key not in block:
            raise RawDataError(path, f"camera {index} '{key}'", "16 numbers (a row-major 4x4 matrix)", "missing")
    if block.get("animated", [0])[0] != 0:
        raise RawDataError(path, f"camera {index} 'animated'", "0 (a static camera)", f"{block['animated'][0]:g}")
    if block.get("radial", [0])[0] != 0:
        raise RawDataError(path, f"camera {index} 'radial'", "0 (3DHP cameras have no lens distortion)",
                           f"{block['radial'][0]:g}")
    intrinsic = block["intrinsic"].reshape(4, 4)
    extrinsic = block["extrinsic"].reshape(4, 4)
    if not np.allclose(extrinsic[3], [0, 0, 0, 1]):
        raise RawDataError(path, f"camera {index} 'extrinsic'", "a last row 0 0 0 1", str(extrinsic[3].tolist()))
    R = extrinsic[:3, :3]
    error = np.abs(R @ R.T - np.eye(3)).max()
    if error > ROTATION_TOLERANCE or np.linalg.det(R) < 0:
        raise RawDataError(path, f"camera {index} 'extrinsic'", "a world->camera rotation in the top-left 3x3",
                           f"|R R^T - I| = {error:.3g}, det {np.linalg.det(R):.4g}")
    try:
        return Camera(K=intrinsic[:3, :3], R=R, t=extrinsic[:3, 3], name=str(index))
    except ValueError as exc:
        raise RawDataError(path, f"camera {index} 'intrinsic'", "a pinhole intrinsic matrix", str(exc)) from None


def _check_translation_units(path: Path, cameras: dict[int, Camera]) -> None:
    """Cameras of one studio stand metres apart: centres within a few units of each other are in metres."""
    if len(cameras) < 2:
        return
    centres = np.array([cam.center for cam in cameras.values()])
    spread = np.linalg.norm(centres[:, None] - centres[None], axis=-1).max()
    if spread < 50.0:
        raise RawDataError(path, "extrinsic", "translations in millimetres",
                           f"camera centres at most {spread:.3g} apart (metres?)")


# -- annot.mat -----------------------------------------------------------------------------------

def load_mat_v5(path: Path, variables: list[str]) -> dict:
    """The named variables of a MATLAB v5 .mat file (scipy), with errors that name the file."""
    require_file(path)
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return loadmat(path, variable_names=variables)
    except NotImplementedError:  # scipy's answer to v7.3 (HDF5) files
        raise RawDataError(path, None, "a MATLAB v5 .mat file", "a MATLAB v7.3 (HDF5) file") from None
    except (MatReadError, *_MAT_ERRORS) as exc:
        raise RawDataError(path, None, "a readable MATLAB v5 .mat file",
                           f"an unreadable or truncated file ({type(exc).__name__}: {exc})") from None


def mat_field(mat: dict, name: str, path: Path):
    if name not in mat:
        raise RawDataError(path, name, "the variable to be present", "it is missing")
    return mat[name]


def _cells(mat: dict, name: str, path: Path, columns: int) -> list[np.ndarray]:
    """A per-camera cell array (MATLAB 14x1 cell) as a list of [F, columns] float arrays."""
    cells = mat_field(mat, name, path)
    if not (isinstance(cells, np.ndarray) and cells.dtype == object and cells.ndim == 2 and 1 in cells.shape):
        raise RawDataError(path, name, "a cell array with one cell per camera",
                           f"{getattr(cells, 'dtype', type(cells).__name__)} of shape {getattr(cells, 'shape', '?')}")
    out = []
    for i, cell in enumerate(cells.ravel()):
        field = f"{name}{{{i + 1}}}"  # MATLAB's 1-based cell index
        arr = np.asarray(cell)
        if arr.ndim != 2 or arr.shape[1] != columns or not np.issubdtype(arr.dtype, np.number):
            raise RawDataError(path, field, f"numbers of shape [frames, {columns}] ({NUM_JOINTS} joints x "
                                            f"{columns // NUM_JOINTS} values per row)", f"{arr.dtype} {arr.shape}")
        out.append(arr.astype(np.float64, copy=False))
    return out


def _integer_vector(mat: dict, name: str, path: Path, default: np.ndarray) -> np.ndarray:
    if name not in mat:
        return default
    raw = np.asarray(mat[name])
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise RawDataError(path, name, "a numeric vector", f"{raw.dtype} of shape {raw.shape}")
    values = raw.astype(np.float64).ravel()
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise RawDataError(path, name, "whole numbers", repr(values[:8].tolist()))
    return values.astype(int)


def read_annotations(path: Path) -> dict:
    """camera index -> (annot2 [F,28,2], annot3 [F,28,3]) from one ``annot.mat``, rows = frames."""
    mat = load_mat_v5(path, ["annot2", "annot3", "cameras", "frames"])
    annot3 = _cells(mat, "annot3", path, 3 * NUM_JOINTS)
    annot2 = _cells(mat, "annot2", path, 2 * NUM_JOINTS)
    if len(annot2) != len(annot3):
        raise RawDataError(path, "annot2", f"{len(annot3)} cells like annot3", str(len(annot2)))
    cameras = _integer_vector(mat, "cameras", path, np.arange(len(annot3)))
    if len(cameras) != len(annot3) or len(set(cameras.tolist())) != len(cameras) or cameras.min() < 0:
        raise RawDataError(path, "cameras", f"{len(annot3)} distinct camera indices (one per cell)",
                           str(cameras.tolist()))
    rows = {a.shape[0] for a in annot3} | {a.shape[0] for a in annot2}
    if len(rows) != 1:
        raise RawDataError(path, "annot2", "the same number of rows (frames) in every cell", str(sorted(rows)))
    num_rows = rows.pop()
    frames = _integer_vector(mat, "frames", path, np.arange(num_rows))
    if not np.array_equal(frames, np.arange(num_rows)):
        raise RawDataError(path, "frames", f"the frame numbers 0..{num_rows - 1}, one per row",
                           f"{frames[:5].tolist()}... ({len(frames)} values)")
    order = joint_order(SKELETON, tuple(OFFICIAL_JOINTS))
    return {int(cam): (a2.reshape(num_rows, NUM_JOINTS, 2)[:, order], a3.reshape(num_rows, NUM_JOINTS, 3)[:, order])
            for cam, a2, a3 in zip(cameras, annot2, annot3)}


# -- frames --------------------------------------------------------------------------------------

def frame_image_path(seq_dir: Path, camera: int, row: int) -> Path:
    """The README's extraction: ``ffmpeg -i video_X.avi img_X_%06d.jpg`` numbers frames from 1."""
    return seq_dir / "imageSequence" / f"img_{camera}_{row + 1:06d}.jpg"


def video_path(seq_dir: Path, camera: int) -> Path:
    return seq_dir / "imageSequence" / f"video_{camera}.avi"


_EXTRACTED = re.compile(r"img_(\d+)_(\d{6,})\.jpg")


def extracted_rows(seq_dir: Path) -> dict[int, set[int]]:
    """camera -> annotation rows with an extracted frame in ``imageSequence/`` (one directory listing)."""
    rows: dict[int, set[int]] = {}
    folder = seq_dir / "imageSequence"
    if folder.is_dir():
        for name in (entry.name for entry in os.scandir(folder)):
            match = _EXTRACTED.fullmatch(name)
            if not match:
                continue
            if int(match[2]) == 0:  # ffmpeg never writes 0: another extraction script's 0-based names
                raise RawDataError(folder / name, None, "ffmpeg's 1-based frame names (row 0 is "
                                   f"img_{match[1]}_000001.jpg)", "a frame numbered 0 (0-based names?)")
            rows.setdefault(int(match[1]), set()).add(int(match[2]) - 1)
    return rows


def video_frame_count(path: Path) -> int | None:
    """Frames in a video by its header (no decoding); None when the header does not say."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration and rate:
                return int(round(float(stream.duration * stream.time_base * rate)))
    except (av.error.FFmpegError, IndexError) as exc:
        raise RawDataError(path, None, "a decodable video with a video stream", str(exc)) from None
    return None


def usable_rows(subject: str, sequence: str, camera: int, num_rows: int, video: Path | None = None,
                extracted: set[int] | None = None) -> int:
    """Annotation rows that have a frame (the README: "some sequences have a few frames missing at the end
    but annotations still available"): capped by the official frame count (mpii_get_sequence_info), and by
    the video's length, or without a video by the last extracted frame."""
    count = num_rows
    seq_number = int(sequence[3:])
    if subject in SEQUENCE_FRAMES and seq_number in (1, 2):
        count = min(count, SEQUENCE_FRAMES[subject][seq_number - 1])
    count = min(count, SHORT_VIDEOS.get((subject, sequence, camera), count))
    if video is not None and video.is_file():
        try:
            frames = video_frame_count(video)
        except ImportError:  # no PyAV: fine as long as the frames come from extracted images
            frames = max(extracted) + 1 if extracted else None
        if frames is not None:
            count = min(count, frames)
    elif extracted:
        count = min(count, max(extracted) + 1)
    return count


# -- examples ------------------------------------------------------------------------------------

def _numbered_dirs(parent: Path, prefix: str) -> list[Path]:
    pattern = re.compile(rf"{prefix}(\d+)")
    found = [p for p in parent.iterdir() if p.is_dir() and pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name[len(prefix):]))


def _val_subjects(options: ConverterOptions) -> set[str]:
    value = options.extra.get("val_subjects", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and re.fullmatch(r"S\d+", s)
                                                       for s in value):
        raise OptionError("val_subjects", f"must be a list of subject folders such as ['S8'], got {value!r}")
    return set(value)


def read_examples(raw_root: Path, options: ConverterOptions | None = None):
    raw_root = Path(raw_root)
    options = options or ConverterOptions(frame_step=DEFAULT_FRAME_STEP, cameras=DEFAULT_CAMERAS)
    val_subjects = _val_subjects(options)
    cameras = [int(c) for c in (options.cameras or CAMERAS)]
    sequences = [seq for subject in _numbered_dirs(raw_root, "S") for seq in _numbered_dirs(subject, "Seq")]
    if not sequences:
        raise RawDataError(raw_root, None, "sequence folders S<k>/Seq<m>/ of the 3DHP training release", "none")
    for seq_dir in sequences:
        split = "val" if seq_dir.parent.name in val_subjects else "train"
        yield from _sequence_examples(seq_dir, cameras, options, split)


def _sequence_examples(seq_dir: Path, cameras: list[int], options: ConverterOptions, split: str):
    subject, sequence = seq_dir.parent.name, seq_dir.name
    annot_path, calibration_path = seq_dir / "annot.mat", seq_dir / "camera.calibration"
    annotations = read_annotations(annot_path)
    calibration = read_calibration(calibration_path)
    for camera in cameras:
        if camera not in annotations:
            raise RawDataError(annot_path, "cameras", f"a cell for camera {camera}", str(sorted(annotations)))
        if camera not in calibration:
            raise RawDataError(calibration_path, "name", f"a block for camera {camera}", str(sorted(calibration)))
    present = extracted_rows(seq_dir)
    for camera in cameras:
        annot2, annot3 = annotations[camera]
        check_millimetres(annot3, annot_path, f"annot3 (camera {camera})", SKELETON)
        video, extracted = video_path(seq_dir, camera), present.get(camera, set())
        has_video = video.is_file()
        if not has_video and not extracted:
            raise RawDataError(video, None, f"the video, or its frames extracted as img_{camera}_%06d.jpg",
                               "neither exists")
        count = usable_rows(subject, sequence, camera, len(annot3), video, extracted)
        if count < len(annot3):
            log.info("%s camera %d: %d annotation rows, frames for %d", seq_dir, camera, len(annot3), count)
        for row in range(count):
            if not options.keeps_frame(row):
                continue
            if row in extracted:
                source = {"image_path": frame_image_path(seq_dir, camera, row)}
            elif has_video:
                source = {"image_path": video, "frame_index": row}
            else:
                raise RawDataError(frame_image_path(seq_dir, camera, row), None,
                                   f"an extracted frame (rows up to {max(extracted)} have one), or the video "
                                   f"{video.name} to decode it from", "neither exists")
            # copies, so that the sequence's full annotation arrays are freed after it
            yield RawExample(**source, frame_camera=calibration[camera], split=split, subject=subject,
                             sequence=sequence, frame=row, camera=str(camera), pose3d=annot3[row].copy(),
                             pose2d=annot2[row].copy(), world_known=True)
