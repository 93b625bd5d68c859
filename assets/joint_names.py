"""Output joints of a model trained on several skeleton formats ("separate heads per skeleton").

The union of every format's joints, each name suffixed with its format (``union_joint_names``), so each
format has outputs of its own; ``skeleton_joint_indices`` picks one format's joints out of the union,
``split_union_joint_name`` undoes the suffix and ``mirror_permutation`` relabels a mirrored pose. Plain
names over the skeleton registry (``assets.skeletons``): no torch, so evaluation and data code can use
them without loading the network.
"""

from collections.abc import Sequence

import numpy as np

from assets.skeletons import get_skeleton, known_skeletons, mirror_name


def union_joint_names(skeleton_names: Sequence[str]) -> tuple[str, ...]:
    """Output joints of a model trained on these skeleton formats: every format's joints in order, each
    suffixed with its format (``lsho`` of ``h36m_17`` → ``lsho_h36m_17``)."""
    if isinstance(skeleton_names, str):
        raise ValueError(f"skeleton_names: expected a sequence of format names, got the string {skeleton_names!r}")
    duplicates = sorted({n for n in skeleton_names if list(skeleton_names).count(n) > 1})
    if duplicates:
        raise ValueError(f"skeleton_names: {duplicates} listed more than once")
    return tuple(f"{joint}_{name}" for name in skeleton_names for joint in get_skeleton(name).joint_names)


def split_union_joint_name(union_name: str) -> tuple[str, str]:
    """Inverse of ``union_joint_names`` for one name: ``leye_inner_blazepose_33`` → (``leye_inner``,
    ``blazepose_33``). Joint and format names may both contain underscores, so the split is the one
    whose format is registered and has that joint."""
    parts, registered = union_name.split("_"), set(known_skeletons())
    for cut in range(1, len(parts)):
        joint, skeleton = "_".join(parts[:cut]), "_".join(parts[cut:])
        if skeleton in registered and joint in get_skeleton(skeleton).joint_names:
            return joint, skeleton
    raise ValueError(f"joint name {union_name!r} is not '<joint>_<format>' for any registered skeleton format")


def skeleton_joint_indices(joint_names: Sequence[str], skeleton_name: str) -> list[int]:
    """Indices into ``joint_names`` (a union from ``union_joint_names``) of the joints of ``skeleton_name``,
    in that format's joint order."""
    index = {name: i for i, name in enumerate(joint_names)}
    wanted = [f"{joint}_{skeleton_name}" for joint in get_skeleton(skeleton_name).joint_names]
    missing = [name for name in wanted if name not in index]
    if missing:
        raise ValueError(
            f"skeleton {skeleton_name!r}: the model has no output for joints {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''} (was it trained on this format?)"
        )
    return [index[name] for name in wanted]


def mirror_permutation(joint_names: Sequence[str]) -> np.ndarray:
    """Permutation relabelling a mirrored pose left ↔ right; the l/r prefix rule of ``assets.skeletons``
    applied to the suffixed names pairs joints within each format."""
    index = {name: i for i, name in enumerate(joint_names)}
    return np.array([index.get(mirror_name(name), i) for i, name in enumerate(joint_names)])
