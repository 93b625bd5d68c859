"""Where artifacts live: a local folder (the default) or an object store named by URL (``s3://bucket/prefix``).

Every artifact path of the pipeline is a *location*: a ``pathlib.Path`` for a local folder, a
``upath.UPath`` (fsspec underneath; s3fs for ``s3://``) for an object store. Both have the same path API
(``/``, ``exists``, ``read_text``, ``glob``, ...); what differs is here, and nowhere else:

- writing one object so that readers see the old or the new content (``assets.atomic_files`` calls
  ``put_object`` for remote locations: one PUT replaces an object atomically);
- removing a version (a folder locally, every object under a prefix remotely);
- opening a Zarr store on it;
- a local copy of an immutable published version (``local_copy``): readers with random access (the
  training loader, the benchmark) read a remote store from the local cache instead of making one request
  per example. Versions never change once published (assets.versions), so a copy named after the version
  is never stale.

Object-store credentials and endpoints come from the usual environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for S3-compatible stores, ...).
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from upath import UPath

# fsspec and upath are imported only where a URL is used: every process that loads the definitions
# would otherwise pay for them
Location = Union[Path, "UPath"]
# not DOZENS_CACHE: that one is the download cache of the real recording (assets/real/cache.py)
CACHE_ENV = "DOZENS_ARTIFACT_CACHE"
_LOCAL_PROTOCOLS = ("", "file", "local")
# listings are not cached: another process (a Dagster run, another machine) may publish at any time
_STORAGE_OPTIONS = {"use_listings_cache": False}


def location(value) -> Location:
    """The location ``value`` names: a local ``Path``, or a ``UPath`` for a URL such as ``s3://bucket/x``."""
    if isinstance(value, Path):  # a local UPath is a Path too
        return value
    if hasattr(value, "protocol") and hasattr(value, "fs"):  # a remote UPath
        return Path(value.path) if value.protocol in _LOCAL_PROTOCOLS else value
    text = os.fspath(value)
    if not is_url(text):
        return Path(text.removeprefix("file://"))
    from upath import UPath

    return UPath(text, **_STORAGE_OPTIONS)


def is_remote(value) -> bool:
    return not isinstance(location(value), Path)


def is_url(text: str) -> bool:
    return "://" in str(text) and not str(text).startswith("file://")


def put_object(target: UPath, content: bytes) -> None:
    """One PUT: the object is replaced as a whole or not at all (multipart uploads complete atomically)."""
    target.fs.pipe_file(target.path, content)


def put_with(target: UPath, write) -> None:
    """``write(handle)`` into memory, then one PUT (a writer that fails writes nothing)."""
    buffer = io.BytesIO()
    write(buffer)
    put_object(target, buffer.getvalue())


def read_bytes(value) -> bytes:
    return location(value).read_bytes()


def open_binary(value):
    """A readable binary file for ``torch.load``, ``pl.read_parquet`` and the like (a local path stays a path)."""
    where = location(value)
    return where if isinstance(where, Path) else io.BytesIO(where.read_bytes())


def remove(value) -> None:
    """Remove a file or a whole folder / prefix; a missing one is not an error."""
    where = location(value)
    if isinstance(where, Path):
        if where.is_dir() and not where.is_symlink():
            shutil.rmtree(where, ignore_errors=True)
        else:
            where.unlink(missing_ok=True)
        return
    try:
        where.fs.rm(where.path, recursive=True)
    except FileNotFoundError:
        pass


def tree_size(value) -> int:
    """Bytes of all files under a folder / prefix (or of one file)."""
    where = location(value)
    if isinstance(where, Path):
        if where.is_file():
            return where.stat().st_size
        return sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
    return int(where.fs.du(where.path, total=True))


def zarr_store(value, *, read_only: bool):
    """A Zarr v3 store on the location (local folder or object-store prefix)."""
    from zarr.storage import FsspecStore, LocalStore

    where = location(value)
    if isinstance(where, Path):
        return LocalStore(where, read_only=read_only)
    # zarr wants its own asynchronous file system instance (the path API's one is synchronous)
    return FsspecStore.from_url(str(where), storage_options=dict(where.storage_options), read_only=read_only)


def cache_root() -> Path:
    """Local folder for copies of remote versions and per-machine caches ($DOZENS_ARTIFACT_CACHE, or
    ~/.cache/dozens/artifacts)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "dozens" / "artifacts"


def cached_path(where: UPath, kind: str) -> Path:
    """Where the local cache keeps ``kind`` ("objects": copies, "staging": versions being built) of ``where``."""
    return cache_root() / kind / where.protocol / where.path.strip("/")


def staging_path(version: UPath) -> Path:
    """The local folder where a version for an object store is built before it is uploaded."""
    return cached_path(version, "staging")


def upload(local: Path, target: UPath) -> None:
    """Copy a local file or folder to the object store (s3fs sends the files concurrently)."""
    if local.is_dir():
        target.fs.put(str(local).rstrip("/") + "/", target.path.rstrip("/") + "/", recursive=True)
    else:
        target.fs.put_file(str(local), target.path)


def keep_as_local_copy(local: Path, version: UPath) -> None:
    """Make an uploaded version's local staging folder the cache's copy of it (``local_copy``)."""
    cached = cached_path(version, "objects")
    if cached.exists():
        remove(local)
        return
    cached.parent.mkdir(parents=True, exist_ok=True)
    os.replace(local, cached)


def local_copy(version, progress=None) -> Path:
    """A local path with the content of the immutable version at ``version``: the path itself when local,
    otherwise a copy in the cache, downloaded once (into a temporary folder renamed into place)."""
    where = location(version)
    if isinstance(where, Path):
        return where
    cached = cached_path(where, "objects")
    if cached.exists():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}.partial")
    if progress is not None:
        progress(f"copying {where} to the local cache {cached}")
    try:
        if where.is_dir():
            where.fs.get(where.path.rstrip("/") + "/", str(partial), recursive=True)
        else:
            where.fs.get_file(where.path, str(partial))
        os.replace(partial, cached)
    except OSError:
        if cached.exists():  # another process finished the same copy first
            remove(partial)
            return cached
        remove(partial)
        raise
    return cached
