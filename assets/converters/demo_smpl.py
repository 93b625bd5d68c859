"""Converter for the 3DPW-like demo layout (docs/raw_layouts.md#demo_smpl): metres, moving camera."""

from pathlib import Path

from assets.cameras import Camera
from assets.converters.interface import ConverterOptions
from assets.converters.common import RawExample
from assets.converters.raw_io import RawDataError, load_npz, npz_field

NAME = "demo_smpl"
VERSION = "1"
SKELETON = "smpl_24"
NUM_JOINTS = 24
FOLDER_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
    examples = []
    files = sorted((raw_root / "sequenceFiles").glob("*/*.npz"))
    if not files:
        raise RawDataError(raw_root / "sequenceFiles", None, "sequence files <split>/<sequence>.npz", "none")
    for path in files:
        split_folder, sequence = path.parent.name, path.stem
        if split_folder not in FOLDER_SPLITS:
            raise RawDataError(path.parent, None, f"a split folder of {sorted(FOLDER_SPLITS)}", split_folder)
        data = load_npz(path)
        joints_m = npz_field(data, "jointPositions", path, (-1, NUM_JOINTS * 3))
        n = len(joints_m)
        cam_poses = npz_field(data, "cam_poses", path, (n, 4, 4))
        K = npz_field(data, "cam_intrinsics", path, (3, 3))
        dist = npz_field(data, "cam_distortion", path, (5,))
        boxes = npz_field(data, "crop_boxes", path, (n, 4))
        world_mm = joints_m.reshape(n, NUM_JOINTS, 3) * 1000.0
        for f in range(n):
            try:
                camera = Camera(K=K, dist=dist, R=cam_poses[f, :3, :3], t=cam_poses[f, :3, 3] * 1000.0)
            except ValueError as exc:
                raise RawDataError(path, f"cam_poses[{f}]", "a valid camera", str(exc)) from None
            examples.append(RawExample(
                image_path=raw_root / "imageFiles" / sequence / f"image_{f:05d}.jpg", frame_camera=camera,
                crop_box=boxes[f], pose3d=camera.world_to_camera(world_mm[f]),
                split=FOLDER_SPLITS[split_folder], subject=sequence, sequence=sequence, frame=f, camera="moving"))
    return examples
