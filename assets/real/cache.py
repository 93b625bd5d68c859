"""The download cache: the Pose2Sim wheel (demo videos + calibration) and the MediaPipe virtualenv.

Everything here is fetched from PyPI with pip, once, into ``data/cache/`` under the project root (or
``$DOZENS_CACHE``). The wheel is only *read* (as a zip), never installed: Pose2Sim's dependencies are not
needed to use its demo data. MediaPipe pins protobuf<5 and brings OpenCV, JAX and matplotlib, so it gets
a virtualenv of its own instead of the project's; detection runs there as a subprocess.

``python3 -m assets.real.cache`` fetches both (`make setup` runs it beside the other installs). This module
needs only the standard library, so that it can run before the project's virtualenv exists.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POSE2SIM_REQUIREMENT = "pose2sim==0.10.49"
POSE2SIM_WHEEL = "pose2sim-0.10.49-py3-none-any.whl"
# mediapipe 0.10.14 bundles the pose_detection and pose_landmark_full models, so it runs offline. NumPy
# and OpenCV (the video decoder) are pinned to the versions the recorded detections were made with.
MEDIAPIPE_REQUIREMENTS = ("mediapipe==0.10.14", "numpy==2.4.6", "opencv-contrib-python==5.1.0.95")
_VENV_READY_MARK = ".dozens-ready"
MEDIAPIPE_VENV = "mediapipe-venv"


class AcquisitionError(RuntimeError):
    """Something could not be downloaded or installed (e.g. no network)."""


def cache_dir() -> Path:
    return Path(os.environ.get("DOZENS_CACHE") or PROJECT_ROOT / "data" / "cache")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise AcquisitionError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n" + "\n".join(tail))


def pose2sim_wheel(cache: Path | None = None, *, download: bool = True) -> Path:
    """Path of the cached Pose2Sim wheel, downloading it with pip if it is not there yet."""
    cache = Path(cache or cache_dir())
    wheel = cache / POSE2SIM_WHEEL
    if wheel.is_file():
        return wheel
    if not download:
        raise AcquisitionError(f"{wheel} is not cached and downloading was not allowed")
    cache.mkdir(parents=True, exist_ok=True)
    # download next to the cache and move in only a complete file, so an interrupted download never
    # looks cached
    staging = cache / f".download-{uuid.uuid4().hex[:8]}"
    try:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
              "--quiet", POSE2SIM_REQUIREMENT, "-d", str(staging)], f"downloading {POSE2SIM_REQUIREMENT}")
        downloaded = staging / POSE2SIM_WHEEL
        if not downloaded.is_file():
            raise AcquisitionError(f"pip download of {POSE2SIM_REQUIREMENT} produced {sorted(os.listdir(staging))}, "
                                   f"not {POSE2SIM_WHEEL}")
        os.replace(downloaded, wheel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return wheel


def read_member(archive: Path, member: str) -> bytes:
    """One file of a zip archive (a wheel); errors name the archive and the member."""
    from assets.converters.raw_io import RawDataError  # numpy: not while `make setup` prepares the cache

    try:
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    except FileNotFoundError:
        raise RawDataError(archive, None, "an existing archive", "no such file") from None
    except KeyError:
        raise RawDataError(archive, member, "the member to be in the archive", "it is missing") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise RawDataError(archive, member, "a readable zip archive", f"an unreadable file ({exc})") from None


def venv_python(name: str, requirements, cache: Path | None = None, *, create: bool = True) -> Path:
    """Interpreter of the virtualenv ``<cache>/<name>`` with ``requirements``, created on first use."""
    venv = Path(cache or cache_dir()) / name
    python = venv / "bin" / "python"
    ready = venv / _VENV_READY_MARK
    wanted = "\n".join(requirements)
    if python.is_file() and ready.is_file() and ready.read_text() == wanted:
        return python
    if not create:
        raise AcquisitionError(f"no virtualenv at {venv} and creating one was not allowed")
    # a half-built venv (interrupted install) has no mark and is rebuilt from scratch
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(venv)], f"creating the virtualenv {venv}")
    # --no-compile: the worker imports a small part of what is installed, compiled on first import
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
          *requirements],
         f"installing {', '.join(requirements)} into {venv}")
    ready.write_text(wanted)
    return python


def mediapipe_python(cache: Path | None = None, *, create: bool = True) -> Path:
    """Interpreter of the MediaPipe virtualenv in the cache."""
    return venv_python(MEDIAPIPE_VENV, MEDIAPIPE_REQUIREMENTS, cache, create=create)


def mediapipe_model(relative: str, cache: Path | None = None) -> Path:
    """A model file of the MediaPipe wheel in the cached virtualenv, e.g. ``pose_detection/pose_detection.tflite``
    (relative to ``mediapipe/modules``); never creates the virtualenv.

    The venv's Python version is whatever ``make setup`` ran with, so its site-packages folder is looked up
    rather than assumed. A venv without its ready mark is a half-finished install whose files may be cut short.
    """
    venv = Path(cache or cache_dir()) / MEDIAPIPE_VENV
    found = sorted(venv.glob(f"lib/python3*/site-packages/mediapipe/modules/{relative}"))
    if found and (venv / _VENV_READY_MARK).is_file():
        return found[-1]
    expected = found[-1] if found else (venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                                        / "site-packages" / "mediapipe" / "modules" / relative)
    state = "is from an unfinished install" if found else "is missing"
    raise AcquisitionError(f"the MediaPipe model {expected} {state}: run `make setup` "
                           f"(or `python3 -m assets.real.cache`) to install MediaPipe into {venv}")


if __name__ == "__main__":
    print(f"real recording inputs: {pose2sim_wheel()} and {mediapipe_python()}")
