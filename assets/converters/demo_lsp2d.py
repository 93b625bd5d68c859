"""Converter for the LSP-like demo layout (docs/raw_layouts.md#demo_lsp2d): 2D labels, no camera."""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from assets.converters.interface import ConverterOptions
from assets.converters.common import RawExample, assumed_camera
from assets.converters.raw_io import RawDataError, load_npy

NAME = "demo_lsp2d"
VERSION = "1"
SKELETON = "lsp_14"
NUM_JOINTS = 14
TRAIN_FRACTION = 0.8


def _image_size(path: Path) -> tuple[int, int]:
    if not path.is_file():
        raise RawDataError(path, None, "an existing image file", "no such file")
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise RawDataError(path, None, "a decodable image", f"a decode error ({exc})") from None


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
    joints_path = raw_root / "joints.npy"
    joints = load_npy(joints_path, "joints", (-1, NUM_JOINTS, 3), allow_nan=True)
    flags = joints[..., 2]
    if not np.all(np.isin(flags, (0, 1))):
        raise RawDataError(joints_path, "joints[..., 2]", "labelled flags 0 or 1", str(np.unique(flags)[:10]))
    num_train = int(round(TRAIN_FRACTION * len(joints)))
    examples = []
    for i, annotation in enumerate(joints):
        image_path = raw_root / "images" / f"im{i:04d}.jpg"
        width, height = _image_size(image_path)
        uv = annotation[:, :2].astype(np.float64)
        uv[annotation[:, 2] == 0] = np.nan
        examples.append(RawExample(
            image_path=image_path, frame_camera=assumed_camera(width, height), pose2d=uv,
            split="train" if i < num_train else "val", subject=image_path.stem, sequence="images", frame=i,
            camera="unknown", world_known=False, assumed_camera=True))
    return examples
