"""Training runs of the pose estimator (method.md §2, §3, §7): one loop for all four modes.

- ``separate``: one output per joint of every skeleton format (step 1 of the paper's workflow);
- ``consistency``: the same outputs plus a penalty on their distance from the frozen autoencoder's
  reconstruction of them (step 3 default);
- ``latent``: the head predicts the autoencoder's latent keypoints, decoded into every format;
- ``hybrid``: latents and joints, with the student-teacher terms of the reference.

The loop checkpoints every ``checkpoint_every`` steps (atomically) and resumes from the last checkpoint,
seeing exactly the batches an uninterrupted run would have seen. CUDA is used with bf16 autocast when
present; the same code runs on the CPU.

The same loop runs in each process of a torch.distributed group (``model.distributed.launch_training``
starts them): every process computes its slots of the same global batch, the loss is that of the global
batch, and only rank 0 writes files, so a run may resume on another number of processes
(docs/distributed_training.md).

A damaged or foreign checkpoint raises ``CheckpointError`` rather than being trained on; a loss, gradient
or weight that becomes NaN, infinite or absurdly large raises ``TrainingDivergedError`` before anything
non-finite is written, so the last good checkpoint survives and no broken ``model.pt`` appears.
"""

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from assets.atomic_files import write_bytes_atomically
from assets.joint_names import union_joint_names
from assets.locations import Location, location
from assets.store import open_store
from model.checkpoints import FileKind, listed, load_checked, non_finite_entries
from model.data import PARTS, MultiDatasetBatches, Source
from model.estimator import MODES, PoseEstimator, latent_point_names
from model.losses import LossSettings, combined_loss, consistency_loss, loss_2d_batch, loss_3d_batch
from model.network import MetrabsConfig, MetrabsModel
from model.persistence import save_torch_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.json"
CHECKPOINT_KIND = FileKind("a training checkpoint", "dozens.training_checkpoint", 1,
                           "Delete it to start the run from scratch.")
# Every loss term is an L1 error in metres of people in a 2.2 m box at most tens of metres from the camera,
# so even an untrained network's loss is metres (thousands for a degenerate depth solve); a thousand
# kilometres only comes from weights that are running away, and stopping there names the step it began
# rather than the later one where float32 overflows into inf/NaN.
EXPLODED_LOSS_METRES = 1e6


class TrainingDivergedError(RuntimeError):
    """The loss, a gradient or a weight became non-finite or exploded; nothing of it was saved."""


@dataclass(frozen=True)
class TrainingConfig:
    mode: str = "separate"
    steps: int = 600
    learning_rate: float = 2e-3
    weight_decay: float = 3e-3  # decoupled, scaled like the reference: wd / sqrt(steps) / lr per step
    abs_loss_start_step: int = 100  # the paper: 5000 of 400k
    weak_perspective_steps: int = 30  # the paper: 500
    bn_inference_steps: int = 0  # last steps with BatchNorm statistics frozen (the paper: 1000)
    consistency_weight: float = 1.0
    # consistency mode: examples per step that compute every format's joints for the consistency term
    # (None: all, as the reference); the others compute only their own format's joints, which is all the
    # supervised loss reads. The term is then a mean over a random sample of the batch, at a fraction of
    # the cost: the head's cost grows with the joints it computes.
    consistency_examples: int | None = None
    teacher_start_step: int = 100  # hybrid mode: when the latent head starts learning from the joints
    checkpoint_every: int = 100
    log_every: int = 20
    seed: int = 0
    workers: int = 2
    image_cache_mb: int = 512  # decoded crops kept in memory per loader process (see StoreExamples)
    backbone: str = "small_cnn"
    image_size: int = 128
    stride: int = 16
    device: str | None = None  # None: CUDA when available, else CPU
    mixed_precision: bool = True  # bf16 autocast, CUDA only
    augment: bool = True  # False: the crops as stored (runs to be compared example by example)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.consistency_examples is not None and self.consistency_examples < 1:
            raise ValueError(f"consistency_examples: expected a positive number or None, got {self.consistency_examples}")
        if self.steps < 1 or self.checkpoint_every < 1:
            raise ValueError(f"steps and checkpoint_every must be positive, got {self.steps}, {self.checkpoint_every}")

    def fingerprint(self, sources: Sequence[Source]) -> str:
        import hashlib

        ignored = {"workers", "device", "log_every", "image_cache_mb"}  # how a run executes, not what it learns
        spec = {k: v for k, v in asdict(self).items() if k not in ignored}
        spec["sources"] = [[s.name, str(s.store_path), s.count_per_batch, s.part, s.split] for s in sources]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainingResult:
    model_path: Location
    steps: int
    resumed_from: int
    history: list[dict] = field(default_factory=list)
    images_per_second: float = 0.0
    device: str = "cpu"
    seconds: float = 0.0


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def learning_rate_at(step: int, steps: int, base: float) -> float:
    """The reference schedule: exponential decay to base/3 over the first 92% of the run, then a restart
    at base/30 decaying by a further x0.3 until the end."""
    switch = int(0.92 * steps)
    if step < switch:
        return base * (1 / 3) ** (step / max(switch, 1))
    return base / 30 * 0.3 ** ((step - switch) / max(steps - switch, 1))


def build_estimator(config: TrainingConfig, skeletons: Sequence[str], acae=None) -> PoseEstimator:
    joint_names = union_joint_names(skeletons)
    if config.mode in ("consistency", "latent", "hybrid"):
        if acae is None:
            raise ValueError(f"mode {config.mode!r} needs a fitted autoencoder (acae)")
        if tuple(acae.joint_names) != tuple(joint_names):
            raise ValueError("the autoencoder's joints differ from the model's union of skeleton joints "
                             f"({len(acae.joint_names)} vs {len(joint_names)}); fit it on this model's outputs")
    heads = joint_names
    decoder = None
    if config.mode in ("latent", "hybrid"):
        latents = latent_point_names(acae.latent_sides)
        heads = latents + (joint_names if config.mode == "hybrid" else ())
        decoder = acae.decoder_weights
    network = MetrabsModel(MetrabsConfig(joint_names=heads, backbone=config.backbone,
                                         image_size=config.image_size, stride=config.stride))
    return PoseEstimator(network, config.mode, joint_names, decoder)


def build_optimizer(parameters, config: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the reference's decoupled weight decay, scaled per step (see ``TrainingConfig``). Fused, one
    kernel over all tensors where torch has one: the per-tensor loop took a tenth of a demo step on 2 cores."""
    return torch.optim.AdamW(parameters, lr=config.learning_rate,
                             weight_decay=config.weight_decay / math.sqrt(config.steps) / config.learning_rate,
                             fused=device.type in ("cpu", "cuda"))


def copy_matching_weights(target: torch.nn.Module, source_path) -> list[str]:
    """Initialise from another estimator file where names and shapes match (backbone always; the head
    where the outputs are the same). Returns the names that were not copied."""
    source = PoseEstimator.load(source_path).state_dict()
    own = target.state_dict()
    copied = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape and k != "decoder"}
    own.update(copied)
    target.load_state_dict(own)
    return sorted(set(own) - set(copied))


class _Objective:
    """The loss of one step for the configured mode."""

    def __init__(self, config: TrainingConfig, estimator: PoseEstimator, settings: LossSettings, acae, device):
        self.config, self.estimator, self.settings = config, estimator, settings
        self.recon = None
        if acae is not None:
            encoder = torch.as_tensor(acae.encoder_weights, dtype=torch.float32)
            decoder = torch.as_tensor(acae.decoder_weights, dtype=torch.float32)
            self.encoder = encoder.to(device)
            self.recon = (encoder @ decoder).to(device)  # [J, J]: encode then decode, applied per axis

    def reconstruct(self, poses: Tensor) -> Tensor:
        return torch.einsum("jk,bjd->bkd", self.recon.to(poses.dtype), poses)

    def __call__(self, out: dict, batch3d: dict | None, batch2d: dict | None, step: int,
                 consistency_rows: Tensor | None = None) -> dict[str, Tensor]:
        """``consistency_rows``: bool [B], the examples that computed every joint (None: all of them)."""
        n3 = 0 if batch3d is None else len(batch3d["pose3d"])
        terms = {}

        def supervised(pred: Tensor) -> Tensor:
            total = pred.new_zeros(())
            if batch3d is not None:
                l3 = loss_3d_batch(pred[:n3], batch3d["pose3d"], batch3d["intrinsics"], settings=self.settings,
                                   step=step, joint_valid=batch3d["joint_valid"])
                terms.update({f"3d_{k}": v.detach() for k, v in l3.items()})
                total = total + l3["total"]
            if batch2d is not None:
                l2 = loss_2d_batch(pred[n3:], batch2d["pose2d"], batch2d["intrinsics"], settings=self.settings,
                                   joint_valid=batch2d["joint_valid"])
                terms["2d"] = l2.detach()
                total = combined_loss(total, l2, self.settings)
            return total

        def consistency(pred: Tensor) -> Tensor:
            # the 2D batch counts 0.2 as much, as its supervised loss does
            weights = pred.new_tensor([1.0] * n3 + [self.settings.weight_2d] * (len(pred) - n3))
            if consistency_rows is not None:
                pred, weights = pred[consistency_rows], weights[consistency_rows]
            per_example = (pred - self.reconstruct(pred)).abs().mean(dim=(1, 2)) / 1000
            return (per_example * weights).sum() / max(len(pred), 1)

        joints = out["joints"].float()
        if self.config.mode in ("separate", "latent"):
            total = supervised(joints)
        elif self.config.mode == "consistency":
            cons = consistency(joints)
            terms["consistency"] = cons.detach()
            total = supervised(joints) + self.config.consistency_weight * cons
        else:  # hybrid (method.md §7c)
            direct = out["direct"].float()
            total = supervised(joints) + supervised(direct) + supervised(self.reconstruct(direct))
            cons = consistency(direct)
            terms["consistency"] = cons.detach()
            total = total + cons
            if step >= self.config.teacher_start_step:
                teacher = torch.einsum("jl,bjd->bld", self.encoder.to(direct.dtype), direct.detach())
                student = out["latents"].float()
                teach = consistency_loss(student, lambda _: teacher)
                terms["teacher"] = teach.detach()
                total = total + teach
        terms["total"] = total
        return terms


def _to_device(batch: dict | None, device) -> dict | None:
    if batch is None:
        return None
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


_LOSS_LABELS = ("pose3d", "pose2d", "intrinsics", "joint_valid")  # what the objective reads of a batch part


def _global_batch(tensors: dict[str, Tensor], rank_rows: list[np.ndarray], rank: int) -> dict[str, Tensor]:
    """Each tensor [this process's rows, ...] completed with the other processes' rows into the global
    batch [rows, ...], in global order (``MultiDatasetBatches.rank_rows``): the same on every process.
    Only this process's rows keep their autograd graph; the others' gradients flow in their own processes.

    Tensors are float32, bfloat16 or bool, which float32 holds exactly: one collective carries them all.
    """
    packed = torch.cat([value.detach().flatten(1).float() for value in tensors.values()], dim=1)
    gathered = [torch.empty_like(packed) for _ in rank_rows]
    dist.all_gather(gathered, packed)
    order = torch.as_tensor(np.argsort(np.concatenate(rank_rows)), device=packed.device)
    result, start = {}, 0
    for name, own in tensors.items():
        width = math.prod(own.shape[1:])
        pieces = [own if other == rank else rows[:, start:start + width].reshape(own.shape).to(own.dtype)
                  for other, rows in enumerate(gathered)]
        result[name] = torch.cat(pieces)[order]
        start += width
    return result


def train(
    config: TrainingConfig,
    sources: Sequence[Source],
    out_dir,
    *,
    acae=None,
    init_from=None,
    progress: Callable[[str], None] | None = None,
    stop_after: int | None = None,
    data_fingerprint: str = "",
    distributed: bool = False,
) -> TrainingResult:
    """Train (or resume) a run in ``out_dir``; the finished estimator is ``out_dir/model.pt``.

    A checkpoint is resumed only if it belongs to the same run: same settings, sources and
    ``data_fingerprint`` (the caller's digest of the training data, initial weights and autoencoder).

    ``stop_after`` ends the process-local loop after that many steps of this call (tests simulate a kill).

    ``distributed``: this call is one of the processes of an initialised torch.distributed group, all
    called alike (``model.distributed.launch_training`` starts them on ``config.device``'s device type,
    one GPU each). Each process computes its slots of every global batch and the gradients of the global
    batch's loss are averaged across them; only rank 0 reports progress and writes files.
    """
    if distributed and not dist.is_initialized():
        raise ValueError("distributed=True: expected an initialised torch.distributed process group "
                         "(model.distributed.launch_training starts one per process)")
    rank, nproc = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    report = (progress or log.info) if rank == 0 else _report_nothing
    out_dir = location(out_dir)  # a local folder or an object-store prefix
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    where = f"{device.type} x{nproc} ({dist.get_backend()})" if distributed else str(device)
    skeletons = []
    for source in sources:
        skeleton = open_store(source.store_path).attrs["skeleton"]
        if skeleton not in skeletons:
            skeletons.append(skeleton)
    torch.manual_seed(config.seed)  # the initial weights
    estimator = build_estimator(config, skeletons, acae).to(device)
    if init_from is not None:
        fresh = copy_matching_weights(estimator, init_from)
        report(f"initialised from {init_from}; freshly initialised: {len(fresh)} tensors")
    settings = LossSettings.from_config(estimator.network.config, abs_start_step=config.abs_loss_start_step)
    optimizer = build_optimizer(estimator.parameters(), config, device)
    objective = _Objective(config, estimator, settings, acae, device)
    fingerprint = f"{config.fingerprint(sources)}:{data_fingerprint}"

    start_step, history = 0, []
    checkpoint_path = out_dir / CHECKPOINT_FILE
    if checkpoint_path.exists():
        checkpoint = load_checked(checkpoint_path, CHECKPOINT_KIND, map_location=device)
        if checkpoint.get("fingerprint") == fingerprint:
            estimator.load_state_dict(checkpoint["estimator"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            start_step, history = checkpoint["step"], checkpoint["history"]
            report(f"resuming from step {start_step} ({checkpoint_path})")
        else:
            report(f"ignoring {checkpoint_path}: it belongs to a run with other settings")
    resumed_from = start_step
    use_amp = config.mixed_precision and device.type == "cuda"
    # labels come in the union joint layout, whatever the head predicts
    batches = MultiDatasetBatches(list(sources), estimator.joint_names, steps=config.steps, seed=config.seed,
                                  workers=config.workers, start_step=start_step, augment=config.augment,
                                  image_size=config.image_size, image_cache_mb=config.image_cache_mb,
                                  rank=rank, nproc=nproc)
    global_batch_size = sum(source.count_per_batch for source in sources)
    batch_rows = batches.rank_rows()
    part_rows = {part: batches.rank_rows(part) for part in PARTS}
    own_rows = torch.as_tensor(batch_rows[rank], device=device)
    # a run resumed after the BatchNorm freeze must freeze it at once
    freeze_batch_norm_at = max(config.steps - config.bn_inference_steps, start_step) \
        if config.bn_inference_steps else None
    # DDP averages the processes' gradients (and keeps rank 0's BatchNorm statistics on all of them)
    model = DistributedDataParallel(estimator, device_ids=[device] if device.type == "cuda" else None) \
        if distributed else estimator

    model.train()
    started = time.perf_counter()
    images_seen = 0
    step = start_step
    window: list[dict] = []
    for batch in batches:
        if stop_after is not None and step - start_step >= stop_after:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config.steps, config.learning_rate)
        if step == freeze_batch_norm_at:
            for module in estimator.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        torch.manual_seed(config.seed * 1_000_003 + step)
        # the per-example 3D/2D mix of the whole global batch, of which this process takes its rows
        mix = torch.rand(global_batch_size, device=device)[own_rows]
        part3d, part2d = _to_device(batch.get("3d"), device), _to_device(batch.get("2d"), device)
        parts = [p for p in (part3d, part2d) if p is not None]
        images = torch.cat([p["image"] for p in parts])
        intrinsics = torch.cat([p["intrinsics"] for p in parts])
        # separate heads learn only from their own format's labels, so each example computes only its
        # format's joints (the other modes' losses read every joint)
        own_joints, consistency_rows = _joints_to_compute(config, estimator, parts, global_batch_size, own_rows)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(images, intrinsics, mix_3d_inside_fov=mix,
                        weak_perspective=step < config.weak_perspective_steps, own_joints=own_joints)
        if distributed:
            # the losses are means over the valid entries of the whole global batch (model.losses): each
            # process computes them from the global batch's predictions and labels
            out = _global_batch(out, batch_rows, rank)
            if part3d is not None:
                part3d = _global_batch({k: part3d[k] for k in _LOSS_LABELS}, part_rows["3d"], rank)
            if part2d is not None:
                part2d = _global_batch({k: part2d[k] for k in _LOSS_LABELS}, part_rows["2d"], rank)
        terms = objective(out, part3d, part2d, step, consistency_rows)
        optimizer.zero_grad(set_to_none=True)
        # each process's gradient is the global loss's through its own rows only: DDP's mean of them,
        # times nproc, is the gradient of the global batch
        (terms["total"] * nproc).backward()
        gradient_norm = torch.nn.utils.clip_grad_norm_(estimator.parameters(), 10.0)
        # checked before the update, so the weights (and any later checkpoint) stay those of the last good step
        losses = {k: float(v.detach()) for k, v in terms.items()}
        _stop_if_diverged(losses, float(gradient_norm), step + 1, config.steps, checkpoint_path)
        optimizer.step()
        step += 1
        images_seen += global_batch_size
        window.append(losses)
        if step % config.log_every == 0 or step == config.steps:
            mean = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
            rate = images_seen / max(time.perf_counter() - started, 1e-9)
            history.append({"step": step, **mean, "lr": learning_rate_at(step - 1, config.steps, config.learning_rate),
                            "images_per_second": rate})
            report(f"step {step}/{config.steps}  loss {mean['total']:.4f}  {rate:.0f} img/s on {where}")
            window = []
        if step % config.checkpoint_every == 0 or step == config.steps:
            _stop_if_weights_not_finite(estimator, optimizer, step, config.steps, checkpoint_path)
            if rank == 0:
                save_torch_atomic({"format": CHECKPOINT_KIND.format_tag, "version": CHECKPOINT_KIND.version,
                                   "step": step, "fingerprint": fingerprint, "estimator": estimator.state_dict(),
                                   "optimizer": optimizer.state_dict(), "history": history}, checkpoint_path)
    seconds = time.perf_counter() - started
    rate = images_seen / max(seconds, 1e-9)
    if step >= config.steps:
        _stop_if_weights_not_finite(estimator, optimizer, step, config.steps, checkpoint_path)
        if rank == 0:
            estimator.save(out_dir / MODEL_FILE)
            write_bytes_atomically(out_dir / HISTORY_FILE, json.dumps(history, indent=1).encode())
    return TrainingResult(model_path=out_dir / MODEL_FILE, steps=step, resumed_from=resumed_from, history=history,
                          images_per_second=rate, device=where, seconds=seconds)


def _joints_to_compute(config: TrainingConfig, estimator: PoseEstimator, parts: list[dict], global_batch_size: int,
                       own_rows: Tensor) -> tuple[tuple | None, Tensor | None]:
    """(the network's ``own_joints`` for this process's rows or None for every joint, the global batch's
    rows that compute every joint for the consistency term or None for all). Separate heads learn only
    from their own format's labels; the consistency mode also needs every joint of its sampled rows."""
    if config.mode == "separate":
        everything = None
    elif config.mode == "consistency" and config.consistency_examples is not None:
        everything = torch.zeros(global_batch_size, dtype=torch.bool, device=own_rows.device)
        everything[torch.randperm(global_batch_size, device=own_rows.device)[:config.consistency_examples]] = True
    else:
        return None, None
    skeletons = [name for part in parts for name in part["skeleton"]]
    own_joints = estimator.network.own_format_joints(skeletons, None if everything is None else everything[own_rows])
    return own_joints, everything


def _report_nothing(message: str) -> None:
    """Progress of the processes other than rank 0: their losses and steps are rank 0's."""


def _stop_if_diverged(losses: dict[str, float], gradient_norm: float, step: int, steps: int, checkpoint_path: Path):
    total = losses["total"]
    if math.isfinite(total) and math.isfinite(gradient_norm) and abs(total) <= EXPLODED_LOSS_METRES:
        return
    if not math.isfinite(total):
        problem = "the loss is not finite"
    elif abs(total) > EXPLODED_LOSS_METRES:
        problem = f"the loss exploded beyond {EXPLODED_LOSS_METRES:g} m"
    else:
        problem = "the gradient is not finite"
    terms = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
    raise TrainingDivergedError(
        f"training diverged at step {step}/{steps}: {problem} (loss terms in m: {terms}; gradient norm "
        f"{gradient_norm:.4g}). {_after_divergence(checkpoint_path)}"
    )


def _stop_if_weights_not_finite(estimator: PoseEstimator, optimizer: torch.optim.Optimizer, step: int, steps: int,
                                checkpoint_path: Path):
    broken = non_finite_entries({"estimator": estimator.state_dict(), "optimizer": optimizer.state_dict()["state"]})
    if broken:
        raise TrainingDivergedError(f"training diverged by step {step}/{steps}: NaN or infinite values in "
                                    f"{listed(broken)}. {_after_divergence(checkpoint_path)}")


def _after_divergence(checkpoint_path: Path) -> str:
    kept = f"{checkpoint_path} is left as it was" if checkpoint_path.exists() else "no checkpoint was written"
    # resuming would only repeat the same steps: the remedy changes the settings or data, which starts a new run
    return (f"Nothing of the diverged weights was saved ({kept}). Lower the learning rate or check the "
            "training labels for absurd values, then train again.")
