"""Training and evaluation data for the pose estimator: person crops from canonical stores, with labels in
the model's union joint layout (``assets.joint_names.union_joint_names``).

- ``StoreExamples``: random access into one store (optionally one split). Each example is a dict of
  tensors: ``image`` uint8 [S, S, 3], ``intrinsics`` float32 [3, 3] of that (undistorted) crop,
  ``pose3d`` float32 [J, 3] camera frame mm and ``pose2d`` float32 [J, 2] pixels (NaN where unlabelled
  or not a joint of the example's skeleton), ``joint_valid`` bool [J] (the store's flag, False outside
  the skeleton), and ``has_3d`` (any 3D label), ``skeleton``, ``dataset``, ``index`` (example index in
  the store). Without augmentation an example is the crop as stored (undistorted first if the store
  has lens distortion, resampled if a different output size is asked for).
- ``MultiDatasetBatches``: the training stream. Every step is a dict ``{"3d": batch, "2d": batch}``
  (a part without sources is left out) whose parts hold fixed counts of examples per dataset, as in
  MeTRAbs. Each dataset is drawn through its own seeded stream of epoch-wise permutations.

Determinism: an example's augmentation is a pure function of (seed, dataset, step, slot in the batch,
example), and which examples a step draws is a pure function of (seed, dataset, step). Nothing depends
on worker processes or on earlier steps, so any number of workers gives the same batches, and a run
resumed at ``start_step=k`` sees exactly the batches from step k of an uninterrupted run.

Several training processes (``rank`` of ``nproc``, docs/distributed_training.md) draw the same global
batch; each renders only its own block of slots of every dataset's share (``rank_slots``), so the global
batch and every example's augmentation are the same for any number of processes.

Processes: a store's labels (small arrays) are read when the dataset is built and travel with it; its
image array is opened lazily by the process that reads it, so DataLoader workers, forked or spawned,
each open their own handle and no open store is ever pickled.
"""

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from assets.joint_names import mirror_permutation, skeleton_joint_indices
from assets.store import SPLITS, DatasetStore, StoreSchemaError, open_store
from model.augmentation import AugmentationSettings, render_crops, sample_augmentation

PARTS = ("3d", "2d")
_RENDERED = ("image", "intrinsics", "pose3d", "pose2d", "joint_valid")
_LABELS = ("intrinsics", "distortion", "pose3d", "pose2d", "joint_valid")  # render_crops' order


def _open(path: Path, name: str | None) -> DatasetStore:
    """Open a store; errors name the dataset as well as the path."""
    label = f"dataset {name!r}: " if name else ""
    try:
        return open_store(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{label}{error}") from None
    except StoreSchemaError as error:  # corruption too (a subclass): keep the type
        raise type(error)(f"{label}{error}") from None


def _check_image_size(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise ValueError(f"{where}: image_size must be an integer number of pixels >= 2, got {value!r}")
    return int(value)


def _check_cameras(intrinsics: np.ndarray, distortion: np.ndarray, store_indices: np.ndarray, where: str) -> None:
    """Every example must have a usable camera: a NaN here would silently poison whole batches."""
    finite = np.isfinite(intrinsics).all(axis=(1, 2))
    well_formed = (
        finite
        & (intrinsics[:, 2] == np.array([0, 0, 1], dtype=intrinsics.dtype)).all(axis=1)
        & (intrinsics[:, 0, 0] > 0)
        & (intrinsics[:, 1, 1] > 0)
    )
    if not well_formed.all():
        bad = store_indices[~well_formed][:10].tolist()
        problem = ("non-finite values" if not finite.all()
                   else "not of the form [[fx, s, cx], [0, fy, cy], [0, 0, 1]], fx, fy > 0")
        raise ValueError(f"{where}: array 'intrinsics' has {problem} at examples {bad}")
    bad_distortion = ~np.isfinite(distortion).all(axis=1)
    if bad_distortion.any():
        bad = store_indices[bad_distortion][:10].tolist()
        raise ValueError(f"{where}: array 'distortion' has non-finite values at examples {bad}")


class StoreExamples(Dataset):
    """Examples of one store (or one split of it), labels in the union joint layout ``joint_names``.

    ``dataset[i]`` is example i of the selection; ``dataset[(i, *context)]`` the same example augmented
    by the draw that ``context`` (non-negative integers, e.g. an epoch) selects together with ``seed``.
    ``augmentation`` None gives the crop as stored. ``image_size`` is the output side (default: the
    store's). ``name`` (default: the store's dataset attribute) labels examples and error messages.
    ``image_cache_mb``: decoded source crops kept in memory, per process (each DataLoader worker has its
    own); reading one crop from Zarr costs about as much as augmenting a batch of them, so a selection
    that fits is read whole on first use (a few reads of whole shards); otherwise the cache keeps the
    first crops read until it is full (accesses are uniformly random).
    """

    def __init__(
        self,
        store_path: str | os.PathLike,
        joint_names: Sequence[str],
        *,
        split: str | None = None,
        image_size: int | None = None,
        augmentation: AugmentationSettings | None = None,
        seed: int = 0,
        name: str | None = None,
        image_cache_mb: float = 0.0,
    ):
        store = _open(Path(store_path), name)
        # the version opened now, not the location: every worker process must read the same version
        self.store_path = store.path
        self.name = str(store.attrs["dataset"]) if name is None else name
        self.where = where = f"dataset {self.name!r} (store {self.store_path})"
        self.skeleton = str(store.attrs["skeleton"])
        self.split = split
        self.source_size = int(store.attrs["image_size"])
        self.image_size = _check_image_size(self.source_size if image_size is None else image_size, where)
        if augmentation is not None and not isinstance(augmentation, AugmentationSettings):
            raise ValueError(
                f"{where}: augmentation must be AugmentationSettings or None, got {type(augmentation).__name__}"
            )
        self.augmentation = augmentation
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{where}: seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)

        if split is None:
            self.store_indices = np.arange(len(store))
        elif split not in SPLITS:
            raise ValueError(f"{where}: unknown split {split!r}; splits are {SPLITS}")
        else:
            self.store_indices = store.split_indices(split)
        if len(self.store_indices) == 0:
            what = "has no examples" if split is None else f"has no examples in split {split!r}"
            raise ValueError(f"{where}: the store {what} (examples per split: {store.attrs.get('counts')})")

        self.joint_names = tuple(joint_names)
        try:
            slots = skeleton_joint_indices(self.joint_names, self.skeleton)
        except ValueError as error:
            raise ValueError(
                f"{where}: its skeleton {self.skeleton!r} is not in the union joint layout of "
                f"{len(self.joint_names)} joints ({error})"
            ) from None
        self._slots = np.asarray(slots, dtype=np.int64)
        self._union_mirror = mirror_permutation(self.joint_names)

        self._labels = {name: np.ascontiguousarray(store.load(name)[self.store_indices]) for name in _LABELS}
        _check_cameras(self._labels["intrinsics"], self._labels["distortion"], self.store_indices, where)
        self._has_3d = np.isfinite(self._labels["pose3d"]).all(axis=-1).any(axis=-1)
        self._image_array = None
        self._image_array_pid = None
        if not (isinstance(image_cache_mb, (int, float)) and np.isfinite(image_cache_mb) and image_cache_mb >= 0):
            raise ValueError(f"{where}: image_cache_mb must be a finite number >= 0, got {image_cache_mb!r}")
        self._cache_capacity = int(image_cache_mb * 2**20 // (3 * self.source_size**2))
        self._cache: dict[int, np.ndarray] = {}

    @property
    def has_3d_labels(self) -> bool:
        """Whether any example of the selection has a 3D label."""
        return bool(self._has_3d.any())

    def __len__(self) -> int:
        return len(self.store_indices)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict:
        if isinstance(key, tuple):
            return self.example(key[0], key[1:])
        return self.example(key)

    def example(self, position: int, context: Sequence[int] = ()) -> dict:
        """Example ``position`` of the selection; ``context`` picks the augmentation draw (see class doc)."""
        batch = render_examples([self.draw(position, context)])
        example = {key: batch[key][0] for key in batch}
        return {**{key: torch.from_numpy(example[key]) for key in _RENDERED},
                "has_3d": bool(example["has_3d"]), "index": int(example["index"]),
                "skeleton": example["skeleton"], "dataset": example["dataset"]}

    def draw(self, position: int, context: Sequence[int] = ()) -> dict:
        """Example ``position`` before rendering: its stored crop, its labels in the union layout and its
        augmentation draw (``render_examples`` turns a list of these into a batch)."""
        if not 0 <= position < len(self):
            raise IndexError(f"{self.where}: example {position} out of range for {len(self)} examples")
        store_index = int(self.store_indices[position])
        crop = colour = None
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, *(int(c) for c in context), store_index])
            crop, colour = sample_augmentation(rng, self.augmentation, self.image_size)
        labels = {name: values[position] for name, values in self._labels.items()}
        return {
            "source": self._source_image(store_index), "intrinsics": labels["intrinsics"],
            "distortion": labels["distortion"],
            "pose3d": self._to_union(labels["pose3d"], np.nan), "pose2d": self._to_union(labels["pose2d"], np.nan),
            "joint_valid": self._to_union(labels["joint_valid"], False), "crop": crop, "colour": colour,
            "image_size": self.image_size, "mirror_indices": self._union_mirror,
            "has_3d": bool(self._has_3d[position]), "skeleton": self.skeleton, "dataset": self.name,
            "index": store_index,
        }

    def _to_union(self, values: np.ndarray, fill) -> np.ndarray:
        union = np.full((len(self.joint_names), *values.shape[1:]), fill, dtype=values.dtype)
        union[self._slots] = values
        return union

    def _source_image(self, store_index: int) -> np.ndarray:
        image = self._cache.get(store_index)
        if image is None:
            if not self._cache and len(self) <= self._cache_capacity:
                self._load_all_images()
                return self._cache[store_index]
            image = self._images()[store_index]
            if len(self._cache) < self._cache_capacity:
                self._cache[store_index] = image
        return image

    def _load_all_images(self) -> None:
        """Fill the cache with the whole selection at once: a few slice reads instead of one per crop."""
        self._cache.update(zip(self.store_indices.tolist(), self._images().read_rows(self.store_indices)))

    def _images(self):
        # opened per process: a zarr handle inherited through fork or pickled into a worker is not safe to use
        if self._image_array_pid != os.getpid():
            self._image_array = _open(self.store_path, self.name)["image"]
            self._image_array_pid = os.getpid()
        return self._image_array

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_image_array"] = state["_image_array_pid"] = None
        state["_cache"] = {}  # each process fills its own
        return state


def render_examples(drawn: Sequence[dict]) -> dict:
    """Render drawn examples (``StoreExamples.draw``, all of one output size and joint layout) into a batch:
    ``image``, ``intrinsics``, ``pose3d``, ``pose2d``, ``joint_valid`` stacked numpy arrays, ``has_3d`` and
    ``index`` arrays, ``skeleton``/``dataset`` lists of names. One resampling call renders the whole batch."""
    sizes = {d["image_size"] for d in drawn}
    if len(sizes) != 1:
        raise ValueError(f"examples of one batch must share one output size, got {sorted(sizes)}")
    batch = render_crops(
        [d["source"] for d in drawn], *(np.stack([d[k] for d in drawn]) for k in _LABELS),
        image_size=sizes.pop(), crops=[d["crop"] for d in drawn], colours=[d["colour"] for d in drawn],
        mirror_indices=drawn[0]["mirror_indices"])
    batch["has_3d"] = np.array([d["has_3d"] for d in drawn], dtype=bool)
    batch["index"] = np.array([d["index"] for d in drawn], dtype=np.int64)
    batch["skeleton"] = [d["skeleton"] for d in drawn]
    batch["dataset"] = [d["dataset"] for d in drawn]
    return batch


def collate_examples(drawn: Sequence[dict]) -> dict:
    """A training batch of drawn examples: ``render_examples`` with the arrays as tensors."""
    return {key: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
            for key, value in render_examples(drawn).items()}


# ---------------------------------------------------------------------------------------------------
# Multi-dataset training batches
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A dataset in the batch composition: ``count_per_batch`` examples of ``split`` per step, in the
    3D-labelled (``part="3d"``) or 2D-only (``"2d"``) part of the batch."""

    name: str
    store_path: str | os.PathLike
    count_per_batch: int
    part: str
    split: str = "train"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"source name must be a non-empty string, got {self.name!r}")
        count = self.count_per_batch
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"source {self.name!r}: count_per_batch must be a positive integer, got {count!r}")
        if self.part not in PARTS:
            raise ValueError(f"source {self.name!r}: part must be one of {PARTS}, got {self.part!r}")
        if self.split not in SPLITS:
            raise ValueError(f"source {self.name!r}: split must be one of {SPLITS}, got {self.split!r}")


def rank_slots(count: int, rank: int, nproc: int) -> range:
    """The slots of a dataset's share of ``count`` examples per batch that process ``rank`` of ``nproc``
    renders: a contiguous block, the same size for every process."""
    share = count // nproc
    return range(rank * share, (rank + 1) * share)


def check_batch_shares(sources: Sequence[Source], nproc: int) -> None:
    """Every process takes an equal part of each dataset's share of the batch: a share must divide evenly."""
    if isinstance(nproc, bool) or not isinstance(nproc, (int, np.integer)) or nproc < 1:
        raise ValueError(f"nproc: expected an integer >= 1 (training processes), got {nproc!r}")
    for source in sources:
        if source.count_per_batch % nproc:
            raise ValueError(
                f"source {source.name!r}: its share of each batch, {source.count_per_batch} examples "
                f"(count_per_batch), is not divisible by nproc={nproc}; every training process takes an equal "
                f"part of each dataset's share, so make it a multiple of {nproc}"
            )


def _stream_code(name: str) -> int:
    """A stable number for a source name (Python's own hash of strings changes from run to run)."""
    return zlib.crc32(name.encode())


class _ExampleStream:
    """A source's endless sequence of examples: epoch e is a seeded permutation of all its examples."""

    def __init__(self, size: int, seed: int, code: int):
        self.size, self.seed, self.code = size, seed, code
        self._permutations: dict[int, np.ndarray] = {}

    def positions(self, start: int, count: int) -> np.ndarray:
        """Examples at stream positions start … start + count - 1."""
        stream = np.arange(start, start + count)
        epochs, offsets = np.divmod(stream, self.size)
        return np.array([self._permutation(int(e))[o] for e, o in zip(epochs, offsets)], dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            # a step's draws span at most two epochs; older ones are never asked for again
            self._permutations = {e: p for e, p in self._permutations.items() if e >= epoch - 1}
            self._permutations[epoch] = np.random.default_rng([self.seed, self.code, epoch]).permutation(self.size)
        return self._permutations[epoch]


class _StepSampler(Sampler):
    """Yields, per step, the keys (source number, position, step, slot) of this process's slots of the
    batch (all of it for a single process), 3D part first."""

    def __init__(self, streams: list[_ExampleStream], counts: list[int], start_step: int, steps: int,
                 slots: list[range]):
        self.streams, self.counts, self.slots = streams, counts, slots
        self.start_step, self.steps = start_step, steps

    def __len__(self) -> int:
        return self.steps - self.start_step

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            keys = []
            for number, (stream, count, slots) in enumerate(zip(self.streams, self.counts, self.slots)):
                # the whole share is drawn, so that a slot holds the same example for any number of processes
                positions = stream.positions(step * count, count)
                keys.extend((number, int(positions[slot]), step, slot) for slot in slots)
            yield keys


class _StepExamples(Dataset):
    """Examples of all sources behind one index space of sampler keys."""

    def __init__(self, datasets: list[StoreExamples], codes: list[int]):
        self.datasets, self.codes = datasets, codes

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: tuple[int, int, int, int]) -> dict:
        number, position, step, slot = key
        return self.datasets[number].draw(position, (self.codes[number], step, slot))


def _collate_parts(examples: list[dict], parts: tuple[tuple[str, int], ...]) -> dict:
    batch, start = {}, 0
    for part, size in parts:
        batch[part] = collate_examples(examples[start:start + size])
        start += size
    return batch


class MultiDatasetBatches:
    """Training batches composed across datasets; iterate for steps ``start_step`` … ``steps - 1``.

    ``union_joint_names`` is the model's output layout (every source's skeleton must be in it).
    ``augment``: True for the default ``AugmentationSettings``, False for the crops as stored, or
    settings of one's own. ``image_size`` is the output side (default: the stores', which must then
    agree). ``workers`` DataLoader processes (0: load in this process) stay alive between iterations.
    Batches are on the CPU; ``pin_memory`` speeds up their copy to a GPU. ``image_cache_mb``: memory for
    decoded source crops per loading process, shared equally by the sources (see ``StoreExamples``).
    ``rank`` of ``nproc`` training processes: the batches hold only that process's slots of each
    dataset's share (``rank_slots``; every share must be divisible by ``nproc``); ``rank_rows`` says
    where they sit in the global batch.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        union_joint_names: Sequence[str],
        *,
        steps: int,
        seed: int,
        workers: int = 2,
        start_step: int = 0,
        augment: bool | AugmentationSettings = True,
        image_size: int | None = None,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        image_cache_mb: float = 0.0,
        rank: int = 0,
        nproc: int = 1,
    ):
        sources = list(sources)
        if not sources or not all(isinstance(s, Source) for s in sources):
            raise ValueError(f"sources: expected a non-empty list of Source, got {sources!r}")
        check_batch_shares(sources, nproc)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < nproc:
            raise ValueError(f"rank: expected an integer from 0 to nproc - 1 = {nproc - 1}, got {rank!r}")
        names = [s.name for s in sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"sources: names {duplicates} appear more than once; each source needs its own name")
        if not (isinstance(steps, (int, np.integer)) and isinstance(start_step, (int, np.integer))
                and 0 <= start_step <= steps):
            raise ValueError(
                f"steps, start_step: expected integers with 0 <= start_step <= steps, got {steps}, {start_step}"
            )
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ValueError(f"workers: expected a non-negative integer, got {workers!r}")
        if augment is True:
            augmentation = AugmentationSettings()
        elif augment is False:
            augmentation = None
        elif isinstance(augment, AugmentationSettings):
            augmentation = augment
        else:
            raise ValueError(f"augment: expected True, False or AugmentationSettings, got {augment!r}")

        ordered = sorted(sources, key=lambda s: PARTS.index(s.part))  # stable: config order within a part
        datasets = []
        for source in ordered:
            dataset = StoreExamples(source.store_path, union_joint_names, split=source.split, image_size=image_size,
                                    augmentation=augmentation, seed=seed, name=source.name,
                                    image_cache_mb=image_cache_mb / len(sources))
            if source.part == "3d" and not dataset.has_3d_labels:
                raise ValueError(
                    f"{dataset.where}: listed in the 3D part of the batch but has no 3D labels in split "
                    f"{source.split!r}; put it in the 2D part"
                )
            datasets.append(dataset)
        if image_size is None and len({d.image_size for d in datasets}) > 1:
            sizes = {d.name: d.image_size for d in datasets}
            raise ValueError(
                f"image_size: the stores' crops differ in size {sizes}; pass image_size to resample them all"
            )

        self.sources = tuple(ordered)
        self.datasets = {d.name: d for d in datasets}
        self.steps, self.start_step = int(steps), int(start_step)
        self.rank, self.nproc = int(rank), int(nproc)
        codes = [_stream_code(s.name) for s in ordered]
        counts = [s.count_per_batch for s in ordered]
        parts = tuple(
            (part, sum(s.count_per_batch for s in ordered if s.part == part) // self.nproc)
            for part in PARTS if any(s.part == part for s in ordered)
        )
        streams = [_ExampleStream(len(d), int(seed), code) for d, code in zip(datasets, codes)]
        slots = [rank_slots(count, self.rank, self.nproc) for count in counts]
        self._loader = DataLoader(
            _StepExamples(datasets, codes),
            batch_sampler=_StepSampler(streams, counts, self.start_step, self.steps, slots),
            num_workers=int(workers),
            collate_fn=partial(_collate_parts, parts=parts),
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            prefetch_factor=prefetch_factor if workers > 0 else None,
        )

    def __len__(self) -> int:
        return self.steps - self.start_step

    def __iter__(self):
        return iter(self._loader)

    def rank_rows(self, part: str | None = None) -> list[np.ndarray]:
        """For each process, the rows of the global batch (of its ``part``, if given) that its batches
        hold, in their order: the 3D part first, datasets in batch order, each its block of slots."""
        counts = [s.count_per_batch for s in self.sources if part is None or s.part == part]
        starts = np.cumsum([0, *counts[:-1]])
        return [np.array([start + slot for start, count in zip(starts, counts)
                          for slot in rank_slots(count, rank, self.nproc)], dtype=np.int64)
                for rank in range(self.nproc)]
