"""The canonical dataset store: one Zarr v3 group per dataset, one example = one person in one image.

Writes are atomic: a store is built in ``<name>.zarr.tmp-<host>-<pid>-<id>`` next to its final path,
validated, and only then swapped in, so a write that dies half-way leaves the previous store as it was
(and the next write of that path removes the dead writer's half-built folder).
Reads are lazy: opening a store reads metadata only; one example reads one chunk per array.
"""

import hashlib
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import zarr

from assets.skeletons import get_skeleton

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
_BACKUP_MARK = ".old-"
_TMP_MARK = ".tmp-"
_META_ROWS_PER_CHUNK = 4096
_IMAGES_PER_SHARD = 256


class StoreSchemaError(ValueError):
    """A store (or data about to become one) does not match the canonical schema."""


@dataclass(frozen=True)
class ArraySpec:
    dtype: str
    trailing_shape: tuple  # symbolic: "J" joints, "S" image side, or ints
    required: bool = True


ARRAY_SPECS: dict[str, ArraySpec] = {
    "pose3d": ArraySpec("float32", ("J", 3)),
    "pose2d": ArraySpec("float32", ("J", 2)),
    "joint_valid": ArraySpec("bool", ("J",)),
    "intrinsics": ArraySpec("float32", (3, 3)),
    "distortion": ArraySpec("float32", (5,)),
    "extrinsics": ArraySpec("float32", (4, 4)),
    "image": ArraySpec("uint8", ("S", "S", 3)),
    "bbox": ArraySpec("float32", (4,)),
    "split": ArraySpec("int8", ()),
    "subject": ArraySpec("int32", ()),
    "sequence": ArraySpec("int32", ()),
    "frame": ArraySpec("int32", ()),
    "camera": ArraySpec("int32", ()),
    # per-joint detector confidence, for datasets made of 2D detections
    "confidence2d": ArraySpec("float32", ("J",), required=False),
}
CODED_FIELDS = ("subject", "sequence", "camera")
REQUIRED_ATTRS = ("dataset", "skeleton", "joint_names", "units", "converter", "converter_version",
                  "raw_fingerprint", "image_size", "codes")


def expected_shape(name: str, n: int, num_joints: int, image_size: int) -> tuple:
    sizes = {"J": num_joints, "S": image_size}
    return (n, *(sizes.get(d, d) for d in ARRAY_SPECS[name].trailing_shape))


def validate_schema(arrays: dict, attrs: dict, where: str = "store") -> None:
    """Raise StoreSchemaError naming the array/attribute and what was expected."""
    missing_attrs = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing_attrs:
        raise StoreSchemaError(f"{where}: missing attributes {missing_attrs}")
    if attrs.get("units") != "mm":
        raise StoreSchemaError(f"{where}: attribute 'units' must be 'mm', got {attrs.get('units')!r}")
    skeleton = get_skeleton(attrs["skeleton"])
    if list(attrs["joint_names"]) != list(skeleton.joint_names):
        raise StoreSchemaError(
            f"{where}: attribute 'joint_names' does not match skeleton {skeleton.name!r} "
            f"(expected {list(skeleton.joint_names)}, got {list(attrs['joint_names'])})"
        )
    for name, spec in ARRAY_SPECS.items():
        if spec.required and name not in arrays:
            raise StoreSchemaError(f"{where}: missing array {name!r}")
    unknown = sorted(set(arrays) - set(ARRAY_SPECS))
    if unknown:
        raise StoreSchemaError(f"{where}: unknown arrays {unknown}; the schema has {sorted(ARRAY_SPECS)}")
    n = arrays["pose3d"].shape[0]
    for name, arr in arrays.items():
        shape = expected_shape(name, n, skeleton.num_joints, int(attrs["image_size"]))
        if tuple(arr.shape) != shape:
            raise StoreSchemaError(
                f"{where}: array {name!r} has shape {tuple(arr.shape)}, expected {shape} "
                f"(N={n} examples, J={skeleton.num_joints} joints of {skeleton.name}, S={attrs['image_size']})"
            )
        if str(arr.dtype) != ARRAY_SPECS[name].dtype:
            raise StoreSchemaError(f"{where}: array {name!r} has dtype {arr.dtype}, expected {ARRAY_SPECS[name].dtype}")
    codes = attrs["codes"]
    for field in CODED_FIELDS:
        if field not in codes:
            raise StoreSchemaError(f"{where}: attribute 'codes' lacks the code table for {field!r}")


def _validate_values(arrays: dict, attrs: dict, where: str) -> None:
    split = np.asarray(arrays["split"][:])
    if split.size and (split.min() < 0 or split.max() >= len(SPLITS)):
        raise StoreSchemaError(f"{where}: array 'split' has codes outside 0..{len(SPLITS) - 1} ({SPLITS})")
    for field in CODED_FIELDS:
        values = np.asarray(arrays[field][:])
        table = attrs["codes"][field]
        if values.size and (values.min() < 0 or values.max() >= len(table)):
            raise StoreSchemaError(
                f"{where}: array {field!r} has codes outside its code table of {len(table)} entries"
            )
    intr = np.asarray(arrays["intrinsics"][:])
    if not np.all(np.isfinite(intr)):
        bad = np.flatnonzero(~np.isfinite(intr).all(axis=(1, 2)))
        raise StoreSchemaError(f"{where}: array 'intrinsics' has non-finite values at examples {bad[:10].tolist()}")


def fingerprint_paths(paths, extra: str = "") -> str:
    """sha256 over relative paths and contents of all files under ``paths`` (files or folders)."""
    digest = hashlib.sha256(extra.encode())
    for root in sorted(Path(p) for p in paths):
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        for f in files:
            rel = f.relative_to(root.parent).as_posix()
            digest.update(rel.encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\1")
    return digest.hexdigest()


def _chunking(name: str, shape: tuple) -> dict:
    if name == "image":
        # one example per inner chunk for random access; shards keep the file count low (DVC hashes files)
        return {"chunks": (1, *shape[1:]), "shards": (min(_IMAGES_PER_SHARD, max(shape[0], 1)), *shape[1:])}
    return {"chunks": (min(_META_ROWS_PER_CHUNK, max(shape[0], 1)), *shape[1:])}


def recover_interrupted_swap(path: Path) -> None:
    """If a swap died between its two renames, put the previous store back."""
    path = Path(path)
    if path.exists():
        return
    backups = sorted(path.parent.glob(path.name + _BACKUP_MARK + "*"), key=lambda p: p.stat().st_mtime)
    if backups:
        os.replace(backups[-1], path)


class StoreWriter:
    """Builds a store in a temporary folder; ``commit()`` validates and swaps it into place.

    Use as a context manager: leaving the block with an exception discards the temporary folder.
    Arrays are created up front with their final shape, and filled in slices, so a converter can
    stream images without holding the whole dataset in memory.
    """

    def __init__(self, path, num_examples: int, attrs: dict, *, optional_arrays=()):
        self.path = Path(path)
        self.num_examples = int(num_examples)
        self.attrs = dict(attrs)
        skeleton = get_skeleton(self.attrs["skeleton"])
        self.attrs.setdefault("joint_names", list(skeleton.joint_names))
        self.attrs.setdefault("units", "mm")
        self.attrs["schema_version"] = SCHEMA_VERSION
        self.names = [n for n, s in ARRAY_SPECS.items() if s.required or n in optional_arrays]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = staging_path(self.path)
        self.group = zarr.open_group(str(self.tmp_path), mode="w", zarr_format=3)
        self.arrays = {}
        for name in self.names:
            shape = expected_shape(name, self.num_examples, skeleton.num_joints, int(self.attrs["image_size"]))
            fill = np.nan if ARRAY_SPECS[name].dtype == "float32" else 0
            self.arrays[name] = self.group.create_array(
                name, shape=shape, dtype=ARRAY_SPECS[name].dtype, fill_value=fill, **_chunking(name, shape)
            )
        self._committed = False

    def write(self, start: int, **arrays) -> None:
        for name, value in arrays.items():
            if name not in self.arrays:
                raise StoreSchemaError(f"{self.tmp_path}: cannot write unknown array {name!r}")
            value = np.asarray(value)
            target = self.arrays[name]
            if value.shape[1:] != target.shape[1:]:
                raise StoreSchemaError(
                    f"{self.path}: array {name!r} rows have shape {value.shape[1:]}, expected {target.shape[1:]}"
                )
            target[start:start + len(value)] = value.astype(target.dtype, copy=False)

    def commit(self) -> Path:
        where = f"store {self.path}"
        validate_schema(self.arrays, self.attrs, where)
        _validate_values(self.arrays, self.attrs, where)
        split = self.arrays["split"][:]
        self.attrs["counts"] = {s: int(np.sum(split == i)) for i, s in enumerate(SPLITS)}
        self.attrs["num_examples"] = self.num_examples
        self.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.group.attrs.update(self.attrs)
        swap_into_place(self.tmp_path, self.path)
        self._committed = True
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp_path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._committed:
            self.abort()
        return False


def staging_path(final) -> Path:
    """A new sibling of ``final`` to build it in before ``swap_into_place``: ``<name>.tmp-<host>-<pid>-<id>``.

    A writer killed outright gets no chance to delete its half-built folder, and a dataset store can be
    gigabytes; so the folders that earlier writers of the same path left on this host, from processes
    that no longer exist, are removed here. Folders of live processes (a concurrent writer) and of other
    hosts (a shared disk) are left alone.
    """
    final = Path(final)
    host = socket.gethostname()
    owner_pattern = re.compile(rf"{re.escape(final.name + _TMP_MARK)}(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+")
    for leftover in final.parent.glob(f"{final.name}{_TMP_MARK}*"):
        owner = owner_pattern.fullmatch(leftover.name)
        if owner and owner["host"] == host and not _process_exists(int(owner["pid"])):
            shutil.rmtree(leftover, ignore_errors=True)
    return final.with_name(f"{final.name}{_TMP_MARK}{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def swap_into_place(tmp: Path, final: Path) -> None:
    """Replace ``final`` by the folder ``tmp``; the old one is deleted only once the new one is in place."""
    recover_interrupted_swap(final)
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


def write_store(path, arrays: dict, attrs: dict) -> Path:
    """Write a whole in-memory dataset atomically."""
    n = len(arrays["pose3d"])
    optional = [k for k in arrays if not ARRAY_SPECS.get(k, ArraySpec("", ())).required]
    where = f"data for store {path}"
    probe_attrs = {**attrs, "joint_names": attrs.get("joint_names", list(get_skeleton(attrs["skeleton"]).joint_names)),
                   "units": attrs.get("units", "mm")}
    validate_schema({k: np.asarray(v) for k, v in arrays.items()}, probe_attrs, where)
    with StoreWriter(path, n, attrs, optional_arrays=optional) as writer:
        writer.write(0, **arrays)
        return writer.commit()


def build_index(arrays, attrs: dict) -> pl.DataFrame:
    """One row per example, for querying and for sampling across datasets (reads only small arrays)."""
    codes = attrs["codes"]
    valid = np.asarray(arrays["joint_valid"][:])
    pose3d_labelled = np.isfinite(np.asarray(arrays["pose3d"][:])).all(axis=-1) & valid
    split = np.asarray(arrays["split"][:])
    frame = {
        "example": np.arange(len(split), dtype=np.int64),
        "dataset": [attrs["dataset"]] * len(split),
        "split": [SPLITS[i] for i in split],
        "frame": np.asarray(arrays["frame"][:]),
        "num_valid_2d": valid.sum(axis=1).astype(np.int32),
        "num_valid_3d": pose3d_labelled.sum(axis=1).astype(np.int32),
    }
    for field in CODED_FIELDS:
        table = codes[field]
        frame[field] = [table[i] for i in np.asarray(arrays[field][:])]
    return pl.DataFrame(frame)


class DatasetStore:
    """Read access to one canonical store. Arrays are zarr arrays: slicing reads only what it needs."""

    def __init__(self, path):
        self.path = Path(path)
        recover_interrupted_swap(self.path)
        if not (self.path / "zarr.json").exists():
            raise FileNotFoundError(f"no dataset store at {self.path} (expected a Zarr v3 group with zarr.json)")
        self.group = zarr.open_group(str(self.path), mode="r")
        self.attrs = dict(self.group.attrs)
        arrays = {name: self.group[name] for name in self.group.array_keys()}
        validate_schema(arrays, self.attrs, f"store {self.path}")
        self._arrays = arrays

    def __len__(self) -> int:
        return int(self.attrs["num_examples"])

    @property
    def skeleton(self):
        return get_skeleton(self.attrs["skeleton"])

    @property
    def array_names(self) -> list[str]:
        return sorted(self._arrays)

    def __getitem__(self, name: str):
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"store {self.path} has no array {name!r}; it has {self.array_names}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def example(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"example {i} out of range for store {self.path} with {len(self)} examples")
        return {name: arr[i] for name, arr in self._arrays.items()}

    def load(self, name: str) -> np.ndarray:
        return self[name][:]

    def index(self) -> pl.DataFrame:
        return build_index(self._arrays, self.attrs)

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.load("split") == SPLITS.index(split))


def open_store(path) -> DatasetStore:
    return DatasetStore(path)
