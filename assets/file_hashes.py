"""Content hashes of raw files, remembered by (path, size, modification time) as DVC's state database does.

Real releases are tens to hundreds of gigabytes; hashing every byte on every freshness check would make a
no-op run take hours. A file whose size and modification time (nanoseconds) are unchanged since it was
hashed keeps its hash; anything else is read again.
"""

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

from assets.locations import cache_root, is_remote

_BLOCK = 1 << 20


class FileHashCache:
    """sha256 of files, cached in a SQLite file (safe for several processes)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.bytes_read = 0  # content actually read by this object (tests and progress use it)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(str(self.path), timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                       "sha256 TEXT)")
            self._local.db = db
        return db

    def digest(self, file: Path) -> str:
        file = Path(file).resolve()
        stat = file.stat()
        db = self._db()
        row = db.execute("SELECT size, mtime_ns, sha256 FROM hashes WHERE path = ?", (str(file),)).fetchone()
        if row is not None and row[0] == stat.st_size and row[1] == stat.st_mtime_ns:
            return row[2]
        digest = self.read_digest(file)
        with db:
            db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                       (str(file), stat.st_size, stat.st_mtime_ns, digest))
        return digest

    def read_digest(self, file: Path) -> str:
        digest = hashlib.sha256()
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                digest.update(block)
                self.bytes_read += len(block)
        return digest.hexdigest()


def file_digest(file: Path, cache: FileHashCache | None) -> str:
    if cache is not None:
        return cache.digest(file)
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_paths(paths, extra: str = "", cache: FileHashCache | None = None) -> str:
    """sha256 over the relative paths and content hashes of all files under ``paths`` (files or folders)."""
    digest = hashlib.sha256(extra.encode())
    for root in sorted(Path(p) for p in paths):
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        for f in files:
            digest.update(f.relative_to(root.parent).as_posix().encode() + b"\0")
            digest.update(file_digest(f, cache).encode() + b"\1")
    return digest.hexdigest()


def default_cache_path(store_root) -> Path:
    """Where a pipeline keeps its raw-file hashes (a local SQLite file): beside local stores, out of any
    artifact location; in the local cache folder when the stores are on an object store."""
    name = f"file_hashes-{os.uname().nodename}.sqlite"
    if is_remote(store_root):
        return cache_root() / name
    return Path(store_root) / ".cache" / name
