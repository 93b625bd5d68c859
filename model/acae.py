"""Affine-combining autoencoder (ACAE): a geometry-aware bridge between skeleton formats.

Sárándi et al., WACV 2023, Sec. 3.2. Every latent point is an affine combination of the J input joints and
every output joint an affine combination of the L latent points, with the same weights for x, y and z:

    latent_l = sum_j W_e[j, l] * P_j        out_j = sum_l W_d[l, j] * Z_l
    sum_j W_e[j, l] = 1 for every l          sum_l W_d[l, j] = 1 for every j

Weights that sum to one make both maps commute with rotation, translation and uniform scaling of the
pose, so the model never has to learn those. The constraint is a parameterisation (raw weights divided by
their sums), not a penalty, so it holds exactly throughout training.

Chirality sharing: with joints ordered [left (n), right (n, same pair order), centre (m)] and latents
[left (k), right (k), centre (c)], the raw encoder matrix (rows = joints, columns = latents) is

    [[S, Q, X],
     [Q, S, X],
     [C, C, Z]]

and the decoder has its own blocks in the same layout (transposed before normalising, as in the reference
implementation isarandi/affine-combining-autoencoder). Mirroring a pose (negating x and swapping left
and right joints) then mirrors the latents exactly (negated x, left and right latents swapped), and the
model holds about half the free weights.

Missing joints (NaN) are imputed by the model itself, per pose. A first encoding hands the encoder weight
that a latent puts on missing joints to the present joints, in proportion to their absolute weights (with
nonnegative weights, which the sparsity term favours, that is renormalising over the present joints;
unlike plain renormalisation it stays bounded when the present weights nearly cancel). Then, a few rounds
(``imputation_rounds``): decode, fill the missing joints with the decoded positions, encode the filled
pose. Every step is an affine combination of the present joints, so equivariance holds whatever is
missing. Renormalising alone makes training hedge against missing inputs (a biased encoder: ~10% of the
joint spread on a known structure with 20% missing joints); with the rounds, the fit matches the one on
complete data. During training the filled-in values are constants (EM-style; letting gradients flow
through the rounds fitted worse), and the loss counts only present joints.

Public matrices are always in the caller's joint order; latents are ordered [left k, right k, centre c],
latent ``i`` of the left group mirroring latent ``i`` of the right group.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from assets.locations import Location, location
from assets.skeletons import mirror_name
from model.acae_init import chiral_blocks, principal_affine_weights
from model.checkpoints import load_checked, model_file_kind, reading_contents
from model.persistence import save_torch_atomic
from model.settings import DEFAULT_IMPUTATION_ROUNDS, DEFAULT_STEPS, AcaeFitSettings

logger = logging.getLogger(__name__)

SIDES = ("left", "right", "center")
FREE_LATENT = "free"  # latent side in non-chiral models: no mirror relation between latents
LOSSES = ("projected", "3d")
INITS = ("principal", "random")

_INIT_RANGE = (-0.1, 1.0)
# Predicted depths are floored in the projected loss so a wild early prediction near the camera plane
# cannot produce an infinite loss; real camera-frame poses sit metres away.
_MIN_DEPTH_MM = 1.0
_FORMAT_TAG = "dozens.acae"
_FORMAT_VERSION = 1
ACAE_FILE = model_file_kind("an ACAE file", _FORMAT_TAG, _FORMAT_VERSION)


# ---------------------------------------------------------------------------------------------------
# Joint sides and the internal [left, right, centre] order
# ---------------------------------------------------------------------------------------------------
def joint_sides_from_names(joint_names: Sequence[str]) -> list[str]:
    """'left'/'right'/'center' per joint by the l/r prefix convention of ``assets.skeletons``.

    A name starting with 'l' or 'r' is sided only when its first-letter-swapped partner is also present;
    everything else (including an unpartnered 'l...' name) is a centre joint.
    """
    present = set(joint_names)
    sides = []
    for name in joint_names:
        partner = mirror_name(name)
        if partner is None or partner not in present:
            sides.append("center")
        else:
            sides.append("left" if name[0] == "l" else "right")
    return sides


@dataclass(frozen=True)
class _JointLayout:
    """Permutation of the caller's joints into [left pairs, right pairs (matched), centre]."""

    permutation: np.ndarray  # internal position -> caller index
    n_pairs: int
    n_center: int

    @property
    def inverse(self) -> np.ndarray:
        inverse = np.empty_like(self.permutation)
        inverse[self.permutation] = np.arange(len(self.permutation))
        return inverse


def _joint_layout(joint_names: Sequence[str], sides: Sequence[str], chiral: bool) -> _JointLayout:
    if not chiral:
        return _JointLayout(permutation=np.arange(len(joint_names)), n_pairs=0, n_center=len(joint_names))
    index = {name: i for i, name in enumerate(joint_names)}
    left, right, center, unmatched = [], [], [], []
    for i, (name, side) in enumerate(zip(joint_names, sides)):
        if side == "center":
            center.append(i)
            continue
        partner = mirror_name(name)
        wanted = "right" if side == "left" else "left"
        j = index.get(partner) if partner is not None else None
        if j is None or sides[j] != wanted:
            expected = f"{partner!r} marked {wanted!r}" if partner is not None else "an 'l'/'r' name prefix"
            unmatched.append(f"{name!r} ({side}, needs {expected})")
        elif side == "left":
            left.append(i)
            right.append(j)
    if unmatched:
        raise ValueError(
            "chiral mode needs every sided joint to have its mirror partner (same name with 'l'/'r' swapped, "
            f"marked the opposite side); unmatched: {', '.join(unmatched)}. Mark them 'center' or use chiral=False."
        )
    return _JointLayout(permutation=np.array(left + right + center, dtype=np.int64), n_pairs=len(left), n_center=len(center))


def _latent_sides(n_latent_sided: int, n_latent_center: int, chiral: bool) -> tuple[str, ...]:
    if not chiral:
        return (FREE_LATENT,) * (n_latent_sided + n_latent_center)
    k = n_latent_sided // 2
    return ("left",) * k + ("right",) * k + ("center",) * n_latent_center


# ---------------------------------------------------------------------------------------------------
# The trainable weights
# ---------------------------------------------------------------------------------------------------
def _uniform(shape, generator: torch.Generator) -> nn.Parameter:
    lo, hi = _INIT_RANGE
    return nn.Parameter(torch.rand(shape, generator=generator, dtype=torch.float32) * (hi - lo) + lo)


class _RawCombination(nn.Module):
    """Raw (unnormalised) weights of one affine-combination matrix, internal order, joints x latents.

    Chiral blocks, named after the module docstring's layout: S = same side, Q = opposite side, X = sided
    joint to centre latent, C = centre joint to sided latent, Z = centre joint to centre latent.
    """

    def __init__(self, n_pairs: int, n_center: int, k: int, c: int, chiral: bool, generator: torch.Generator):
        super().__init__()
        self.chiral = chiral
        if chiral:
            self.same_side = _uniform((n_pairs, k), generator)
            self.opposite_side = _uniform((n_pairs, k), generator)
            self.sided_to_center = _uniform((n_pairs, c), generator)
            self.center_to_sided = _uniform((n_center, k), generator)
            self.center_to_center = _uniform((n_center, c), generator)
        else:
            self.full = _uniform((2 * n_pairs + n_center, 2 * k + c), generator)

    def forward(self) -> torch.Tensor:
        if not self.chiral:
            return self.full
        return torch.cat(
            [
                torch.cat([self.same_side, self.opposite_side, self.sided_to_center], dim=1),
                torch.cat([self.opposite_side, self.same_side, self.sided_to_center], dim=1),
                torch.cat([self.center_to_sided, self.center_to_sided, self.center_to_center], dim=1),
            ],
            dim=0,
        )


class _AutoencoderWeights(nn.Module):
    """Encoder [J, L] and decoder [L, J] weights (internal order), each normalised to affine combinations."""

    def __init__(self, layout: _JointLayout, n_latent_sided: int, n_latent_center: int, chiral: bool, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        if chiral:
            k, c = n_latent_sided // 2, n_latent_center
        else:  # one free block: sizes only need to add up
            k, c = 0, n_latent_sided + n_latent_center
        self.encoder = _RawCombination(layout.n_pairs, layout.n_center, k, c, chiral, generator)
        self.decoder = _RawCombination(layout.n_pairs, layout.n_center, k, c, chiral, generator)

    def start_from(self, encoder: np.ndarray, decoder: np.ndarray, n_pairs: int, k: int) -> None:
        """Set the raw weights to affine ``encoder`` [J, L] and ``decoder`` [L, J] (columns summing to 1,
        chiral when this model is), so that the normalised weights equal them."""
        for raw, matrix in ((self.encoder, encoder), (self.decoder, decoder.T)):
            blocks = chiral_blocks(matrix, n_pairs, k) if raw.chiral else {"full": matrix}
            with torch.no_grad():
                for name, values in blocks.items():
                    getattr(raw, name).copy_(torch.as_tensor(values, dtype=torch.float32))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        raw_encoder = self.encoder()
        raw_decoder = self.decoder().T
        return raw_encoder / raw_encoder.sum(dim=0, keepdim=True), raw_decoder / raw_decoder.sum(dim=0, keepdim=True)


# ---------------------------------------------------------------------------------------------------
# NaN-aware affine combination on [..., 3, J] ("columns") layout, shared by training and inference
# ---------------------------------------------------------------------------------------------------
def _encode_columns(
    points: torch.Tensor,
    present: torch.Tensor | None,
    encoder: torch.Tensor,
    decoder: torch.Tensor,
    imputation_rounds: int,
    constant_fill: bool = False,
) -> torch.Tensor:
    """[..., 3, J] -> [..., 3, L]. ``present`` [..., J] marks known joints; None means all are known
    and ``points`` holds no NaN. Unknown joints must already be zero-filled in ``points``.

    With missing joints: redistribute the weight a latent loses to them over the present joints in
    proportion to |weight| (weights still sum to 1), then refine by decode-fill-encode rounds (see the
    module docstring). ``constant_fill`` stops gradients through the filled-in joints.
    """
    latents = points @ encoder
    if present is None:
        return latents
    present_weights = present.to(encoder.dtype)
    magnitude = encoder.abs()
    mass = present_weights @ encoder  # [..., L]
    abs_mass = (present_weights @ magnitude).clamp_min(torch.finfo(encoder.dtype).tiny)
    latents = latents + ((1.0 - mass) / abs_mass).unsqueeze(-2) * (points @ magnitude)
    known = present.unsqueeze(-2)
    for _ in range(imputation_rounds):
        fill = latents @ decoder
        latents = torch.where(known, points, fill.detach() if constant_fill else fill) @ encoder
    return latents


def _split_missing(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero-fill non-finite joints of [..., 3, J] and return the presence mask (None if all present)."""
    present = torch.isfinite(points).all(dim=-2)
    if bool(present.all()):
        return points, None
    return torch.where(present.unsqueeze(-2), points, torch.zeros((), dtype=points.dtype, device=points.device)), present


def _reconstruction_loss(target: torch.Tensor, pred: torch.Tensor, present: torch.Tensor | None, kind: str) -> torch.Tensor:
    """Mean absolute error over the present joints, in metres (3d) or mean-depth-scaled image units (projected)."""
    if kind == "3d":
        diff = (target - pred) / 1000.0
        coords = 3
    else:
        depth = target[..., 2, :]
        if present is not None:
            depth = torch.where(present, depth, torch.ones((), dtype=depth.dtype, device=depth.device))
            mean_depth = (depth * present).sum(-1) / present.sum(-1).clamp_min(1)
        else:
            mean_depth = depth.mean(-1)
        scale = (mean_depth / 1000.0)[..., None, None]
        target_xy = target[..., :2, :] / depth.unsqueeze(-2)
        pred_xy = pred[..., :2, :] / pred[..., 2:, :].clamp_min(_MIN_DEPTH_MM)
        diff = (target_xy - pred_xy) * scale
        coords = 2
    if present is None:
        return diff.abs().mean()
    weights = present.unsqueeze(-2).to(diff.dtype)
    return (diff.abs() * weights).sum() / (weights.sum() * coords).clamp_min(1)


# ---------------------------------------------------------------------------------------------------
# Errors for reports
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReconstructionErrors:
    """Per-joint mean errors in mm over the poses where the joint is known (NaN if never known).

    ``projected``: distance in the image plane, scaled to millimetres at the pose's mean depth
    (|p_xy/p_z - q_xy/q_z| * mean z), i.e. error perpendicular to the viewing rays; ignores depth.
    """

    per_joint_3d_mm: np.ndarray  # [J]
    per_joint_projected_mm: np.ndarray  # [J]
    mean_3d_mm: float  # over all known (pose, joint) entries
    mean_projected_mm: float


def reconstruction_errors(poses, reconstructed) -> ReconstructionErrors:
    """Errors of ``reconstructed`` against ``poses`` (both [N, J, 3] camera-frame mm, NaN = unknown).

    Works for any method's output (ACAE, PCA, ...), so benchmarks compare like with like.
    """
    true = _to_numpy64(poses)
    pred = _to_numpy64(reconstructed)
    if true.shape != pred.shape or true.ndim != 3 or true.shape[-1] != 3:
        raise ValueError(f"expected two [N, J, 3] arrays of the same shape, got {true.shape} and {pred.shape}")
    known = np.isfinite(true).all(-1) & np.isfinite(pred).all(-1)
    error_3d = np.where(known, np.linalg.norm(np.where(known[..., None], true - pred, 0.0), axis=-1), np.nan)

    projectable = known & (true[..., 2] > 0) & (pred[..., 2] > 0)
    safe_true = np.where(projectable[..., None], true, 1.0)
    safe_pred = np.where(projectable[..., None], pred, 1.0)
    mean_depth = (safe_true[..., 2] * projectable).sum(1, keepdims=True) / np.maximum(projectable.sum(1, keepdims=True), 1)
    image_offset = safe_true[..., :2] / safe_true[..., 2:] - safe_pred[..., :2] / safe_pred[..., 2:]
    error_projected = np.where(projectable, np.linalg.norm(image_offset, axis=-1) * mean_depth, np.nan)

    def per_joint(errors, valid):
        counts = valid.sum(0)
        return np.where(counts > 0, np.nansum(errors, 0) / np.maximum(counts, 1), np.nan)

    def overall(errors, valid):
        return float(np.nansum(errors) / valid.sum()) if valid.any() else math.nan

    return ReconstructionErrors(
        per_joint_3d_mm=per_joint(error_3d, known),
        per_joint_projected_mm=per_joint(error_projected, projectable),
        mean_3d_mm=overall(error_3d, known),
        mean_projected_mm=overall(error_projected, projectable),
    )


def _to_numpy64(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# The fitted model
# ---------------------------------------------------------------------------------------------------
class ACAE:
    """A fitted affine-combining autoencoder (inference only; see ``fit_acae`` for training).

    ``encode``/``decode``/``reconstruct`` accept numpy arrays or torch tensors of shape [..., J, 3] (or
    [..., L, 3] for ``decode``) and return the same kind; torch inputs stay on their device and keep
    autograd, so the decoder can sit at the end of a pose network. NaN joints in ``encode`` input are
    treated as unknown and imputed in ``imputation_rounds`` decode-fill-encode rounds (module docstring).
    """

    def __init__(
        self,
        encoder_weights,
        decoder_weights,
        joint_names: Sequence[str],
        joint_sides: Sequence[str],
        latent_sides: Sequence[str],
        info: dict | None = None,
        imputation_rounds: int = DEFAULT_IMPUTATION_ROUNDS,
    ):
        encoder = torch.as_tensor(np.asarray(encoder_weights), dtype=torch.float32).clone()
        decoder = torch.as_tensor(np.asarray(decoder_weights), dtype=torch.float32).clone()
        n_joints, n_latents = len(joint_names), len(latent_sides)
        if encoder.shape != (n_joints, n_latents) or decoder.shape != (n_latents, n_joints):
            raise ValueError(
                f"weights of shape {tuple(encoder.shape)} and {tuple(decoder.shape)} do not match "
                f"{n_joints} joints and {n_latents} latents (expected [J, L] and [L, J])"
            )
        if len(joint_sides) != n_joints:
            raise ValueError(f"{len(joint_sides)} joint sides for {n_joints} joints")
        self._encoder = encoder
        self._decoder = decoder
        self.joint_names = tuple(joint_names)
        self.joint_sides = tuple(joint_sides)
        self.latent_sides = tuple(latent_sides)
        self.info = dict(info or {})
        self.imputation_rounds = int(imputation_rounds)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_latents(self) -> int:
        return len(self.latent_sides)

    @property
    def chiral(self) -> bool:
        return FREE_LATENT not in self.latent_sides

    @property
    def encoder_weights(self) -> np.ndarray:
        """[J, L]; each column (one latent's weights over the joints) sums to 1."""
        return self._encoder.numpy().copy()

    @property
    def decoder_weights(self) -> np.ndarray:
        """[L, J]; each column (one output joint's weights over the latents) sums to 1."""
        return self._decoder.numpy().copy()

    def encode(self, poses):
        """[..., J, 3] -> [..., L, 3] latent points."""
        points, restore = _as_points(poses, self.num_joints, "poses", "J joints")
        columns, present = _split_missing(points.transpose(-1, -2))
        encoder = self._encoder.to(device=points.device, dtype=points.dtype)
        decoder = self._decoder.to(device=points.device, dtype=points.dtype)
        latents = _encode_columns(columns, present, encoder, decoder, self.imputation_rounds).transpose(-1, -2)
        if present is not None:  # a pose without any known joint has no latent position
            latents = torch.where(present.any(-1)[..., None, None], latents, torch.full((), math.nan, dtype=latents.dtype))
        return restore(latents)

    def decode(self, latents):
        """[..., L, 3] -> [..., J, 3] joints."""
        points, restore = _as_points(latents, self.num_latents, "latents", "L latents")
        decoder = self._decoder.to(device=points.device, dtype=points.dtype)
        return restore((points.transpose(-1, -2) @ decoder).transpose(-1, -2))

    def reconstruct(self, poses):
        """decode(encode(poses)): every joint, including those missing (NaN) in the input."""
        return self.decode(self.encode(poses))

    def reconstruction_error(self, poses) -> ReconstructionErrors:
        """Per-joint mm errors of ``reconstruct(poses)`` against the known joints of ``poses``."""
        return reconstruction_errors(poses, self.reconstruct(poses))

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path) -> Location:
        """Write one file atomically (assets.atomic_files)."""
        path = location(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT_TAG,
            "version": _FORMAT_VERSION,
            "encoder_weights": self._encoder,
            "decoder_weights": self._decoder,
            "config": json.dumps(
                {
                    "joint_names": list(self.joint_names),
                    "joint_sides": list(self.joint_sides),
                    "latent_sides": list(self.latent_sides),
                    "imputation_rounds": self.imputation_rounds,
                    "info": self.info,
                }
            ),
        }
        return save_torch_atomic(payload, path)

    @classmethod
    def load(cls, path) -> "ACAE":
        """Raises ``CheckpointError`` (a ``ValueError``) for a damaged file, one of another kind, or
        non-finite weights."""
        payload = load_checked(path, ACAE_FILE)
        with reading_contents(path, ACAE_FILE):
            config = json.loads(payload["config"])
            return cls(
                payload["encoder_weights"],
                payload["decoder_weights"],
                config["joint_names"],
                config["joint_sides"],
                config["latent_sides"],
                config["info"],
                config["imputation_rounds"],
            )

    def __repr__(self) -> str:
        kind = "chiral" if self.chiral else "non-chiral"
        return f"ACAE({self.num_joints} joints -> {self.num_latents} latents, {kind})"


def _as_points(array, count: int, what: str, count_name: str):
    """Torch view of a [..., count, 3] array and a function turning results back into the caller's kind."""
    if isinstance(array, torch.Tensor):
        tensor = array if array.is_floating_point() else array.float()

        def restore(result):
            return result
    else:
        numpy_array = np.asarray(array)
        if not np.issubdtype(numpy_array.dtype, np.floating):
            numpy_array = numpy_array.astype(np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(numpy_array))

        def restore(result):
            return result.numpy()
    if tensor.ndim < 2 or tuple(tensor.shape[-2:]) != (count, 3):
        raise ValueError(f"{what} must have shape [..., {count}, 3] ({count_name}), got {tuple(tensor.shape)}")
    return tensor, restore


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingProgress:
    """One progress report; ``str()`` gives a log line, so ``progress=print`` works."""

    step: int
    steps: int
    loss: float  # total objective, mean over the steps since the previous report
    reconstruction_loss: float  # its data term alone
    lr: float
    elapsed_s: float
    validation_3d_mm: float | None = None
    validation_projected_mm: float | None = None

    def __str__(self) -> str:
        line = (
            f"step {self.step:>6}/{self.steps}  loss {self.loss:.5f} (reconstruction {self.reconstruction_loss:.5f})"
            f"  lr {self.lr:.0e}  {self.elapsed_s:7.1f} s"
        )
        if self.validation_3d_mm is not None:
            line += f"  validation {self.validation_3d_mm:.2f} mm 3D, {self.validation_projected_mm:.2f} mm projected"
        return line


def _check_poses(poses, num_joints: int, what: str) -> np.ndarray:
    array = poses.detach().cpu().numpy() if isinstance(poses, torch.Tensor) else np.asarray(poses)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{what} must have shape [N, J, 3], got {array.shape}")
    if array.shape[1] != num_joints:
        raise ValueError(f"{what} have {array.shape[1]} joints but {num_joints} joint names were given")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} must be floating point (NaN marks missing joints), got dtype {array.dtype}")
    return array


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _to_columns(poses: np.ndarray, permutation: np.ndarray, device: torch.device):
    """Caller-order [N, J, 3] -> internal-order [N, 3, J] float32 on ``device``, zero-filled, plus presence."""
    columns = torch.from_numpy(np.ascontiguousarray(poses[:, permutation].transpose(0, 2, 1), dtype=np.float32))
    columns, present = _split_missing(columns)
    return columns.to(device), (None if present is None else present.to(device))


def fit_acae(
    poses,
    joint_names: Sequence[str],
    settings: AcaeFitSettings = AcaeFitSettings(),
    *,
    seed: int = 0,
    device=None,
    progress: Callable[[TrainingProgress], None] | None = None,
    log_every: int | None = None,
    validation_poses=None,
) -> ACAE:
    """Fit an ACAE to camera-frame poses [N, J, 3] in mm (NaN = missing joint).

    ``settings`` (``model.settings.AcaeFitSettings``):
    n_latent_sided: latents split evenly into left and right (must be even when ``chiral``).
    sides: 'left'/'right'/'center' per joint, overriding the l/r name convention.
    loss: 'projected' (image-plane error scaled by the pose's mean depth; needs positive depths) or '3d'.
    sparsity: weight of mean|W_e| + mean|W_d| over the normalised weights (it penalises negative weights).
    steps / epochs: training length, at most one of them (default ``DEFAULT_STEPS`` steps; 0: see init).
    lr_decay_at: fractions of the run after which the learning rate drops 10x each.
    imputation_rounds: decode-fill-encode rounds for poses with missing joints, in training and (kept in
    the model) at inference; costs nothing on complete data.
    init: 'random' (the paper's U(-0.1, 1) raw weights) or 'principal': the closed-form best autoencoder
    without sparsity (``model/acae_init.py``, from the complete poses; random if there are too few). With
    ``steps=0`` that closed form is the whole fit: the L2-best weights without sparsity, the floor of what
    the model class reaches on the data. Fine-tuning it further (sparsity 0, lr <= 1e-5) changes the
    error by under 1 %; larger learning rates drift away from it. The sparsity term at the paper's 0.6
    pulls far from it, and from there a random start ends better.

    How it runs:
    device: torch device; default CUDA when available, else CPU.
    progress: called with a ``TrainingProgress`` every ``log_every`` steps (default: ~20 reports per
    run); without it the reports go to this module's logger at INFO level.
    validation_poses: [M, J, 3] poses scored (mm errors) at every report.
    """
    if not isinstance(settings, AcaeFitSettings):
        raise TypeError(f"settings: expected an AcaeFitSettings, got {type(settings).__name__}")
    n_latent_sided, n_latent_center, chiral = settings.n_latent_sided, settings.n_latent_center, settings.chiral
    sides, loss, sparsity, init = settings.sides, settings.loss, settings.sparsity, settings.init
    steps, epochs, batch_size, lr = settings.steps, settings.epochs, settings.batch_size, settings.lr
    lr_decay_at, imputation_rounds = settings.lr_decay_at, settings.imputation_rounds
    joint_names = [str(name) for name in joint_names]
    duplicates = sorted({name for name in joint_names if joint_names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate joint names: {duplicates}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if n_latent_sided < 0 or n_latent_center < 0 or n_latent_sided + n_latent_center == 0:
        raise ValueError(f"need a positive number of latents, got n_latent_sided={n_latent_sided}, n_latent_center={n_latent_center}")
    if chiral and n_latent_sided % 2:
        raise ValueError(f"n_latent_sided must be even in chiral mode (split evenly left/right), got {n_latent_sided}")
    if sparsity < 0 or batch_size < 1 or lr <= 0 or imputation_rounds < 0 or not all(0 <= f <= 1 for f in lr_decay_at):
        raise ValueError(
            f"need sparsity >= 0, batch_size >= 1, lr > 0, imputation_rounds >= 0 and lr_decay_at in [0, 1], "
            f"got {sparsity}, {batch_size}, {lr}, {imputation_rounds}, {tuple(lr_decay_at)}"
        )
    if steps is not None and epochs is not None:
        raise ValueError("give either steps or epochs, not both")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")

    if sides is None:
        sides = joint_sides_from_names(joint_names)
    else:
        sides = list(sides)
        if len(sides) != len(joint_names):
            raise ValueError(f"sides has {len(sides)} entries for {len(joint_names)} joints")
        bad = sorted({str(s) for s in sides if s not in SIDES})
        if bad:
            raise ValueError(f"sides must be one of {SIDES}, got {bad}")
    layout = _joint_layout(joint_names, sides, chiral)

    array = _check_poses(poses, len(joint_names), "poses")
    known = np.isfinite(array).all(-1)
    never_known = [joint_names[j] for j in np.flatnonzero(~known.any(0))]
    if never_known:
        raise ValueError(f"joint {never_known[0]!r} has no finite value in any pose" + (
            f" (nor do {never_known[1:]})" if len(never_known) > 1 else ""))
    array = array[known.any(1)]  # poses without any known joint carry no information
    n_latents = n_latent_sided + n_latent_center
    if len(array) < n_latents:
        raise ValueError(f"{len(array)} poses < {n_latents} latents: need at least as many poses (with a known joint) as latents")
    if loss == "projected" and not np.all(array[..., 2][known[known.any(1)]] > 0):
        raise ValueError("the projected loss needs camera-frame poses with positive depth (z > 0) at every known joint; use loss='3d' otherwise")
    validation = None if validation_poses is None else _check_poses(validation_poses, len(joint_names), "validation_poses")

    batch_size = min(batch_size, len(array))
    if epochs is not None:
        steps = max(1, math.ceil(epochs * len(array) / batch_size))
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if steps < 0 or (steps == 0 and init != "principal"):
        raise ValueError(f"steps must be positive (or 0 with init='principal': the closed form alone), got {steps}")
    log_every = max(1, steps // 20) if log_every is None else int(log_every)
    report = progress if progress is not None else (lambda p: logger.info("ACAE %s", p))

    device = _resolve_device(device)
    data, present = _to_columns(array, layout.permutation, device)
    weights = _AutoencoderWeights(layout, n_latent_sided, n_latent_center, chiral, seed)
    started_from = "random"
    if init == "principal":
        complete = data if present is None else data[present.all(dim=-1)]
        k, c = (n_latent_sided // 2, n_latent_center) if chiral else (0, n_latent_sided + n_latent_center)
        start = principal_affine_weights(complete.cpu().numpy().reshape(-1, data.shape[-1]), layout.n_pairs,
                                         layout.n_center, k, c, chiral)
        if start is not None:
            weights.start_from(*start, layout.n_pairs, k)
            started_from = "principal"
        elif steps == 0:
            raise ValueError(f"steps=0 asks for the closed-form autoencoder alone, but {len(complete)} complete pose(s) "
                             f"cannot support {n_latents} latents (need more poses without missing joints)")
        else:
            logger.info("ACAE: too few complete poses for the principal start; starting from random weights")
    weights = weights.to(device)
    optimizer = torch.optim.Adam(weights.parameters(), lr=lr)
    decay_steps = sorted(int(f * steps) for f in lr_decay_at)
    sampler = torch.Generator().manual_seed(seed)
    joint_sides = list(sides)
    latent_sides = _latent_sides(n_latent_sided, n_latent_center, chiral)

    def snapshot() -> ACAE:
        with torch.no_grad():
            encoder, decoder = (w.detach().cpu() for w in weights())
        inverse = layout.inverse
        return ACAE(encoder[inverse], decoder[:, inverse], joint_names, joint_sides, latent_sides, imputation_rounds=imputation_rounds)

    started = time.perf_counter()
    order = torch.randperm(len(data), generator=sampler)
    cursor = 0
    running_total = torch.zeros((), device=device)
    running_reconstruction = torch.zeros((), device=device)
    history = []
    for step in range(1, steps + 1):
        current_lr = lr * 0.1 ** sum(step > s for s in decay_steps)
        for group in optimizer.param_groups:
            group["lr"] = current_lr
        if cursor + batch_size > len(order):
            order = torch.randperm(len(data), generator=sampler)
            cursor = 0
        index = order[cursor : cursor + batch_size].to(device)
        cursor += batch_size
        batch = data[index]
        batch_present = None if present is None else present[index]

        encoder, decoder = weights()
        pred = _encode_columns(batch, batch_present, encoder, decoder, imputation_rounds, constant_fill=True) @ decoder
        reconstruction = _reconstruction_loss(batch, pred, batch_present, loss)
        total = reconstruction + sparsity * (encoder.abs().mean() + decoder.abs().mean())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        running_total += total.detach()
        running_reconstruction += reconstruction.detach()

        if step % log_every == 0 or step == steps:
            count = (step - 1) % log_every + 1
            mean_total = running_total.item() / count
            if not math.isfinite(mean_total):
                raise RuntimeError(f"ACAE training diverged at step {step} (loss {mean_total}); try a lower lr")
            errors = snapshot().reconstruction_error(validation) if validation is not None else None
            record = TrainingProgress(
                step=step,
                steps=steps,
                loss=mean_total,
                reconstruction_loss=running_reconstruction.item() / count,
                lr=current_lr,
                elapsed_s=time.perf_counter() - started,
                validation_3d_mm=None if errors is None else errors.mean_3d_mm,
                validation_projected_mm=None if errors is None else errors.mean_projected_mm,
            )
            history.append(asdict(record))
            report(record)
            running_total.zero_()
            running_reconstruction.zero_()

    model = snapshot()
    if not (np.isfinite(model.encoder_weights).all() and np.isfinite(model.decoder_weights).all()):
        raise RuntimeError("ACAE training produced non-finite weights; try a lower lr")
    model.info = {
        "training": {
            "n_latent_sided": n_latent_sided,
            "n_latent_center": n_latent_center,
            "chiral": chiral,
            "loss": loss,
            "sparsity": sparsity,
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "lr_decay_at": list(lr_decay_at),
            "imputation_rounds": imputation_rounds,
            "init": started_from,
            "seed": seed,
            "device": str(device),
            "num_poses": len(array),
            "missing_fraction": float(1.0 - known[known.any(1)].mean()),
            "fit_seconds": time.perf_counter() - started,
        },
        "history": history,
    }
    return model
