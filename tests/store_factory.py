"""Small, self-consistent canonical stores for tests.

``make_store_arrays`` returns arrays and attributes that ``assets.store.write_store`` accepts and that
pass the schema, range, NaN-rate, bone-length and reprojection checks: a stick figure with bone lengths
of 100-500 mm, about 4 m in front of one of two distorting cameras, and pose2d projected from pose3d
with that camera. It has no up direction or handedness, so the geometry checks need a posed body
(``posed_store_arrays`` in test_quality.py). Tests derive bad stores from it by editing single arrays.
"""

import numpy as np
import zarr

from assets.cameras import Camera
from assets.skeletons import get_skeleton

DATASET_NAME = "synthetic_test"
INVALID_JOINT_SHARE = 0.05


def _camera_parameters(image_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(K, distortion) of two cameras: different focal lengths and lens distortion of opposite sign."""
    centre = (image_size - 1) / 2
    cameras = []
    for focal_scale, dist in ((1.2, (-0.05, 0.01, 0.001, -0.001, 0.0)), (1.5, (0.04, -0.01, -0.002, 0.001, 0.0))):
        f = focal_scale * image_size
        K = np.array([[f, 0.0, centre], [0.0, f, centre], [0.0, 0.0, 1.0]])
        cameras.append((K, np.array(dist)))
    return cameras


def _template_pose(skeleton, rng) -> np.ndarray:
    """A stick figure grown from the root along the skeleton's edges, each bone 100-500 mm long.

    Works for any skeleton format: joints the edges do not reach hang 100-500 mm off the root.
    Edges that close a cycle keep whatever length their endpoints give them.
    """
    num_joints = skeleton.num_joints
    root = skeleton.root_index if skeleton.root_index is not None else 0
    pose = np.full((num_joints, 3), np.nan)
    pose[root] = 0.0

    def offset():
        direction = rng.normal(size=3)
        return direction / np.linalg.norm(direction) * rng.uniform(100.0, 500.0)

    placed = {root}
    frontier = [root]
    while frontier:
        parent = frontier.pop(0)
        for a, b in skeleton.edges:
            child = b if a == parent else a if b == parent else None
            if child is not None and child not in placed:
                pose[child] = pose[parent] + offset()
                placed.add(child)
                frontier.append(child)
    for joint in set(range(num_joints)) - placed:
        pose[joint] = pose[root] + offset()
    return pose


def _yaw_rotations(angles: np.ndarray) -> np.ndarray:
    """Rotations about the camera's vertical (y) axis; they keep the figure upright and bone lengths fixed."""
    c, s = np.cos(angles), np.sin(angles)
    rot = np.zeros((len(angles), 3, 3))
    rot[:, 0, 0], rot[:, 0, 2] = c, s
    rot[:, 1, 1] = 1.0
    rot[:, 2, 0], rot[:, 2, 2] = -s, c
    return rot


def project_pose2d(pose3d: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """pose2d [N,J,2] as each example's camera sees pose3d [N,J,3] (NaN stays NaN)."""
    pose2d = np.empty((*pose3d.shape[:2], 2), dtype=np.float64)
    for i in range(len(pose3d)):
        pose2d[i] = Camera(intrinsics[i], distortion[i]).camera_to_image(pose3d[i])
    return pose2d.astype(np.float32)


def make_store_arrays(n: int = 40, skeleton: str = "h36m_17", image_size: int = 32, seed: int = 0,
                      with_3d: bool = True) -> tuple[dict, dict]:
    """(arrays, attrs) of a plausible store; ``with_3d=False`` gives a 2D-only store (pose3d all NaN)."""
    rng = np.random.default_rng(seed)
    skel = get_skeleton(skeleton)
    num_joints = skel.num_joints

    template = _template_pose(skel, rng)
    rotated = np.einsum("nij,kj->nki", _yaw_rotations(rng.uniform(-np.pi, np.pi, n)), template)
    jitter = rng.normal(scale=5.0, size=(n, num_joints, 3))
    translation = np.stack(
        [rng.uniform(-500, 500, n), rng.uniform(-300, 300, n), rng.uniform(3500, 4500, n)], axis=-1
    )
    pose3d = rotated + jitter + translation[:, None, :]

    camera = rng.integers(0, 2, n).astype(np.int32)
    cameras = _camera_parameters(image_size)
    intrinsics = np.stack([cameras[c][0] for c in camera]).astype(np.float32)
    distortion = np.stack([cameras[c][1] for c in camera]).astype(np.float32)

    joint_valid = rng.random((n, num_joints)) >= INVALID_JOINT_SHARE
    pose3d[~joint_valid] = np.nan
    pose3d = pose3d.astype(np.float32)
    pose2d = project_pose2d(pose3d, intrinsics, distortion)

    top_left = np.nanmin(pose2d, axis=1)
    bbox = np.concatenate([top_left, np.nanmax(pose2d, axis=1) - top_left], axis=-1).astype(np.float32)
    if not with_3d:
        pose3d = np.full_like(pose3d, np.nan)

    arrays = {
        "pose3d": pose3d,
        "pose2d": pose2d,
        "joint_valid": joint_valid,
        "intrinsics": intrinsics,
        "distortion": distortion,
        "extrinsics": np.broadcast_to(np.eye(4, dtype=np.float32), (n, 4, 4)).copy(),
        "image": rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8),
        "bbox": bbox,
        "split": rng.integers(0, 3, n).astype(np.int8),
        "subject": (np.arange(n) % 2).astype(np.int32),
        "sequence": np.zeros(n, dtype=np.int32),
        "frame": np.arange(n, dtype=np.int32),
        "camera": camera,
    }
    attrs = {
        "dataset": DATASET_NAME,
        "skeleton": skeleton,
        "image_size": image_size,
        "codes": {"subject": ["S1", "S2"], "sequence": ["seq0"], "camera": ["cam0", "cam1"]},
        "converter": "tests.store_factory",
        "converter_version": "1",
        "raw_fingerprint": f"synthetic-seed-{seed}",
        "has_pose3d": with_3d,
    }
    return arrays, attrs


def overwrite_array(store_path, name: str, values: np.ndarray) -> None:
    """Replace one array of a written store in place, bypassing the schema checks of ``write_store``.

    For crafting stores that the writer would refuse (e.g. a wrong joint count).
    """
    group = zarr.open_group(str(store_path), mode="a")
    del group[name]
    group.create_array(name, data=np.asarray(values))
