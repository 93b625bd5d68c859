"""Running a trained estimator on a folder of person crops (the `dozens predict` command).

Every input is checked before the model runs; problems raise ``PredictInputError`` (a ValueError) or
``PredictFileNotFoundError`` (also a FileNotFoundError) whose message names the option, file or key at
fault and what was expected.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:  # torch is imported only when a model is loaded, so the CLI can validate --fov cheaply
    from model.estimator import PoseEstimator

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
DEFAULT_FOV_DEGREES = 55.0  # a typical phone/webcam field of view, used when no intrinsics are given
# Crops are shrunk to the network's input (tens to hundreds of pixels), so anything this big is a mistake
# (a whole panorama, a decompression bomb); non-JPEG formats must be decoded at full resolution, so the
# limit is also what bounds memory (about 4 bytes per pixel, up to 8 for palette or alpha images).
MAX_IMAGE_PIXELS = 100_000_000
TRAIN_HINT = "train one with `make demo` (writes data/models/final/model.pt) or pass --model PATH"


class PredictInputError(ValueError):
    """An input of `dozens predict` that cannot be used; the message names it and what was expected."""


class PredictFileNotFoundError(PredictInputError, FileNotFoundError):
    """A missing input; both a PredictInputError and a FileNotFoundError so either kind of handler sees it."""


def check_fov(fov_degrees) -> float:
    """The field of view as a float, or PredictInputError unless it is finite and strictly in (0, 180)."""
    try:
        value = float(fov_degrees)
    except (TypeError, ValueError):
        raise PredictInputError(f"--fov: expected a field of view in degrees, got {fov_degrees!r}") from None
    # 0 gives an infinite focal length; 180 and beyond a zero or negative one (points behind the camera)
    if not (math.isfinite(value) and 0 < value < 180):
        raise PredictInputError("--fov: expected a finite field of view in degrees strictly between 0 and 180, "
                                f"got {fov_degrees!r}")
    return value


def crop_intrinsics(size: int, fov_degrees: float) -> np.ndarray:
    focal = size / (2 * np.tan(np.radians(check_fov(fov_degrees)) / 2))
    return np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]], dtype=np.float32)


def load_estimator(path) -> PoseEstimator:
    """``model.load``, saying how to produce the file when there is none (a damaged or foreign file raises
    model.checkpoints.CheckpointError, a ValueError naming it)."""
    import model

    path = Path(path)
    if not path.exists():
        raise PredictFileNotFoundError(f"model file {path} does not exist; {TRAIN_HINT}")
    if not path.is_file():
        raise PredictInputError(f"model file {path} is a folder, not a model file; {TRAIN_HINT}")
    return model.load(path)


def check_skeleton(estimator: PoseEstimator, skeleton: str | None) -> None:
    """PredictInputError unless the model has outputs for ``skeleton`` (None: all joints, always fine)."""
    if skeleton is None:
        return
    available = estimator.skeletons()
    if skeleton in available:
        return
    from assets.skeletons import known_skeletons

    problem = (f"the model was not trained on the {skeleton!r} format" if skeleton in known_skeletons()
               else f"unknown skeleton format {skeleton!r}")
    raise PredictInputError(f"--skeleton {skeleton}: {problem}; this model predicts {', '.join(available)} "
                            "(or 'all' for every joint)")


def list_images(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise PredictFileNotFoundError(f"images folder {folder} does not exist")
    if not folder.is_dir():
        raise PredictInputError(f"images folder {folder} is a file, not a folder; put the crops in a folder "
                                "and pass that")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise PredictFileNotFoundError(
            f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) to predict on")
    return files


def _too_large(path: Path, size: str, limit: int | None = None) -> PredictInputError:
    limit = MAX_IMAGE_PIXELS if limit is None else limit
    return PredictInputError(f"{path}: image size {size} exceeds the limit of {limit} pixels "
                             f"({limit / 1e6:g} megapixels) for a person crop; crop or shrink it first")


def _bomb(path: Path, exc: Exception) -> PredictInputError:
    """Our message for PIL's DecompressionBombError, which comes before the dimensions are known."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    # PIL refuses above twice its MAX_IMAGE_PIXELS; ours is lower unless someone lowered PIL's
    limit = min(MAX_IMAGE_PIXELS, 2 * (Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS))
    return _too_large(path, f"({found[1]} pixels)" if found else f"(PIL: {exc})", limit)


def load_crop(path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One square crop as uint8 [size, size, 3] and its original (width, height).

    Large images are shrunk while decoding where the format allows (JPEG decodes at 1/2, 1/4 or 1/8
    scale) and otherwise box-averaged in their decoded mode, so memory stays near one decoded image (plus
    one RGB copy for palette or alpha images, which cannot be averaged as they are).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # PIL warns from ~89 Mpx and refuses from ~179 Mpx; MAX_IMAGE_PIXELS below is the limit that applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _bomb(path, exc) from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as exc:
        raise PredictInputError(f"{path}: not a readable image ({exc})") from None
    with img:
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise _too_large(path, f"{width}x{height} ({width * height} pixels)")
        if width != height:
            raise PredictInputError(f"{path}: crops must be square (person-centred), got {width}x{height}")
        try:
            # the same 2x margin as Image.thumbnail: cheap reduction first, a proper filter for the last step
            drafted = img.draft(None, (2 * size, 2 * size))
            box = drafted[1] if drafted else None  # the original extent in drafted pixels, kept exact
            source = img if img.mode in ("RGB", "L") else img.convert("RGB")  # palette/alpha can't be averaged
            small = source.resize((size, size), Image.BILINEAR, box=box, reducing_gap=2.0).convert("RGB")
        except Image.DecompressionBombError as exc:
            raise _bomb(path, exc) from None
        except (OSError, ValueError, EOFError, SyntaxError) as exc:
            raise PredictInputError(f"{path}: not a readable image ({exc})") from None
    return np.asarray(small), (width, height)


def load_crops(folder, size: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Square crops resized to ``size``; returns (files, images uint8 [N,S,S,3], original sizes [N,2])."""
    files = list_images(folder)
    images, sizes = _load_files(files, size)
    return files, images, sizes


def _load_files(files: list[Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    loaded = [load_crop(path, size) for path in files]
    return np.stack([image for image, _ in loaded]), np.array([original for _, original in loaded])


def _describe(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _intrinsic_matrix(source: Path, key: str, value) -> np.ndarray:
    where = f"intrinsics file {source}, entry {key!r}"
    shape_ok = (isinstance(value, list) and len(value) == 3
                and all(isinstance(row, list) and len(row) == 3 for row in value))
    if not shape_ok or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for row in value for x in row):
        raise PredictInputError(f"{where}: expected a 3x3 matrix of numbers [[fx, s, cx], [0, fy, cy], [0, 0, 1]], "
                                f"got {_describe(value)}")
    try:
        K = np.array(value, dtype=np.float64)
    except OverflowError:  # JSON integers have no size limit
        K = np.full((3, 3), np.inf)
    if not np.isfinite(K).all():
        raise PredictInputError(f"{where}: expected finite numbers, got {_describe(value)}")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise PredictInputError(f"{where}: expected positive focal lengths in pixels, got fx = {K[0, 0]:g}, "
                                f"fy = {K[1, 1]:g}")
    if K[2].tolist() != [0.0, 0.0, 1.0]:
        raise PredictInputError(f"{where}: expected the last row of a pinhole camera matrix to be [0, 0, 1], "
                                f"got {_describe(value[2])}")
    return K


def read_intrinsics_json(source: Path):
    """The parsed JSON of an intrinsics file; a missing, unreadable or invalid file raises an error naming it."""
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PredictFileNotFoundError(f"intrinsics file {source} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictInputError(f"intrinsics file {source}: cannot be read as text ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PredictInputError(f"intrinsics file {source}: invalid JSON ({exc})") from None


def read_intrinsics(intrinsics_file, files: list[Path]) -> np.ndarray:
    """[N, 3, 3] float64 camera matrices of ``files`` as stored (at their original resolution)."""
    source = Path(intrinsics_file)
    table = read_intrinsics_json(source)
    if not isinstance(table, dict):
        raise PredictInputError(f"intrinsics file {source}: expected a JSON object mapping image file names to "
                                f"3x3 matrices, got a JSON {type(table).__name__}")
    missing = [f.name for f in files if f.name not in table]
    if missing:
        listed = ", ".join(repr(name) for name in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise PredictInputError(f"intrinsics file {source}: no entry for {len(missing)} of the {len(files)} "
                                f"images: {listed} (keys must be the image file names)")
    return np.stack([_intrinsic_matrix(source, f.name, table[f.name]) for f in files])


def predict_folder(estimator: PoseEstimator, folder, *, skeleton: str | None, fov_degrees: float | None = None,
                   intrinsics_file=None, batch_size: int = 64) -> dict:
    """{file name: [J,3] camera-frame mm} for every crop in ``folder``.

    Intrinsics: a JSON file mapping file names to 3x3 matrices of the crops as stored (scaled to the model's
    input size here), or a field of view assumed for every crop.
    """
    if fov_degrees is not None and intrinsics_file is not None:
        raise PredictInputError(f"--fov {fov_degrees} and --intrinsics {intrinsics_file}: give one or the other "
                                "(the field of view would be ignored)")
    fov = DEFAULT_FOV_DEGREES if fov_degrees is None else check_fov(fov_degrees)
    check_skeleton(estimator, skeleton)
    files = list_images(folder)
    given = read_intrinsics(intrinsics_file, files) if intrinsics_file is not None else None
    size = estimator.network.config.image_size
    images, sizes = _load_files(files, size)
    if given is not None:
        # the crops were shrunk to ``size``, so the matrices for their stored resolution shrink with them
        scale = size / sizes[:, 0].astype(np.float64)
        K = given.copy()
        K[:, :2] *= scale[:, None, None]
        K[:, :2, 2] += (scale[:, None] - 1) / 2  # keep pixel centres on integer coordinates
        K = K.astype(np.float32)
    else:
        K = np.repeat(crop_intrinsics(size, fov)[None], len(files), axis=0)
    poses = np.concatenate([estimator.predict(images[i:i + batch_size], K[i:i + batch_size], skeleton)
                            for i in range(0, len(files), batch_size)])
    return {f.name: pose for f, pose in zip(files, poses)}
