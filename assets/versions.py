"""Artifacts written once and published by a pointer written last.

An artifact location (e.g. ``data/stores/dataset/demo_h36m``) is a folder of immutable versions and one
small pointer naming the version readers get::

    <location>/<version>.zarr            a version: written, checked, then never modified
    <location>/<version>.zarr.writing    exists while its writer runs (host, pid): an unpublished version
    <location>/current.json              the pointer: current version, its data version, the previous version

Publishing is one atomic replace of ``current.json`` (one PUT on an object store), so a writer that dies
or fails its checks leaves the previous version current, a reader never sees a half-written version, and
no folder is ever renamed: this works the same on a local disk and on an object store (the location may
be an ``s3://`` URL, see assets.locations). The current and the previous version are kept (a reader that opened the
previous one can finish); older versions, and versions of writers that died, are removed by the next
publish at the same location or by ``collect_garbage`` (``dozens gc``).

A one-file artifact (a model, the training pool, a benchmark's scores) is replaced whole in one step
(assets.atomic_files) and then *stamped*: ``<file>.version.json``, written last, names its data version
and its content hash. A pointer or a stamp is how the data version of whatever is on disk is known,
however it got there (a run, ``dvc checkout``, ``dvc pull``): orchestration.freshness reads them.
"""

import hashlib
import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from assets.atomic_files import process_exists, write_bytes_atomically
from assets.locations import (Location, cached_path, is_remote, keep_as_local_copy, local_copy, location as as_location,
                              read_bytes, remove, staging_path, upload)

POINTER = "current.json"
WRITING_MARK = ".writing"
STAMP_SUFFIX = ".version.json"
_VERSION_SUFFIX = ".zarr"


class NotPublishedError(FileNotFoundError):
    """Nothing has been published at an artifact location yet."""


class PointerError(ValueError):
    """An artifact pointer is unreadable or names a version that is not there."""


@dataclass(frozen=True)
class Published:
    location: Location
    version: str
    data_version: str | None
    previous: str | None
    published: str

    @property
    def path(self) -> Location:
        return self.location / self.version


def read_pointer(location) -> Published | None:
    """The published version at ``location``, or None when nothing was published there."""
    location = as_location(location)
    pointer = location / POINTER
    try:
        text = pointer.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
        published = Published(location, str(record["version"]), record.get("data_version"),
                              record.get("previous"), str(record.get("published", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise PointerError(f"{pointer}: not a valid artifact pointer ({type(exc).__name__}: {exc}); expected JSON "
                           f"with a 'version' field. Delete it and re-run the stage (or `dozens verify`)") from None
    if "/" in published.version or published.version in ("", ".", ".."):
        raise PointerError(f"{pointer}: field 'version' is {published.version!r}; expected a folder name in "
                           f"{location}")
    return published


def resolve(location) -> Location:
    """The current version's path; NotPublishedError if there is none."""
    published = read_pointer(location)
    if published is None:
        raise NotPublishedError(f"nothing published at {location} (no {POINTER}): run the stage that writes it")
    if not published.path.exists():
        raise PointerError(f"{location / POINTER} names version {published.version!r}, which is not in {location}; "
                           f"the artifact was damaged: re-run the stage that writes it")
    return published.path


def local_published(location, progress=None):
    """A local path for readers with random access (the training loader, the benchmark): ``location``
    itself when it is local, otherwise a cached local copy of its current version (assets.locations)."""
    location = as_location(location)
    return location if not is_remote(location) else local_copy(resolve(location), progress)


def published_data_version(location) -> str | None:
    """Data version of what is published at ``location`` (None: nothing, or an unreadable pointer)."""
    try:
        published = read_pointer(location)
    except PointerError:
        return None
    return published.data_version if published is not None and published.path.exists() else None


def stamp_path(path) -> Location:
    """Where the stamp of a one-file artifact (``stamp``) is: beside it, named after it."""
    path = as_location(path)
    return path.with_name(path.name + STAMP_SUFFIX)


def stamp(path, data_version: str) -> Location:
    """Record that the one-file artifact at ``path`` (a model, the training pool, scores), already written,
    has ``data_version``: a small file written after it, which names the content it vouches for (sha256),
    so that the data version of what is on disk is known after any restore (``dvc checkout``, ``dvc pull``)
    and a stamp never vouches for other content (a writer killed between the two writes)."""
    record = {"data_version": data_version, "sha256": _content_sha256(path)}
    return write_bytes_atomically(stamp_path(path), json.dumps(record, indent=1).encode())


def stamped_data_version(path) -> str | None:
    """The data version ``stamp`` recorded for the file at ``path``; None when the file or its stamp is
    missing or unreadable, or the file is not the content the stamp names."""
    try:
        record = json.loads(stamp_path(path).read_text())
        if not isinstance(record, dict) or record.get("sha256") != _content_sha256(path):
            return None
    except (FileNotFoundError, ValueError):
        return None
    version = record.get("data_version")
    return version if isinstance(version, str) else None


_LOCAL_DIGESTS: dict[tuple, str] = {}  # (path, inode, size, mtime) -> sha256: a plan reads each stamp twice


def _content_sha256(path) -> str:
    """sha256 of a file's content; a local file's is hashed once per content (files are replaced by rename,
    which gives them a new inode), however often a plan and its runs ask."""
    path = as_location(path)
    if is_remote(path):
        return hashlib.sha256(read_bytes(path)).hexdigest()
    status = path.stat()
    key = (str(path), status.st_ino, status.st_size, status.st_mtime_ns)
    if key not in _LOCAL_DIGESTS:
        _LOCAL_DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _LOCAL_DIGESTS[key]


class VersionWriter:
    """A new version at ``location``; ``publish()`` makes it current. Leaving the block unpublished discards it.

    ``path`` is where the caller writes the version (a folder or a file, as ``suffix`` says). For a location
    on an object store that is a local staging folder: the version is built and checked there, uploaded
    whole by ``publish()`` before the pointer is written, and then kept as the local cache's copy of it.
    """

    def __init__(self, location, data_version: str | None = None, suffix: str = _VERSION_SUFFIX, *,
                 resume: bool = False):
        self.location = as_location(location)
        self.data_version = data_version
        self.location.mkdir(parents=True, exist_ok=True)
        # ``resume``: take over the unpublished version of a writer of the same data version that died
        orphan = _orphan_of(self.location, data_version, suffix) if resume and data_version else None
        self.resumed = orphan is not None
        if orphan is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            orphan = f"{stamp}-{(data_version or 'unversioned')[:12]}-{uuid.uuid4().hex[:8]}{suffix}"
        self.name = orphan
        self.version_path = self.location / self.name
        self.path = _written_at(self.location, self.name)
        # the mark exists before the version does, so a concurrent prune never takes a version being written
        self._mark = self.location / (self.name + WRITING_MARK)
        write_bytes_atomically(self._mark, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                      "data_version": data_version}).encode())
        _remove_dead_writers(self.location)
        self.published = False

    def publish(self) -> Location:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: nothing was written, so nothing can be published")
        if self.path != self.version_path:
            upload(self.path, self.version_path)
        current = read_pointer_or_none(self.location)
        record = {"version": self.name, "data_version": self.data_version,
                  "previous": current.version if current is not None else None,
                  "published": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_bytes_atomically(self.location / POINTER, json.dumps(record, indent=1).encode())
        self.published = True
        remove(self._mark)
        if self.path != self.version_path:
            keep_as_local_copy(self.path, self.version_path)
        prune(self.location)
        return self.version_path

    def discard(self) -> None:
        remove(self.path)
        if self.path != self.version_path:
            remove(self.version_path)  # an upload cut short
        remove(self._mark)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.published:
            self.discard()
        return False


def read_pointer_or_none(location) -> Published | None:
    """Like read_pointer, but an unreadable pointer counts as none (a writer replaces it)."""
    try:
        return read_pointer(location)
    except PointerError:
        return None


def garbage(location) -> list[Location]:
    """What ``prune`` would remove at ``location``: versions the pointer does not reference, not being written."""
    location = as_location(location)
    if not location.is_dir():
        return []
    current = read_pointer_or_none(location)
    keep = {POINTER} | ({current.version, current.previous} if current is not None else set())
    marks = {p.name[:-len(WRITING_MARK)]: p for p in location.glob(f"*{WRITING_MARK}")}
    removable = []
    for entry in sorted(location.iterdir(), key=lambda entry: entry.name):
        name = entry.name
        if name in keep or name.endswith(WRITING_MARK):
            if name.endswith(WRITING_MARK) and name[:-len(WRITING_MARK)] in keep:
                removable.append(entry)  # a writer that died after publishing: its version is current
            continue
        if name.startswith(f".{POINTER}."):
            continue  # the pointer's temporary file (assets.atomic_files removes those of dead writers)
        mark = marks.get(name)
        if mark is not None and _writer_alive(mark):
            continue
        removable.append(entry)
        if mark is not None:
            removable.append(mark)
    orphan_marks = [m for n, m in marks.items() if not (location / n).exists() and not _writer_alive(m)]
    return sorted(set(removable) | set(orphan_marks), key=str)


def prune(location) -> list[Location]:
    removed = garbage(location)
    for path in removed:
        remove(path)
    return removed


def collect_garbage(root, *, dry_run: bool = False) -> list[Location]:
    """``prune`` every artifact location under ``root`` (folders holding a pointer or version marks)."""
    root = as_location(root)
    if not root.is_dir():
        return []
    found_locations = {p.parent for p in root.rglob(POINTER)} | {p.parent for p in root.rglob(f"*{WRITING_MARK}")}
    found = [path for where in sorted(found_locations, key=str) for path in garbage(where)]
    if not dry_run:
        for path in found:
            remove(path)
    return found


def stale_local_copies(root, *, dry_run: bool = False) -> list[Path]:
    """Local cache copies (assets.locations.local_copy) of versions under the object-store ``root`` that are
    no longer current or previous at their location; removed unless ``dry_run``."""
    root = as_location(root)
    if not is_remote(root):
        return []
    cached_root = cached_path(root, "objects")
    found = []
    for copy in sorted(cached_root.rglob(f"*{_VERSION_SUFFIX}")) if cached_root.is_dir() else []:
        remote_location = root / copy.parent.relative_to(cached_root).as_posix()
        current = read_pointer_or_none(remote_location)
        if current is None or copy.name not in (current.version, current.previous):
            found.append(copy)
    if not dry_run:
        for copy in found:
            remove(copy)
    return found


def _orphan_of(location: Location, data_version: str, suffix: str) -> str | None:
    """The newest version a dead writer of ``data_version`` left unpublished at ``location``, if any."""
    candidates = []
    for mark in location.glob(f"*{suffix}{WRITING_MARK}"):
        try:
            owner = json.loads(mark.read_text())
        except (OSError, ValueError):
            continue
        version = mark.name[:-len(WRITING_MARK)]
        if (owner.get("data_version") == data_version and not _writer_alive(mark)
                and _written_at(location, version).exists()):
            candidates.append(version)
    return max(candidates) if candidates else None  # names start with a UTC time stamp


def _remove_dead_writers(location: Location) -> None:
    for mark in location.glob(f"*{WRITING_MARK}"):
        if not _writer_alive(mark):
            version = mark.name[:-len(WRITING_MARK)]
            remove(location / version)
            remove(_written_at(location, version))
            remove(mark)


def _written_at(location: Location, version: str) -> Location:
    """Where a writer on this machine builds ``version``: in place locally, in local staging for an object store."""
    return staging_path(location / version) if is_remote(location) else location / version


def _writer_alive(mark: Location) -> bool:
    """True unless the mark's writer is known to be gone: same host, process no longer exists."""
    try:
        owner = json.loads(mark.read_text())
        host, pid = owner["host"], int(owner["pid"])
    except FileNotFoundError:
        return True  # published (or discarded) just now
    except (ValueError, KeyError, TypeError):
        return False  # a mark cut short by a kill
    return host != socket.gethostname() or process_exists(pid)

