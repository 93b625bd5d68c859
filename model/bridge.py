"""Converting 3D poses between skeleton formats through a fitted affine-combining autoencoder.

The pipeline's autoencoder (``model/acae.py``, the ``acae`` stage's file) is fitted on the union of the
formats' joints, named ``<joint>_<format>`` (``assets/joint_names.py``). To bridge, the given format's
joints take their places in that union and every other joint counts as missing; latent points are found
from the given joints, and the decoder turns them into the target format's joints::

    from model.bridge import bridge_poses, load_acae
    acae = load_acae("data/models/acae.pt")
    smpl = bridge_poses(acae, h36m_poses, "h36m_17", "smpl_24")   # [..., 17, 3] -> [..., 24, 3]

How the latents are found. With encoder E [J, L], decoder D [L, J], the given joints k and the missing
ones m, the latents Z (per coordinate, L values) are the least-squares solution of two conditions, weighed
equally:

    Z D_k = P_k                      decoded, they reproduce the given joints
    Z = [P_k, Z D_m] E               they are the encoding of the pose completed with their own decoding

The second is the fixed point that ``ACAE.encode``'s decode-fill-encode rounds head for; those rounds are
not used here. When one format's joints are a small part of the union, they converge too slowly (with the
default 8 rounds, the bridge errors of an autoencoder fitted on six demo formats were 80-400 mm, mostly
worse than a mean pose), and their limit alone is ill-conditioned for a format the sparse encoder gives
little weight to (lsp_14 or h36m_17 -> smpl_24: 90-175 mm, where the bridge is 12-22 mm off). The decoder
condition pins down what the encoder one leaves free. The solution is one affine map of the given joints
per pattern of missing joints (``bridge_matrix``; each output joint's weights sum to 1), so the bridge
commutes with rotation, translation and scaling like the autoencoder itself.

Accuracy to expect (``benchmarks/bridge.py``: mean per-joint 3D error without alignment, on exact poses of
the synthetic world held out from autoencoders fitted here on exact poses; the pipeline's is fitted on the
initial model's noisy pseudo-GT and will do worse, which that script measures):

- Output joints are affine combinations of the given ones, so the answer lies in their affine hull: from
  one known joint every output joint sits on it, from two on their line, from three in their plane.
- Between formats that cover the torso and limbs, a few to 15 mm (fitted like the pipeline's, on its six
  formats: coco_19 -> h36m_17 6 mm, blazepose_33 -> smpl_24 6 mm, h36m_17 -> smpl_24 16 mm, whose toes
  and hands lie beyond h36m_17's ankles and wrists). Identity (from == to): under 3 mm.
- From few joints the error grows with what they leave open: lsp_14 (14 joints: limbs, neck, head; no
  pelvis, hands, feet or face) -> smpl_24 17-22 mm, -> coco_19 (with eyes and ears) 24 mm, -> bml_movi_87
  (87 surface markers; an autoencoder fitted on all 26 formats) 29 mm. What the given joints do not show
  (a forearm's roll, the feet's and the head's turn) comes out as a typical guess expressed in them. For
  scale: each target format's mean pose, placed with the true position, orientation and size of each pose
  (Procrustes), is 90-110 mm off; copying the joints both formats name alike, 25-35 mm.
- Errors in the given joints pass through with a gain, as the map extrapolates (hands from wrists and
  elbows): with 20 mm of independent noise per input coordinate (35 mm per joint) the identity bridge is
  31 mm off, h36m_17 -> smpl_24 62 mm and lsp_14 -> smpl_24 90 mm. An error common to all given joints
  (a shifted, turned or scaled pose) passes through unchanged, as the map is affine.
- Missing (NaN) input joints lower the accuracy as a format with fewer joints would.
"""

from __future__ import annotations

import numpy as np

from assets.joint_names import skeleton_joint_indices, split_union_joint_name
from assets.skeletons import UnknownSkeletonError, get_skeleton
from model.acae import ACAE

# A tiny pull of every latent towards the centroid of the given joints: it only decides latent directions
# that neither condition fixes (a singular system), and keeps the solution affine, as the centroid is.
_RIDGE = 1e-6


def load_acae(path) -> ACAE:
    """The fitted autoencoder file as the pipeline writes it (``ACAE.save``), checked to be a bridge:
    one whose joints are ``<joint>_<format>`` names covering at least one whole registered format.

    Raises FileNotFoundError for a missing file and ValueError (``CheckpointError``) for a damaged one
    or one of another kind, each naming the file.
    """
    acae = ACAE.load(path)
    if not bridgeable_formats(acae):
        raise ValueError(
            f"{path}: the autoencoder's joints are not '<joint>_<format>' names covering a whole registered "
            f"skeleton format (its first joints: {list(acae.joint_names[:5])}), so it cannot bridge between "
            "formats; expected the pipeline's acae stage output (data/models/acae.pt)")
    return acae


def bridgeable_formats(acae: ACAE) -> tuple[str, ...]:
    """The registered formats all of whose joints the autoencoder has, in the order of its joints."""
    candidates = []
    for name in acae.joint_names:
        try:
            skeleton_name = split_union_joint_name(name)[1]
        except ValueError:  # a joint of a format that is not registered here
            continue
        if skeleton_name not in candidates:
            candidates.append(skeleton_name)
    joints = set(acae.joint_names)
    return tuple(name for name in candidates
                 if all(f"{joint}_{name}" in joints for joint in get_skeleton(name).joint_names))


def bridge_poses(acae: ACAE, poses, from_skeleton: str, to_skeleton: str, *, allow_empty_poses: bool = False,
                 what: str = "poses") -> np.ndarray:
    """3D poses of ``from_skeleton`` [..., J_from, 3] converted to ``to_skeleton`` [..., J_to, 3].

    ``poses``: any leading shape, joints in the format's order (``assets.skeletons``), millimetres in any
    frame (the bridge commutes with rotation, translation and scaling, so camera or world frame alike; the
    output is in the input's frame). A joint with a non-finite coordinate (NaN) is missing and the others
    decide the answer. A pose without any known joint is an error, or gives NaN with
    ``allow_empty_poses``. ``from_skeleton == to_skeleton`` fills in missing joints and returns the given
    ones within the autoencoder's error (a few millimetres), not exactly. ``what`` names the poses in
    error messages (e.g. their file).

    Returns float64 (float32 for float32 or float16 input). Accuracy to expect: the module docstring.
    Raises ValueError naming what was expected for an unknown format, one the autoencoder was not fitted
    on, poses of the wrong shape or kind, and poses without any known joint.
    """
    from_indices = _format_joint_indices(acae, from_skeleton, "source")
    to_indices = _format_joint_indices(acae, to_skeleton, "target")
    array = _checked_poses(poses, from_skeleton, len(from_indices), what)
    leading = array.shape[:-2]
    flat = array.reshape(-1, len(from_indices), 3).astype(np.float64)

    known = np.isfinite(flat).all(axis=-1)
    empty = np.flatnonzero(~known.any(axis=-1))
    if len(empty) and (not allow_empty_poses or len(empty) == len(flat)):
        first = tuple(int(i) for i in np.unravel_index(empty[0], leading))
        raise ValueError(
            f"{what}: {len(empty)} of {len(flat)} poses have no known joint (every {from_skeleton} joint NaN), "
            f"the first at index {first}; the bridge needs at least one known joint per pose"
            + ("" if len(empty) == len(flat) else " (allow_empty_poses=True gives NaN for those poses)"))

    solver = _LatentSolver(acae)
    result = np.full((len(flat), len(to_indices), 3), np.nan)
    patterns, pattern_of_pose, counts = np.unique(known, axis=0, return_inverse=True, return_counts=True)
    poses_by_pattern = np.split(np.argsort(pattern_of_pose.reshape(-1), kind="stable"), np.cumsum(counts)[:-1])
    for pattern, rows in zip(patterns, poses_by_pattern):
        if not pattern.any():
            continue
        weights = solver.output_weights(np.asarray(from_indices)[pattern], to_indices)
        result[rows] = np.einsum("nkc,kt->ntc", flat[rows][:, pattern], weights)
    return result.reshape(*leading, len(to_indices), 3).astype(np.result_type(array.dtype, np.float32))


def bridge_matrix(acae: ACAE, from_skeleton: str, to_skeleton: str, given=None) -> np.ndarray:
    """The bridge as one affine map: weights [K, J_to] with output joint t = sum_k weights[k, t] * joint k
    for the K given joints of ``from_skeleton`` (all of them, or where the boolean mask ``given`` [J_from]
    is true); each column sums to 1. ``bridge_poses`` applies it."""
    from_indices = np.asarray(_format_joint_indices(acae, from_skeleton, "source"))
    to_indices = _format_joint_indices(acae, to_skeleton, "target")
    mask = np.ones(len(from_indices), bool) if given is None else np.asarray(given, dtype=bool)
    if mask.shape != from_indices.shape or not mask.any():
        raise ValueError(f"given: expected a boolean mask of {from_skeleton}'s {len(from_indices)} joints with "
                         f"at least one true, got {np.asarray(given).tolist()}")
    return _LatentSolver(acae).output_weights(from_indices[mask], to_indices)


class _LatentSolver:
    """The least-squares latents of the module docstring, as weights of the given joints."""

    def __init__(self, acae: ACAE):
        self.encoder = acae.encoder_weights.astype(np.float64)  # [J, L]
        self.decoder = acae.decoder_weights.astype(np.float64)  # [L, J]
        self.round_trip = self.decoder @ self.encoder  # [L, L]: latents decoded to every joint, encoded again

    def latent_weights(self, given: np.ndarray) -> np.ndarray:
        """[K, L]: latents = given joints (columns [3, K]) @ these weights."""
        encoder_given, decoder_given = self.encoder[given], self.decoder[:, given]
        count, num_latents = len(given), self.encoder.shape[1]
        # Z @ consistency = P_k @ encoder_given is the fixed-point condition Z = [P_k, Z D_m] E
        consistency = np.eye(num_latents) - (self.round_trip - decoder_given @ encoder_given)
        normal = decoder_given @ decoder_given.T + consistency @ consistency.T + _RIDGE * np.eye(num_latents)
        right = decoder_given.T + encoder_given @ consistency.T + _RIDGE / count
        return np.linalg.solve(normal, right.T).T

    def output_weights(self, given: np.ndarray, wanted) -> np.ndarray:
        """[K, T]: wanted joints = given joints @ these weights."""
        return self.latent_weights(given) @ self.decoder[:, wanted]


def _format_joint_indices(acae: ACAE, skeleton_name: str, role: str) -> list[int]:
    if not isinstance(skeleton_name, str):
        raise ValueError(f"{role} format: expected a skeleton format name such as 'h36m_17', got {skeleton_name!r}")
    try:
        get_skeleton(skeleton_name)
    except UnknownSkeletonError as error:
        raise ValueError(f"{role} format: {error}") from None
    try:
        return skeleton_joint_indices(acae.joint_names, skeleton_name)
    except ValueError:
        raise ValueError(f"{role} format {skeleton_name!r}: the autoencoder was not fitted on it; it bridges "
                         f"between {', '.join(bridgeable_formats(acae)) or 'no registered format'}") from None


def _checked_poses(poses, skeleton_name: str, num_joints: int, what: str) -> np.ndarray:
    expected = f"shape [..., {num_joints}, 3] ({skeleton_name}'s {num_joints} joints in its order, x y z in mm)"
    try:
        array = np.asarray(poses)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{what}: expected numbers of {expected}; got a ragged array ({error})") from None
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{what}: expected numbers of {expected}, got dtype {array.dtype}")
    if array.ndim < 2 or array.shape[-2:] != (num_joints, 3):
        raise ValueError(f"{what}: expected {expected}, got shape {array.shape}")
    return array
