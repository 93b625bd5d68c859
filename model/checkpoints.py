"""Reading model files and training checkpoints without trusting them.

Only tensors and plain data are unpickled (``weights_only``), because unpickling anything else can run
code that the file chose. A file that is empty, truncated, damaged, of another kind, or holds NaN or
infinite values raises ``CheckpointError`` naming the file, what is wrong and what to do, instead of an
``EOFError`` naming nothing or, worse, weights that train on into NaN.

``torch.load`` does not verify the checksums of the zip archive ``torch.save`` writes, so flipped bytes
in tensor data load as wrong numbers; the archive is checked here before it is unpickled.
"""

import math
import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from assets.locations import location, open_binary


class CheckpointError(ValueError):
    """A model file or training checkpoint that cannot be used; the message names the file and a remedy."""


@dataclass(frozen=True)
class FileKind:
    """What a loader expects; ``description`` has its article ("an ACAE file"), as messages use it."""

    description: str
    format_tag: str | None  # the payload's "format" entry; None: any dict (e.g. a bare state dict)
    version: int | None
    remedy: str


def model_file_kind(description: str, format_tag: str, version: int) -> FileKind:
    return FileKind(description, format_tag, version,
                    "Check that it is the intended file; re-run the step that wrote it, or restore an intact copy.")


def load_checked(path, kind: FileKind, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a ``torch.save``d dict of ``kind``, verified intact, of that kind and finite."""
    path = location(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file, expected {kind.description}")

    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {problem}. {kind.remedy}")

    if path.stat().st_size == 0:
        raise refuse(f"the file is empty, not {kind.description}")
    source = open_binary(path)  # an object-store file is read once, into memory
    damaged_record = _failed_zip_record(source)
    if damaged_record is not None:
        raise refuse(f"the file is damaged: {damaged_record}")
    if not isinstance(source, Path):
        source.seek(0)
    try:
        payload = torch.load(source, map_location=map_location, weights_only=True)
    except PermissionError:
        raise  # not the file's contents (torch reports some damaged archives as other OSErrors, though)
    except pickle.UnpicklingError as error:
        unsafe_global = re.search(r"GLOBAL (\S+)", str(error))
        if unsafe_global:
            raise refuse(f"it holds objects other than tensors and plain data (it refers to "
                         f"{unsafe_global.group(1)}), which are not loaded because unpickling them could run "
                         f"arbitrary code; not {kind.description}") from None
        raise refuse(f"the file is damaged or not {kind.description} (unpickling failed: "
                     f"{_unpickler_detail(error)})") from None
    except Exception as error:  # torch and pickle report a damaged file with many exception types
        raise refuse(f"the file is damaged or not {kind.description} "
                     f"({type(error).__name__}: {_summary(error)})") from error

    if not isinstance(payload, dict):
        raise refuse(f"not {kind.description} (it holds a {type(payload).__name__})")
    if kind.format_tag is not None and payload.get("format") != kind.format_tag:
        raise refuse(f"not {kind.description} (format tag {payload.get('format')!r}, "
                     f"expected {kind.format_tag!r})")
    if kind.version is not None and payload.get("version") != kind.version:
        raise refuse(f"format version {payload.get('version')} of {kind.description} is not supported "
                     f"(expected {kind.version})")
    non_finite = non_finite_entries(payload)
    if non_finite:
        raise refuse(f"it holds NaN or infinite values, in {listed(non_finite)}")
    return payload


@contextmanager
def reading_contents(path, kind: FileKind) -> Iterator[None]:
    """Turns errors of building an object from a loaded payload (missing entries, mismatched shapes)
    into a ``CheckpointError`` about the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: {kind.description} with inconsistent contents "
                              f"({type(error).__name__}: {_summary(error)}). {kind.remedy}") from error


def non_finite_entries(tree, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in nested dicts/lists/tuples that hold NaN or infinity."""
    if isinstance(tree, torch.Tensor):
        if (tree.is_floating_point() or tree.is_complex()) and not bool(torch.isfinite(tree).all()):
            return [prefix or "<tensor>"]
        return []
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [prefix or "<number>"]
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    found = []
    for key, value in items:
        found += non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def _failed_zip_record(path: Path | BinaryIO) -> str | None:
    """A description of the first damaged record of a zip archive; None if intact or not a zip (the
    legacy format, or garbage that ``torch.load`` will refuse)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as error:  # zipfile reports a damaged archive with many exception types
        return f"unreadable zip archive: {type(error).__name__}: {_summary(error)}"
    return None if bad is None else f"record {bad!r} does not match its checksum"


def _summary(error: BaseException) -> str:
    """The first sentence of an error message (torch appends paragraphs of general advice)."""
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else "no details"
    return first_line.split(". ")[0]


def _unpickler_detail(error: pickle.UnpicklingError) -> str:
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
    return detail.group(1).strip() if detail else _summary(error)


def listed(names: list[str], shown: int = 3) -> str:
    """The first few names, and how many more: messages stay readable for a model with thousands of tensors."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
