"""Registry of skeleton formats: joint names, edges, left/right mirror pairs.

The 23 public formats of the MeTRAbs/ACAE release ship with the package in
``skeleton_formats.json``. Side convention (as in PosePile): a joint whose name starts
with ``l`` or ``r`` is sided when the name with the first letter swapped also exists in
the same format; every other joint is a centre joint and mirrors onto itself.
"""

import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources

import numpy as np

_DATA_FILE = "skeleton_formats.json"


class UnknownSkeletonError(KeyError):
    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


def mirror_name(name: str) -> str | None:
    """Name of the mirror partner by the l/r prefix convention, or None for unsided names."""
    if name[:1] == "l":
        return "r" + name[1:]
    if name[:1] == "r":
        return "l" + name[1:]
    return None


@dataclass(frozen=True)
class Skeleton:
    name: str
    joint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    source: str = ""
    note: str = ""
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if len(set(self.joint_names)) != len(self.joint_names):
            dupes = sorted({n for n in self.joint_names if self.joint_names.count(n) > 1})
            raise ValueError(f"skeleton {self.name!r}: duplicate joint names {dupes}")
        n = len(self.joint_names)
        for a, b in self.edges:
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise ValueError(f"skeleton {self.name!r}: edge ({a}, {b}) is not a pair of distinct joints in 0..{n - 1}")
        object.__setattr__(self, "_index", {j: i for i, j in enumerate(self.joint_names)})

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def index(self, joint_name: str) -> int:
        try:
            return self._index[joint_name]
        except KeyError:
            raise KeyError(
                f"skeleton {self.name!r} has no joint {joint_name!r}; its joints are {list(self.joint_names)}"
            ) from None

    @cached_property
    def mirror_indices(self) -> np.ndarray:
        """Permutation p such that pose[..., p, :] relabels a horizontally mirrored pose."""
        perm = np.arange(self.num_joints)
        for i, name in enumerate(self.joint_names):
            partner = mirror_name(name)
            if partner is not None and partner in self._index:
                perm[i] = self._index[partner]
        return perm

    @cached_property
    def mirror_pairs(self) -> tuple[tuple[int, int], ...]:
        """(left, right) index pairs."""
        return tuple(
            (i, int(j)) for i, j in enumerate(self.mirror_indices) if i != j and self.joint_names[i][0] == "l"
        )

    @cached_property
    def left_indices(self) -> np.ndarray:
        return np.array([l for l, _ in self.mirror_pairs], dtype=int)

    @cached_property
    def right_indices(self) -> np.ndarray:
        return np.array([r for _, r in self.mirror_pairs], dtype=int)

    @cached_property
    def center_indices(self) -> np.ndarray:
        return np.flatnonzero(self.mirror_indices == np.arange(self.num_joints))

    @property
    def root_index(self) -> int | None:
        """Index of the pelvis-like root joint used for root-relative metrics, if the format has one."""
        for candidate in ("pelv", "pelvis", "spinebase", "pelv_smpl", "mhip"):
            if candidate in self._index:
                return self._index[candidate]
        return None

    def to_dict(self) -> dict:
        return {"name": self.name, "joint_names": list(self.joint_names), "edges": [list(e) for e in self.edges]}


def _load_builtin() -> dict[str, Skeleton]:
    text = resources.files(__package__).joinpath(_DATA_FILE).read_text()
    raw = json.loads(text)
    return {
        name: Skeleton(
            name=name,
            joint_names=tuple(spec["joint_names"]),
            edges=tuple((int(a), int(b)) for a, b in spec["edges"]),
            source=spec.get("source", ""),
            note=spec.get("note", ""),
        )
        for name, spec in raw.items()
    }


_REGISTRY: dict[str, Skeleton] = _load_builtin()
BUILTIN_FORMATS: tuple[str, ...] = tuple(_REGISTRY)


def known_skeletons() -> list[str]:
    return sorted(_REGISTRY)


def get_skeleton(name: str) -> Skeleton:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownSkeletonError(
            f"unknown skeleton format {name!r}; known formats: {', '.join(known_skeletons())}"
        ) from None


def register_skeleton(skeleton: Skeleton, *, replace: bool = False) -> Skeleton:
    """Add a format (e.g. a new detector's landmark set). Re-registering an identical format is a no-op."""
    existing = _REGISTRY.get(skeleton.name)
    if existing is not None and not replace:
        if existing.joint_names == skeleton.joint_names and existing.edges == skeleton.edges:
            return existing
        raise ValueError(f"skeleton format {skeleton.name!r} is already registered with different joints or edges")
    _REGISTRY[skeleton.name] = skeleton
    return skeleton
