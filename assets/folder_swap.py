"""Replacing a local folder as a whole (raw folders that acquisition builds): build aside, swap in.

Pipeline artifacts do not use this: they are published versions (assets.versions). A raw folder is read
by path, so it is replaced by two renames; a process killed between or after them leaves a backup that
the next replacement of the same folder puts back or removes.
"""

import os
import re
import shutil
import socket
import uuid
from pathlib import Path

from assets.atomic_files import process_exists

_BACKUP_MARK = ".old-"
_TMP_MARK = ".tmp-"


def staging_path(final) -> Path:
    """A new sibling of ``final`` to build it in: ``<name>.tmp-<host>-<pid>-<id>``.

    Half-built folders that earlier writers of the same path left on this host, from processes that no
    longer exist, are removed here; those of live processes and of other hosts are left alone.
    """
    final = Path(final)
    host = socket.gethostname()
    owner_pattern = re.compile(rf"{re.escape(final.name + _TMP_MARK)}(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+")
    for leftover in final.parent.glob(f"{final.name}{_TMP_MARK}*"):
        owner = owner_pattern.fullmatch(leftover.name)
        if owner and owner["host"] == host and not process_exists(int(owner["pid"])):
            shutil.rmtree(leftover, ignore_errors=True)
    return final.with_name(f"{final.name}{_TMP_MARK}{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def swap_into_place(tmp: Path, final: Path) -> None:
    """Replace ``final`` by the folder ``tmp``; the old one is deleted only once the new one is in place."""
    final = Path(final)
    backups = sorted(final.parent.glob(final.name + _BACKUP_MARK + "*"), key=lambda p: p.stat().st_mtime)
    if backups and not final.exists():
        os.replace(backups.pop(), final)  # a swap died between its renames: the newest backup is the folder
    for stale in backups:  # a swap died after its second rename
        shutil.rmtree(stale, ignore_errors=True)
    backup = None
    if final.exists():
        backup = final.with_name(f"{final.name}{_BACKUP_MARK}{uuid.uuid4().hex[:8]}")
        os.replace(final, backup)
    try:
        os.replace(tmp, final)
    except OSError:
        if backup is not None:
            os.replace(backup, final)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
