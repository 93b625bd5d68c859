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
# Pelvis-like joints, tried in this order: one of them is the root of root-relative metrics
PELVIS_NAMES = ("pelv", "pelvis", "spinebase", "pelv_smpl", "mhip")
# (left, right) hip joints, tried in this order; a format without a pelvis takes their midpoint as its root
# (berkeley_mhad_43 only has surface markers: hipl are its lateral hip markers)
HIP_PAIRS = (("lhip", "rhip"), ("lhip_smpl", "rhip_smpl"), ("lhipl", "rhipl"))
# (left, right) shoulder joints, tried in this order, then single joints at the top of the torso: with the
# hips they fix a body's orientation (hips along x, the torso's top above them)
SHOULDER_PAIRS = (("lsho", "rsho"), ("lsho_smpl", "rsho_smpl"), ("lsho1", "rsho1"))
TORSO_TOP_NAMES = ("neck", "thor", "neck_smpl", "thor_smpl", "backneck")


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
        """Index of the pelvis-like root joint, if the format has one (root-relative metrics use
        ``root_joints``, which also covers formats without a pelvis)."""
        for candidate in PELVIS_NAMES:
            if candidate in self._index:
                return self._index[candidate]
        return None

    @cached_property
    def hip_joints(self) -> tuple[int, int] | None:
        """(left hip, right hip) indices, or None where the format names no hip pair (``HIP_PAIRS``)."""
        return self._first_pair(HIP_PAIRS)

    @cached_property
    def torso_top_joints(self) -> tuple[int, ...] | None:
        """Joints whose mean is the top of the torso: the shoulder pair, else a neck-like joint; None if neither."""
        pair = self._first_pair(SHOULDER_PAIRS)
        if pair is not None:
            return pair
        single = next((self._index[n] for n in TORSO_TOP_NAMES if n in self._index), None)
        return None if single is None else (single,)

    @property
    def root_joints(self) -> tuple[int, ...]:
        """Joints whose mean is the root of root-relative metrics, the same body point in every format:
        ``(pelvis,)`` where the format has a pelvis-like joint, else ``(left hip, right hip)`` (their
        midpoint, a virtual root). Raises ValueError for a format with neither."""
        if self.root_index is not None:
            return (self.root_index,)
        if self.hip_joints is not None:
            return self.hip_joints
        raise ValueError(
            f"skeleton {self.name!r} has no root: no pelvis-like joint ({', '.join(PELVIS_NAMES)}) and no hip "
            f"pair ({', '.join('/'.join(pair) for pair in HIP_PAIRS)}); its joints are {list(self.joint_names)}")

    @property
    def root_description(self) -> str:
        """The root in words: the pelvis joint's name (e.g. ``pelv``) or ``midpoint of lhip, rhip``."""
        names = [self.joint_names[i] for i in self.root_joints]
        return names[0] if len(names) == 1 else f"midpoint of {', '.join(names)}"

    def _first_pair(self, pairs) -> tuple[int, int] | None:
        for left, right in pairs:
            if left in self._index and right in self._index:
                return self._index[left], self._index[right]
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
