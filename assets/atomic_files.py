"""Writing one file so that a reader sees the old or the new content, never a partial file.

The content goes to a temporary file in the same folder, is flushed to disk, and replaces the target in
one rename (atomic on a local disk). On an object store (assets.locations) the content is sent in one
PUT, which replaces the object as a whole. A writer killed half-way leaves at most a ``.<name>.<id>.tmp``
beside a local target, which the next write of it removes.
"""

import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from assets.locations import Location, location, put_with

_TMP_SUFFIX = ".tmp"


def write_atomically(path, write: Callable[[BinaryIO], None]) -> Location:
    """Call ``write`` with a binary file handle, then put what it wrote at ``path`` in one step."""
    path = location(path)
    if not isinstance(path, Path):
        put_with(path, write)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(path)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}{_TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path, content: bytes) -> Location:
    return write_atomically(path, lambda handle: handle.write(content))


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _remove_dead_temporaries(path: Path) -> None:
    host = socket.gethostname()
    for leftover in path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"):
        owner = leftover.name[len(path.name) + 2:-len(_TMP_SUFFIX)]  # "<host>-<pid>-<hex>"
        owner_host, _, rest = owner.rpartition("-")
        owner_host, _, pid = owner_host.rpartition("-")
        if owner_host == host and pid.isdigit() and not process_exists(int(pid)):
            leftover.unlink(missing_ok=True)
