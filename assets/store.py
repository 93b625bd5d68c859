"""The canonical dataset store: one Zarr v3 group per dataset, one example = one person in one image.

A store location holds immutable versions and a pointer to the current one (assets.versions): a new
version is written, validated, optionally gated by checks, and only then published, so a write that dies
or fails leaves the previous store current. Every chunk carries a CRC32C checksum and every chunk file is
written, so damage is found when read (or by ``DatasetStore.verify``), with an error naming store,
array and chunk. Reads are lazy: opening a store reads metadata and lists chunk files; one example reads
one chunk per array.
"""

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
import numpy as np
import polars as pl
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.sync import sync

from assets.skeletons import get_skeleton
from assets.atomic_files import write_bytes_atomically
from assets.locations import Location, location as as_location, remove, zarr_store
from assets.versions import POINTER, NotPublishedError, VersionWriter, resolve

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
_META_ROWS_PER_CHUNK = 4096
IMAGES_PER_SHARD = 256
_PROGRESS_FILE = "writer_progress.json"


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


class StoreWriter:
    """Builds a new version of a store at ``location``; ``commit()`` validates and publishes it.

    Use as a context manager: leaving the block unpublished (an exception, a failed gate) discards the
    version, and the previously published store stays current (assets.versions). Arrays are created up
    front with their final shape and filled in slices, so a converter can stream images without holding
    the whole dataset in memory.
    """

    def __init__(self, location, num_examples: int, attrs: dict, *, optional_arrays=(),
                 data_version: str | None = None, resume: bool = False):
        self.location = as_location(location)
        self.num_examples = int(num_examples)
        self.attrs = dict(attrs)
        skeleton = get_skeleton(self.attrs["skeleton"])
        self.attrs.setdefault("joint_names", list(skeleton.joint_names))
        self.attrs.setdefault("units", "mm")
        self.attrs["schema_version"] = SCHEMA_VERSION
        self.names = [n for n, s in ARRAY_SPECS.items() if s.required or n in optional_arrays]
        self._version = VersionWriter(self.location, data_version, resume=resume)
        self.path = self._version.path
        shapes = {name: expected_shape(name, self.num_examples, skeleton.num_joints, int(self.attrs["image_size"]))
                  for name in self.names}
        try:
            self.resume_from = self._written_so_far(shapes) if self._version.resumed else 0
            if self.resume_from == 0:
                self.group = zarr.open_group(store=zarr_store(self.path, read_only=False), mode="w", zarr_format=3)
                self.arrays = {}
                for name, shape in shapes.items():
                    fill = np.nan if ARRAY_SPECS[name].dtype == "float32" else 0
                    self.arrays[name] = self.group.create_array(
                        name, shape=shape, dtype=ARRAY_SPECS[name].dtype, fill_value=fill, **array_layout(name, shape))
        except BaseException:
            self._version.discard()
            raise
        self._finished = False

    def _written_so_far(self, shapes: dict) -> int:
        """Examples a dead writer of this version wrote (0: start over), opening its arrays to go on."""
        try:
            done = int(json.loads((self.path / _PROGRESS_FILE).read_text())["examples_written"])
            self.group = zarr.open_group(store=zarr_store(self.path, read_only=False), mode="r+")
            self.arrays = {name: self.group[name] for name in self.names}
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        if any(tuple(self.arrays[name].shape) != shape for name, shape in shapes.items()):
            return 0
        return min(max(done, 0), self.num_examples)

    def mark_written(self, count: int) -> None:
        """Record that the first ``count`` examples are written: a restart after a kill goes on from there."""
        write_bytes_atomically(self.path / _PROGRESS_FILE, json.dumps({"examples_written": int(count)}).encode())

    def write(self, start: int, **arrays) -> None:
        for name, value in arrays.items():
            if name not in self.arrays:
                raise StoreSchemaError(f"{self.path}: cannot write unknown array {name!r}")
            value = np.asarray(value)
            target = self.arrays[name]
            if value.shape[1:] != target.shape[1:]:
                raise StoreSchemaError(
                    f"{self.location}: array {name!r} rows have shape {value.shape[1:]}, expected {target.shape[1:]}"
                )
            target[start:start + len(value)] = value.astype(target.dtype, copy=False)

    def finish(self) -> Location:
        """Validate and complete the new version without publishing it: the path checks can read."""
        if not self._finished:
            where = f"store {self.location}"
            validate_schema(self.arrays, self.attrs, where)
            _validate_values(self.arrays, self.attrs, where)
            split = self.arrays["split"][:]
            self.attrs["counts"] = {s: int(np.sum(split == i)) for i, s in enumerate(SPLITS)}
            self.attrs["num_examples"] = self.num_examples
            self.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.group.attrs.update(self.attrs)
            remove(self.path / _PROGRESS_FILE)
            self._finished = True
        return self.path

    def commit(self, gate: Callable[[Location], None] | None = None) -> Location:
        """Finish, let ``gate`` inspect the finished version (it raises to refuse it), then publish."""
        staged = self.finish()
        if gate is not None:
            gate(staged)
        return self._version.publish()

    def abort(self) -> None:
        self._version.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._version.published:
            self.abort()
        return False


def array_layout(name: str, shape: tuple) -> dict:
    """Chunking and codecs of a store array: checksummed chunks, all of them written."""
    layout = {"compressors": (ZstdCodec(level=0), Crc32cCodec()),
              # chunks equal to the fill value are written too, so a missing chunk file is damage, not "empty"
              "config": {"write_empty_chunks": True}}
    if name == "image":
        # one example per inner chunk for random access; shards keep the file count low (DVC hashes files)
        return {**layout, "chunks": (1, *shape[1:]), "shards": (min(IMAGES_PER_SHARD, max(shape[0], 1)), *shape[1:])}
    return {**layout, "chunks": (min(_META_ROWS_PER_CHUNK, max(shape[0], 1)), *shape[1:])}


def write_store(path, arrays: dict, attrs: dict, *, data_version: str | None = None,
                gate: Callable[[Location], None] | None = None) -> Location:
    """Write a whole in-memory dataset as a new version of the store at ``path``, and publish it."""
    n = len(arrays["pose3d"])
    optional = [k for k in arrays if not ARRAY_SPECS.get(k, ArraySpec("", ())).required]
    where = f"data for store {path}"
    probe_attrs = {**attrs, "joint_names": attrs.get("joint_names", list(get_skeleton(attrs["skeleton"]).joint_names)),
                   "units": attrs.get("units", "mm")}
    validate_schema({k: np.asarray(v) for k, v in arrays.items()}, probe_attrs, where)
    with StoreWriter(path, n, attrs, optional_arrays=optional, data_version=data_version) as writer:
        writer.write(0, **arrays)
        return writer.commit(gate)


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


class StoreCorruptionError(StoreSchemaError):
    """A store's files are damaged: a chunk fails its checksum, is missing, or its metadata is unreadable."""


_ROWS_PER_SLICE = 512  # span of example indices one slice of ``CheckedArray.read_rows`` covers


class CheckedArray:
    """A store array whose read errors name the store, the array and the chunks involved."""

    def __init__(self, array: zarr.Array, store_path: Location, name: str):
        self._array = array
        self._store_path = store_path
        self.name = name

    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    chunks = property(lambda self: self._array.chunks)

    def __len__(self) -> int:
        return self._array.shape[0]

    def __getitem__(self, key):
        return self._read(self._array.__getitem__, key)

    def get_orthogonal_selection(self, selection):
        return self._read(self._array.get_orthogonal_selection, selection)

    def read_rows(self, rows) -> np.ndarray:
        """The examples ``rows`` (indices in any order), read as a few contiguous slices: zarr reads a
        selection of rows one chunk at a time, which for sharded images costs ~20x the slice reads."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        blocks, start = [], 0
        while start < len(ordered):
            end = int(np.searchsorted(ordered, ordered[start] + _ROWS_PER_SLICE, side="left"))
            first, last = int(ordered[start]), int(ordered[end - 1])
            blocks.append(self[first:last + 1][ordered[start:end] - first])
            start = end
        if not blocks:
            return self.get_orthogonal_selection((rows,))
        values = np.concatenate(blocks)
        out = np.empty_like(values)
        out[order] = values
        return out

    @property
    def oindex(self):
        return _OrthogonalIndex(self)

    def _read(self, reader, key):
        try:
            return reader(key)
        except Exception as exc:
            raise StoreCorruptionError(
                f"store {self._store_path}: array {self.name!r}, {self._chunks_of(key)}: unreadable "
                f"({type(exc).__name__}: {exc}). The store is damaged: `dozens verify` lists the damage; "
                f"re-convert the dataset with --force") from exc

    def _chunks_of(self, key) -> str:
        rows = key[0] if isinstance(key, tuple) and key else key
        per_chunk = self._array.chunks[0]
        if isinstance(rows, (int, np.integer)):
            return f"example {int(rows)} (chunk {int(rows) // per_chunk})"
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(self._array.shape[0])
            return f"examples {start}..{stop - 1} (chunks {start // per_chunk}..{max(stop - 1, 0) // per_chunk})"
        return "a selection of examples"

    def __array__(self, dtype=None, copy=None):
        values = self[:]
        return values if dtype is None else values.astype(dtype)


class _OrthogonalIndex:
    def __init__(self, array: CheckedArray):
        self._checked = array

    def __getitem__(self, selection):
        return self._checked.get_orthogonal_selection(selection)


def missing_chunk_files(group: zarr.Group, name: str) -> list[str]:
    """Chunk (or shard) files of array ``name`` that a complete store has and this one lacks."""
    array = group[name]
    per_file = array.shards or array.chunks
    grid = [range(-(-size // step)) for size, step in zip(array.shape, per_file)]
    expected = {f"{name}/{array.metadata.encode_chunk_key(coords)}" for coords in itertools.product(*grid)}
    base = f"{group.store_path.path}/" if group.store_path.path else ""
    present = {key[len(base):] for key in sync(_list_keys(group.store, f"{base}{name}/"))}
    return sorted(expected - present)


async def _list_keys(store, prefix: str) -> list[str]:
    return [key async for key in store.list_prefix(prefix)]


class DatasetStore:
    """Read access to one canonical store. Arrays are zarr arrays: slicing reads only what it needs.

    ``path`` may be a store location (its published version is opened) or a version folder itself.
    """

    def __init__(self, path):
        self.location = as_location(path)
        if (self.location / "zarr.json").exists():
            self.path = self.location
            self._open()
            return
        self.path = resolve_version(self.location)
        while True:
            try:
                self._open()
                return
            except (FileNotFoundError, StoreSchemaError):
                # the version was current when resolved, then superseded twice and pruned while it was being
                # opened (a busy writer): open the one published now; a damaged current version still raises
                current = resolve_version(self.location)
                if current == self.path:
                    raise
                self.path = current

    def _open(self) -> None:
        if not (self.path / "zarr.json").exists():
            raise FileNotFoundError(f"no dataset store at {self.path} (expected a Zarr v3 group with zarr.json)")
        try:
            self.group = zarr.open_group(store=zarr_store(self.path, read_only=True), mode="r")
            self.attrs = dict(self.group.attrs)
            names = list(self.group.array_keys())
        except Exception as exc:
            raise StoreCorruptionError(f"store {self.path}: metadata unreadable ({type(exc).__name__}: {exc}); "
                                       f"re-convert the dataset with --force") from exc
        arrays = {}
        for name in names:
            try:
                arrays[name] = self.group[name]
            except Exception as exc:
                raise StoreCorruptionError(f"store {self.path}: array {name!r}: metadata unreadable "
                                           f"({type(exc).__name__}: {exc})") from exc
        validate_schema(arrays, self.attrs, f"store {self.path}")
        for name in names:
            missing = missing_chunk_files(self.group, name)
            if missing:
                raise StoreCorruptionError(
                    f"store {self.path}: array {name!r} lacks {len(missing)} chunk file(s) ({', '.join(missing[:3])}"
                    f"{', ...' if len(missing) > 3 else ''}): the store is damaged; re-convert the dataset with --force")
        self._arrays = {name: CheckedArray(array, self.path, name) for name, array in arrays.items()}

    def __len__(self) -> int:
        return int(self.attrs["num_examples"])

    @property
    def skeleton(self):
        return get_skeleton(self.attrs["skeleton"])

    @property
    def array_names(self) -> list[str]:
        return sorted(self._arrays)

    def __getitem__(self, name: str) -> CheckedArray:
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

    def verify(self, progress: Callable[[str], None] | None = None) -> int:
        """Read every chunk of every array (checksums are checked on read); returns the bytes read."""
        total = 0
        for name, array in self._arrays.items():
            step = array.chunks[0]
            for start in range(0, len(array), step):
                total += array[start:start + step].nbytes
            if progress is not None:
                progress(f"{self.path}: {name} ok")
        _validate_values(self._arrays, self.attrs, f"store {self.path}")
        return total


def resolve_version(location: Location) -> Location:
    """The published version of a store location, with errors that say which store is missing."""
    try:
        return resolve(location)
    except NotPublishedError:
        raise FileNotFoundError(f"no dataset store at {location} (nothing published there: expected "
                                f"{location / POINTER} naming a Zarr v3 group with zarr.json)") from None


def open_store(path) -> DatasetStore:
    return DatasetStore(path)
