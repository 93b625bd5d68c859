"""Converter for the MPI-INF-3DHP test set (docs/converters/mpi_inf_3dhp.md).

Raw layout (the official test-set download; ``raw_root`` is the folder holding ``mpi_inf_3dhp_test_set``
or that folder itself)::

    mpi_inf_3dhp_test_set/TS<k>/annot_data.mat             MATLAB v7.3 (HDF5): annot2, annot3, valid_frame
    mpi_inf_3dhp_test_set/TS<k>/imageSequence/img_<r+1:06d>.jpg   frame of annotation row r (1-based names)

MATLAB stores ``annot3`` as 3x17x1xN, which h5py reads transposed: [N, 1, 17, 3] (camera frame, mm);
``annot2`` [N, 1, 17, 2] pixels; ``valid_frame`` [N, 1]. Only valid frames are kept. The file carries no
camera: TS1-4 share one studio camera, TS5-6 one outdoor camera, whose intrinsics come from the test
set's calibration files as PosePile hard-codes them. There are no extrinsics (no world frame).
"""

from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.common import RawExample
from assets.converters.interface import ConverterOptions
from assets.converters.mpi_inf_3dhp_joints import joint_order
from assets.converters.raw_io import RawDataError, check_millimetres, require_file

NAME = "mpi_inf_3dhp_test"
VERSION = "1"
SKELETON = "mpi_inf_3dhp_17"
NUM_JOINTS = 17
CAMERAS = ()  # one camera per sequence: nothing to choose
DEFAULT_CAMERAS = ()
DEFAULT_FRAME_STEP = 1  # every valid frame, as the benchmark evaluates
SET_FOLDER = "mpi_inf_3dhp_test_set"
NUM_SEQUENCES = 6

# mpii_get_joint_set.m 'relevant' = all_joint_names([8 6 15 16 17 10 11 12 24 25 26 19 20 21 5 4 7]), the
# order of the test set's 17 joints (pelvis 15th, then spine and head; PosePile reorders to ..spine, head, pelvis)
RELEVANT_JOINTS = ("head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
                   "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
                   "left_ankle", "pelvis", "spine", "head")


def make_calib_camera(sensor_mm, image_size, focal_mm, pixel_aspect, center_offset_mm, distortion=None,
                      name: str = "") -> Camera:
    """Intrinsics from a test-set .calib's physical parameters, as PosePile's make_3dhp_test_camera:
    focal length and principal point in mm on the sensor, scaled to pixels, y also by the pixel aspect."""
    sensor = np.asarray(sensor_mm, dtype=np.float64)
    scale = np.asarray(image_size, dtype=np.float64) / sensor * np.array([1.0, pixel_aspect])
    centre = (sensor / 2 + np.asarray(center_offset_mm, dtype=np.float64)) * scale
    K = np.array([[focal_mm * scale[0], 0, centre[0]], [0, focal_mm * scale[1], centre[1]], [0, 0, 1]])
    return Camera(K=K, dist=distortion, name=name)


# test_util/camera_calibration/ts1-4cameras.calib and ts5-6cameras.calib, as hard-coded in PosePile
# (posepile/ds/tdhp/main.py get_test_camera_subj1_4 / _subj5_6)
SEQUENCE_CAMERAS = {
    "ts1-4": dict(sensor_mm=(10, 10), image_size=(2048, 2048), focal_mm=7.32506, pixel_aspect=1.00044,
                  center_offset_mm=(-0.0322884, 0.0929296)),
    "ts5-6": dict(sensor_mm=(10, 5.625), image_size=(1920, 1080), focal_mm=8.770747185, pixel_aspect=0.993236423,
                  center_offset_mm=(-0.104908645, 0.104899704),
                  distortion=(-0.276859611, 0.131125256, -0.000360494, -0.001149441, -0.049318332)),
}


def camera_name(sequence_number: int) -> str:
    return "ts1-4" if sequence_number <= 4 else "ts5-6"


def sequence_camera(sequence_number: int) -> Camera:
    """The camera of test sequence TS<sequence_number> (no extrinsics: R = I, t = 0)."""
    name = camera_name(sequence_number)
    return make_calib_camera(**SEQUENCE_CAMERAS[name], name=name)


def frame_image_path(seq_dir: Path, row: int) -> Path:
    return seq_dir / "imageSequence" / f"img_{row + 1:06d}.jpg"


def _dataset(handle, name: str, path: Path) -> np.ndarray:
    import h5py

    if name not in handle:
        raise RawDataError(path, name, "the variable to be present", f"it is missing (has {sorted(handle)})")
    node = handle[name]
    if not isinstance(node, h5py.Dataset):
        raise RawDataError(path, name, "a numeric array", f"an HDF5 {type(node).__name__}")
    try:
        values = node[()]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RawDataError(path, name, "a readable array", f"a read error ({exc})") from None
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise RawDataError(path, name, "a numeric array", f"{values.dtype}")
    return values


def read_annotations(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """annot2 [N,17,2], annot3 [N,17,3] (project joint order) and valid_frame [N] bool of one annot_data.mat."""
    require_file(path)
    import h5py

    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise RawDataError(path, None, "a readable MATLAB v7.3 (HDF5) .mat file",
                           f"an unreadable or truncated file ({exc})") from None
    with handle:
        annot3 = _dataset(handle, "annot3", path)
        annot2 = _dataset(handle, "annot2", path)
        valid = _dataset(handle, "valid_frame", path)
    num_rows = annot3.shape[0] if annot3.ndim else 0
    for name, arr, dims in (("annot3", annot3, 3), ("annot2", annot2, 2)):
        if arr.shape != (num_rows, 1, NUM_JOINTS, dims):
            raise RawDataError(path, name, f"shape [N, 1, {NUM_JOINTS}, {dims}] (MATLAB {dims}x{NUM_JOINTS}x1xN)"
                                           f" with N = {num_rows} frames", str(arr.shape))
    if valid.size != num_rows or valid.ndim > 2:
        raise RawDataError(path, "valid_frame", f"one flag per frame, shape [{num_rows}, 1]", str(valid.shape))
    order = joint_order(SKELETON, RELEVANT_JOINTS)
    valid = valid.reshape(-1)
    if not np.all(np.isin(valid, (0, 1))):
        raise RawDataError(path, "valid_frame", "flags 0 or 1", str(np.unique(valid)[:8].tolist()))
    return (annot2[:, 0, order].astype(np.float64), annot3[:, 0, order].astype(np.float64), valid.astype(bool))


def _set_folder(raw_root: Path) -> Path:
    nested = raw_root / SET_FOLDER
    return nested if nested.is_dir() else raw_root


def read_examples(raw_root: Path, options: ConverterOptions | None = None):
    options = options or ConverterOptions(frame_step=DEFAULT_FRAME_STEP)
    root = _set_folder(Path(raw_root))
    sequences = sorted((p for p in root.glob("TS*") if p.is_dir() and p.name[2:].isdigit()),
                       key=lambda p: int(p.name[2:]))
    if not sequences:
        raise RawDataError(root, None, f"test sequence folders TS1..TS{NUM_SEQUENCES} (in {SET_FOLDER}/)", "none")
    for seq_dir in sequences:
        number = int(seq_dir.name[2:])
        if not 1 <= number <= NUM_SEQUENCES:
            raise RawDataError(seq_dir, None, f"a test sequence TS1..TS{NUM_SEQUENCES} (with a known camera)",
                               seq_dir.name)
        annot_path = seq_dir / "annot_data.mat"
        annot2, annot3, valid = read_annotations(annot_path)
        check_millimetres(annot3[valid], annot_path, "annot3", SKELETON)
        camera = sequence_camera(number)
        for row in np.flatnonzero(valid):
            row = int(row)
            if not options.keeps_frame(row):
                continue
            yield RawExample(image_path=frame_image_path(seq_dir, row), frame_camera=camera, split="test",
                             subject=seq_dir.name, sequence=seq_dir.name, frame=row, camera=camera.name,
                             pose3d=annot3[row].copy(), pose2d=annot2[row].copy(), world_known=False)
