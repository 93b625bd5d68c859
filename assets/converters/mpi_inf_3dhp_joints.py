"""MPI-INF-3DHP's official joint names and their order in the annotation files (both 3DHP converters)."""

from functools import lru_cache

import numpy as np

# mpii_get_joint_set.m 'all_joint_names' (annot2/annot3 column order) -> the project's mpi_inf_3dhp_28 names
OFFICIAL_JOINTS = {
    "spine3": "thor", "spine4": "spi4", "spine2": "spi2", "spine": "spin", "pelvis": "pelv", "neck": "neck",
    "head": "head", "head_top": "htop", "left_clavicle": "lcla", "left_shoulder": "lsho", "left_elbow": "lelb",
    "left_wrist": "lwri", "left_hand": "lhan", "right_clavicle": "rcla", "right_shoulder": "rsho",
    "right_elbow": "relb", "right_wrist": "rwri", "right_hand": "rhan", "left_hip": "lhip", "left_knee": "lkne",
    "left_ankle": "lank", "left_foot": "lfoo", "left_toe": "ltoe", "right_hip": "rhip", "right_knee": "rkne",
    "right_ankle": "rank", "right_foot": "rfoo", "right_toe": "rtoe",
}


@lru_cache(maxsize=None)
def joint_order(skeleton_name: str, official_names: tuple[str, ...]) -> np.ndarray:
    """Indices into the official column order, one per joint of ``skeleton_name``, matched by name."""
    from assets.skeletons import get_skeleton

    project = [OFFICIAL_JOINTS[name] for name in official_names]
    skeleton = get_skeleton(skeleton_name)
    if sorted(project) != sorted(skeleton.joint_names):
        raise ValueError(f"{skeleton_name}: joints {skeleton.joint_names} differ from the official {project}")
    return np.array([project.index(name) for name in skeleton.joint_names])
