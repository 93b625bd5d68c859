"""Converter for the MPI-INF-3DHP-like demo layout (docs/raw_layouts.md#demo_3dhp).

3DHP labels every joint twice: in 3D (``annot3``) and in the image (``annot2``). Both are handed on; a
store whose pose2d keeps the 2D labels lets the reprojection check compare two labels of the same joint
instead of the 3D label with its own projection, which agrees whatever went wrong.
"""

from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.interface import ConverterOptions
from assets.converters.common import RawExample
from assets.converters.raw_io import RawDataError, load_npy, load_npz, npz_field, require_file

NAME = "demo_3dhp"
VERSION = "2"  # 2: hands on the 2D labels (annot2) too
SKELETON = "mpi_inf_3dhp_28"
NUM_JOINTS = 28
SUBJECT_SPLITS = {"S1": "train", "S2": "train", "S3": "val", "S4": "test"}


def read_calibration(path: Path) -> dict[int, Camera]:
    """Parse the 3DHP ``camera.calibration`` text format (one 'name' block per camera)."""
    lines = require_file(path).read_text().splitlines()
    blocks: dict[int, dict] = {}
    current = None
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        key, values = parts[0], parts[1:]
        if key == "name":
            try:
                current = int(values[0])
            except (IndexError, ValueError):
                raise RawDataError(path, f"line {lineno} 'name'", "an integer camera index", line.strip()) from None
            blocks[current] = {}
        elif current is not None and key in ("intrinsic", "extrinsic", "distortion", "size"):
            try:
                blocks[current][key] = np.array([float(v) for v in values])
            except ValueError:
                raise RawDataError(path, f"camera {current} '{key}'", "numbers", line.strip()) from None
    expected = {"intrinsic": 16, "extrinsic": 16, "distortion": 5}
    cameras = {}
    for index, block in blocks.items():
        for key, count in expected.items():
            if key not in block or block[key].size != count:
                got = "missing" if key not in block else f"{block[key].size} numbers"
                raise RawDataError(path, f"camera {index} '{key}'", f"{count} numbers", got)
        intrinsic = block["intrinsic"].reshape(4, 4)
        extrinsic = block["extrinsic"].reshape(4, 4)
        try:
            cameras[index] = Camera(K=intrinsic[:3, :3], dist=block["distortion"], R=extrinsic[:3, :3],
                                    t=extrinsic[:3, 3])
        except ValueError as exc:
            raise RawDataError(path, f"camera {index}", "a valid camera", str(exc)) from None
    if not cameras:
        raise RawDataError(path, "name", "at least one camera block", "none")
    return cameras


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
    examples = []
    sequences = sorted(p for p in raw_root.glob("S*/Seq*") if p.is_dir())
    if not sequences:
        raise RawDataError(raw_root, None, "sequence folders S<k>/Seq<m>/", "none")
    for seq_dir in sequences:
        subject = seq_dir.parent.name
        if subject not in SUBJECT_SPLITS:
            raise RawDataError(seq_dir.parent, None, f"a subject of {sorted(SUBJECT_SPLITS)}", subject)
        cameras = read_calibration(seq_dir / "camera.calibration")
        annot_path = seq_dir / "annot.npz"
        annot = load_npz(annot_path)
        cam_ids = npz_field(annot, "cameras", annot_path, (-1,)).astype(int)
        frames = npz_field(annot, "frames", annot_path, (-1,)).astype(int)
        annot3 = npz_field(annot, "annot3", annot_path, (len(cam_ids), len(frames), NUM_JOINTS, 3), allow_nan=True)
        annot2 = npz_field(annot, "annot2", annot_path, (len(cam_ids), len(frames), NUM_JOINTS, 2), allow_nan=True)
        boxes = load_npy(seq_dir / "crops.npy", "crop_boxes", (len(cam_ids), len(frames), 4))
        missing = sorted(set(cam_ids.tolist()) - set(cameras))
        if missing:
            raise RawDataError(seq_dir / "camera.calibration", "name", f"blocks for cameras {missing}", "none")
        for c, cam_id in enumerate(cam_ids):
            for f, frame in enumerate(frames):
                examples.append(RawExample(
                    image_path=seq_dir / "imageSequence" / f"video_{cam_id}" / f"frame_{frame:06d}.jpg",
                    frame_camera=cameras[cam_id], crop_box=boxes[c, f], pose3d=annot3[c, f], pose2d=annot2[c, f],
                    split=SUBJECT_SPLITS[subject], subject=subject, sequence=f"{subject}/{seq_dir.name}",
                    frame=int(frame), camera=str(cam_id)))
    return examples
