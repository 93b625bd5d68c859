"""Running a trained estimator on a folder of person crops (the `dozens predict` command)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.estimator import PoseEstimator

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
DEFAULT_FOV_DEGREES = 55.0  # a typical phone/webcam field of view, used when no intrinsics are given


def crop_intrinsics(size: int, fov_degrees: float) -> np.ndarray:
    focal = size / (2 * np.tan(np.radians(fov_degrees) / 2))
    return np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]], dtype=np.float32)


def load_crops(folder, size: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Square crops resized to ``size``; returns (files, images uint8 [N,S,S,3], original sizes [N,2])."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) to predict on")
    images, sizes = [], []
    for path in files:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        if rgb.width != rgb.height:
            raise ValueError(f"{path}: crops must be square (person-centred), got {rgb.width}x{rgb.height}")
        sizes.append(rgb.size)
        images.append(np.asarray(rgb.resize((size, size), Image.BILINEAR)))
    return files, np.stack(images), np.array(sizes)


def predict_folder(estimator: PoseEstimator, folder, *, skeleton: str | None, fov_degrees: float | None = None,
                   intrinsics_file=None, batch_size: int = 64) -> dict:
    """{file name: [J,3] camera-frame mm} for every crop in ``folder``.

    Intrinsics: a JSON file mapping file names to 3x3 matrices of the crops as stored (scaled to the model's
    input size here), or a field of view assumed for every crop.
    """
    size = estimator.network.config.image_size
    files, images, sizes = load_crops(folder, size)
    if intrinsics_file is not None:
        table = json.loads(Path(intrinsics_file).read_text())
        missing = [f.name for f in files if f.name not in table]
        if missing:
            raise ValueError(f"{intrinsics_file}: no intrinsics for {missing[:5]}")
        K = np.stack([np.asarray(table[f.name], dtype=np.float32) for f in files])
        scale = size / sizes[:, 0].astype(np.float32)
        K[:, :2] *= scale[:, None, None]
        K[:, :2, 2] += (scale[:, None] - 1) / 2  # keep pixel centres on integer coordinates
    else:
        K = np.repeat(crop_intrinsics(size, fov_degrees or DEFAULT_FOV_DEGREES)[None], len(files), axis=0)
    poses = np.concatenate([estimator.predict(images[i:i + batch_size], K[i:i + batch_size], skeleton)
                            for i in range(0, len(files), batch_size)])
    return {f.name: pose for f, pose in zip(files, poses)}
