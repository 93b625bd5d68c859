"""Qualisys Track Manager calibrations (``.qca.txt``, XML) as ``Camera`` objects.

The conventions are those of Pose2Sim's own converter (``Pose2Sim/calibration.py``: ``read_qca`` and
``calib_qca_fun``, which the demo's ``Config.toml`` selects with ``convert_from = 'qualisys'``):

- Intrinsics are in Qualisys sub-pixel units, 64 per pixel: ``fx = focalLengthU / 64`` and
  ``cx = centerPointU / 64 - fov_video.left`` (the principal point is given on the full sensor, the
  video may be a window of it). The distortion coefficients are divided by 64 as well.
- The image size is the ``fov_video`` window, both ends inclusive: ``right - left + 1`` by
  ``bottom - top + 1`` (``Utilities/calib_qca_to_toml.py`` in the same wheel forgets the ``+ 1``).
- ``transform`` gives the camera's position ``(x, y, z)`` in world millimetres and a rotation whose rows,
  as written ``r11 r12 r13 / r21 ...``, rotate world into Qualisys camera axes; Qualisys cameras look
  along their -z axis with y up, so a half turn about x gives the OpenCV camera (z forward, y down).
- ``binning_factor`` (2 when a Miqus Video films 540p from a binned 1080p sensor) divides intrinsics
  and distortion.
"""

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters.raw_io import RawDataError

SUBPIXELS_PER_PIXEL = 64.0
# Qualisys camera axes (looking down -z, y up) -> OpenCV camera axes (z forward, y down)
_QUALISYS_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
_ROTATION_KEYS = tuple(f"r{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3))


@dataclass(frozen=True)
class QcaCamera:
    camera: Camera
    image_size: tuple[int, int]  # (width, height) of the video frames
    avg_residual: float  # calibration residual as QTM reports it (mm)

    @property
    def name(self) -> str:
        return self.camera.name


def _number(element, key: str, path: Path, where: str) -> float:
    field = f"{where}@{key}"
    value = element.get(key)
    if value is None:
        raise RawDataError(path, field, "the attribute to be present", "it is missing")
    try:
        number = float(value)
    except ValueError:
        raise RawDataError(path, field, "a number", repr(value)) from None
    if not np.isfinite(number):
        raise RawDataError(path, field, "a finite number", repr(value))
    return number


def _child(element, tag: str, path: Path, where: str):
    child = element.find(tag)
    if child is None:
        raise RawDataError(path, f"{where}/{tag}", "the element to be present", "it is missing")
    return child


def read_qca(source, path=None, *, binning_factor: int = 1) -> list[QcaCamera]:
    """Cameras of a ``.qca.txt`` file, sorted by name (cam01, cam02, ...), as Pose2Sim orders them.

    ``source`` is the file path, or its bytes with ``path`` naming where they came from (errors name it).
    """
    if isinstance(source, (bytes, bytearray)):
        text, path = bytes(source), Path(path or "<qca bytes>")
    else:
        path = Path(source)
        if not path.is_file():
            raise RawDataError(path, None, "an existing .qca.txt calibration file", "no such file")
        text = path.read_bytes()
    if binning_factor < 1:
        raise ValueError(f"binning_factor: expected a positive integer, got {binning_factor}")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise RawDataError(path, None, "well-formed Qualisys XML", f"a parse error ({exc})") from None
    elements = root.findall("cameras/camera")
    if not elements:
        raise RawDataError(path, "cameras/camera", "at least one camera element", "none")
    cameras = []
    for index, element in enumerate(elements):
        cameras.append(_read_camera(element, path, f"cameras/camera[{index}]", binning_factor))
    names = [c.name for c in cameras]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RawDataError(path, "cameras/camera@serial", "unique camera serials", f"duplicates {duplicates}")
    return sorted(cameras, key=lambda c: _natural_key(c.name))


def _read_camera(element, path: Path, where: str, binning: int) -> QcaCamera:
    name = element.get("serial")
    if not name:
        raise RawDataError(path, f"{where}@serial", "a camera serial", "it is missing")
    where = f"{where}[serial={name}]"
    window_where = f"{where}/fov_video"
    window = _child(element, "fov_video", path, where)
    left, top, right, bottom = (_number(window, k, path, window_where) for k in ("left", "top", "right", "bottom"))
    width, height = (right - left + 1) / binning, (bottom - top + 1) / binning
    if width < 1 or height < 1:
        raise RawDataError(path, window_where, "right >= left and bottom >= top", f"{width:g} x {height:g} pixels")

    intrinsic_where = f"{where}/intrinsic"
    intrinsic = _child(element, "intrinsic", path, where)
    scale = SUBPIXELS_PER_PIXEL * binning

    def value(key):
        return _number(intrinsic, key, path, intrinsic_where)

    fx, fy = value("focalLengthU") / scale, value("focalLengthV") / scale
    cx, cy = value("centerPointU") / scale - left, value("centerPointV") / scale - top
    dist = np.array([value("radialDistortion1"), value("radialDistortion2"), value("tangentalDistortion1"),
                     value("tangentalDistortion2"), value("radialDistortion3")]) / scale
    for key, focal in (("focalLengthU", fx), ("focalLengthV", fy)):
        if focal <= 0:
            raise RawDataError(path, f"{intrinsic_where}@{key}", "a positive focal length", f"{focal * scale:g}")

    transform_where = f"{where}/transform"
    transform = _child(element, "transform", path, where)
    rows = np.array([_number(transform, k, path, transform_where) for k in _ROTATION_KEYS]).reshape(3, 3)
    if not np.allclose(rows @ rows.T, np.eye(3), atol=1e-4) or np.linalg.det(rows) < 0:
        raise RawDataError(path, f"{transform_where}@r11..r33", "a rotation matrix (orthonormal, det +1)",
                           str(rows.round(5).tolist()))
    position = np.array([_number(transform, k, path, transform_where) for k in ("x", "y", "z")])
    R = _QUALISYS_TO_OPENCV @ rows
    camera = Camera(K=[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dist=dist, R=R, t=-R @ position, name=name)
    residual = element.get("avg-residual")
    try:
        avg_residual = float(residual) if residual is not None else float("nan")
    except ValueError:
        raise RawDataError(path, f"{where}@avg-residual", "a number", repr(residual)) from None
    return QcaCamera(camera=camera, image_size=(round(width), round(height)), avg_residual=avg_residual)


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
