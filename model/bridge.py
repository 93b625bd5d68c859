"""Converting 3D poses between skeleton formats through a fitted affine-combining autoencoder.

The pipeline's autoencoder (``model/acae.py``, the ``acae`` stage's file) is fitted on the union of the
formats' joints, named ``<joint>_<format>`` (``assets/joint_names.py``). To bridge, the given format's
joints go to their places in that union, every other joint counts as missing (NaN), the encoder's
missing-joint handling finds the latent points from the joints given, and the decoder gives every joint,
from which the target format's are read off::

    from model.bridge import bridge_poses, load_acae
    acae = load_acae("data/models/acae.pt")
    smpl = bridge_poses(acae, h36m_poses, "h36m_17", "smpl_24")   # [..., 17, 3] -> [..., 24, 3]

Accuracy. Every output joint is an affine combination of the joints given (the ACAE has no bias and no
mean pose to fall back on), so the answer always lies in the affine hull of the input: from one known joint
every output joint sits on it, from two on their line, from three in their plane. A format with four or
more joints spread over the body gives a full 3D answer, and the error then depends on how well the given
joints pin down the latents:

- Formats with a dense torso and limbs (h36m_17, smpl_24, mpi_inf_3dhp_28, coco_19, ...) into each other:
  close to the autoencoder's own reconstruction error plus the part of the target no source joint tells
  (e.g. toes from h36m_17, which ends at the ankles).
- From few joints (lsp_14: limbs, neck and head top, no pelvis, hands, feet or face) to a dense marker
  set (bml_movi_87: 87 surface markers, with hands, feet and torso surface) the error is several times
  larger: what the 14 joints do not constrain (the forearm's roll and so the wrist and hand markers, the
  feet's orientation, the head's turn) comes out as an average guess expressed in the given joints, which
  is right for a typical pose and wrong by up to the extent of that body part for an atypical one.
- Joints missing (NaN) in the input lower the accuracy the same way; a format missing half its joints is
  worth about a format with that many joints.

The autoencoder's quality bounds everything: the pipeline's is fitted on the initial model's pseudo-GT,
so its biases carry over. ``benchmarks/bridge.py`` measures the errors of a fitted autoencoder for pairs
of formats against true poses of the synthetic world.
"""

from __future__ import annotations

import numpy as np

from assets.joint_names import skeleton_joint_indices, split_union_joint_name
from assets.skeletons import UnknownSkeletonError, get_skeleton
from model.acae import ACAE

# Poses encoded at once: bounds the memory of the union-sized work arrays (a pose of a 700-joint
# autoencoder is ~17 kB in float64, a few times over during imputation).
_POSES_PER_CHUNK = 4096


def load_acae(path) -> ACAE:
    """The fitted autoencoder file as the pipeline writes it (``ACAE.save``), checked to be a bridge:
    one whose joints are ``<joint>_<format>`` names covering at least one whole format.

    Raises FileNotFoundError for a missing file and ValueError (``CheckpointError``) for a damaged one
    or one of another kind, each naming the file.
    """
    acae = ACAE.load(path)
    if not bridgeable_formats(acae):
        raise ValueError(
            f"{path}: the autoencoder's joints are not '<joint>_<format>' names covering a whole registered "
            f"skeleton format (first names: {list(acae.joint_names[:5])}), so it cannot bridge between formats; "
            "expected the pipeline's acae stage output")
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


def bridge_poses(acae: ACAE, poses, from_skeleton: str, to_skeleton: str, *,
                 allow_empty_poses: bool = False) -> np.ndarray:
    """3D poses of ``from_skeleton`` [..., J_from, 3] converted to ``to_skeleton`` [..., J_to, 3].

    ``poses``: any leading shape, joints in the format's order (``assets.skeletons``), millimetres in any
    frame (the autoencoder commutes with rotation, translation and scaling, so camera or world frame
    alike; the output is in the input's frame). A joint with a non-finite coordinate (NaN) is missing and
    the others still decide the answer. A pose without any known joint is an error, or gives NaN with
    ``allow_empty_poses``. ``from_skeleton == to_skeleton`` passes the poses through the autoencoder,
    which fills in missing joints (known ones come back within its reconstruction error, not exactly).

    Returns float64 (float32 for float32 or float16 input). Accuracy to expect: the module docstring.
    Raises ValueError naming what was expected for an unknown format, one the autoencoder was not fitted
    on, poses of the wrong shape or kind, and poses without any known joint.
    """
    from_indices = _format_joint_indices(acae, from_skeleton, "source")
    to_indices = _format_joint_indices(acae, to_skeleton, "target")
    array = _checked_poses(poses, from_skeleton, len(from_indices))
    leading = array.shape[:-2]
    flat = array.reshape(-1, len(from_indices), 3).astype(np.float64)

    known = np.isfinite(flat).all(axis=-1).any(axis=-1)
    if not known.all() and (not allow_empty_poses or not known.any()):
        empty = np.flatnonzero(~known)
        first = tuple(int(i) for i in np.unravel_index(empty[0], leading)) if leading else ()
        raise ValueError(
            f"poses: {len(empty)} of {len(known)} poses have no known joint (every {from_skeleton} joint NaN), "
            f"the first at index {first}; the bridge needs at least one known joint per pose"
            + ("" if len(empty) == len(known) else " (allow_empty_poses=True gives NaN for those poses)"))

    result = np.full((len(flat), len(to_indices), 3), np.nan)
    for start in range(0, len(flat), _POSES_PER_CHUNK):
        chunk = flat[start:start + _POSES_PER_CHUNK]
        union = np.full((len(chunk), acae.num_joints, 3), np.nan)
        union[:, from_indices] = chunk
        result[start:start + len(chunk)] = acae.reconstruct(union)[:, to_indices]
    return result.reshape(*leading, len(to_indices), 3).astype(np.result_type(array.dtype, np.float32))


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


def _checked_poses(poses, skeleton_name: str, num_joints: int) -> np.ndarray:
    expected = f"shape [..., {num_joints}, 3] ({skeleton_name}'s {num_joints} joints in its order, x y z in mm)"
    try:
        array = np.asarray(poses)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"poses: expected numbers of {expected}; got a ragged array ({error})") from None
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"poses: expected numbers of {expected}, got dtype {array.dtype}")
    if array.ndim < 2 or array.shape[-2:] != (num_joints, 3):
        raise ValueError(f"poses: expected {expected}, got shape {array.shape}")
    return array
