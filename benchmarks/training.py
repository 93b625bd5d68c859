"""Benchmark: training and inference throughput (images/s) of the pose estimator per backbone and device.

For every backbone and device it times, after a warm-up,

  * train     full optimiser steps of ``training.py``'s recipe on one batch (forward, absolute
              reconstruction, the 3D-batch loss, backward, AdamW; bf16 autocast on CUDA) at batch --batch;
  * infer@B   ``MetrabsModel.predict`` on a batch of --batch crops (no flip test);
  * infer@1   unbatched ``predict``, one crop at a time: the setting of the paper's anchor, 28 FPS for
              EfficientNetV2-S at 256 px on an RTX 3090 (method.md); on a GPU this is latency-bound.

The model has the output joints of the demo's formats (``--formats all``: every registered format); inputs are random
crops with a plausible camera, since throughput does not depend on the pixel values. Data loading is not
included: the Zarr loader is measured by the demo run's metadata (images/s of the whole training step).

Backbones through timm (efficientnetv2_s) are skipped with a note when timm is not installed; weights are
random, which does not change the cost.

Run:  .venv/bin/python benchmarks/training.py [--backbones small_cnn,resnet50] [--sizes 64,128]
                                              [--batch 32] [--seconds 6] [--threads N]
"""

import argparse
import os
import sys
import time

import torch

from assets.joint_names import union_joint_names
from assets.skeletons import known_skeletons
from model.backbones import available_backbones
from model.losses import LossSettings, loss_3d_batch
from model.network import MetrabsConfig, MetrabsModel
from model.training import TrainingConfig, build_optimizer, learning_rate_at

FIVE_FORMATS = ("h36m_17", "mpi_inf_3dhp_28", "smpl_24", "coco_19", "blazepose_33")
DEFAULT_BACKBONES = ("small_cnn", "small_cnn_pyramid", "resnet18", "resnet50", "efficientnetv2_s")


def _stride_for(backbone: str, requested: int) -> int:
    # the ResNets and EfficientNet only come at stride 16 or 32
    return requested if backbone.startswith("small_cnn") else max(requested, 16)


def _inputs(batch: int, size: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)
    focal = 1.2 * size
    intrinsics = torch.tensor([[focal, 0.0, (size - 1) / 2], [0.0, focal, (size - 1) / 2], [0.0, 0.0, 1.0]])
    return images.to(device), intrinsics.expand(batch, 3, 3).contiguous().to(device)


def _target_poses(model: MetrabsModel, batch: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    joints = len(model.joint_names)
    offsets = torch.randn(batch, joints, 3, generator=generator) * 300.0
    return (offsets + torch.tensor([0.0, 0.0, 4000.0])).to(device)


def _time_loop(step, seconds: float, device: torch.device, minimum: int = 3) -> tuple[float, int]:
    """Seconds per call of ``step`` after two warm-up calls, over at least ``minimum`` calls."""
    step()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    calls, started = 0, time.perf_counter()
    while calls < minimum or time.perf_counter() - started < seconds:
        step()
        calls += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / calls, calls


def measure(backbone: str, size: int, stride: int, batch: int, device: torch.device, seconds: float,
            formats=FIVE_FORMATS, own_format_joints: bool = False) -> dict:
    config = MetrabsConfig(joint_names=union_joint_names(formats), backbone=backbone, image_size=size,
                           stride=stride)
    model = MetrabsModel(config).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    settings = LossSettings.from_config(config, abs_start_step=0)
    optimizer = build_optimizer(model.parameters(), TrainingConfig(learning_rate=1e-3, steps=1000), device)
    images, intrinsics = _inputs(batch, size, device)
    targets = _target_poses(model, batch, device)
    use_amp = device.type == "cuda"
    step_index = [0]
    own_joints, joint_valid = None, None
    if own_format_joints:  # as separate-heads training: example i labelled in format i mod F computes only those
        own_joints = model.own_format_joints([formats[i % len(formats)] for i in range(batch)])
        joint_valid = torch.zeros(batch, len(model.joint_names), dtype=torch.bool, device=device)
        indices, present, _ = own_joints
        rows = torch.arange(batch, device=device)[:, None].expand_as(indices)
        joint_valid[rows[present], indices[present]] = True

    def train_step():
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step_index[0], 1000, 1e-3)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(images, intrinsics, own_joints=own_joints)
        loss = loss_3d_batch(out["coords3d_abs"].float(), targets, intrinsics, settings=settings, step=100,
                             joint_valid=joint_valid)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_index[0] += 1

    def infer(count: int):
        def run():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                model.predict(images[:count], intrinsics[:count])
        return run

    train_seconds, train_calls = _time_loop(train_step, seconds, device)
    batched_seconds, _ = _time_loop(infer(batch), seconds / 2, device)
    single_seconds, _ = _time_loop(infer(1), seconds / 2, device)
    return {
        "backbone": backbone, "joints": len(config.joint_names), "own": own_format_joints, "device": device.type, "size": size, "stride": stride, "params_m": parameters / 1e6,
        "train": batch / train_seconds, "infer_batched": batch / batched_seconds, "infer_single": 1 / single_seconds,
        "train_steps_timed": train_calls,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES))
    parser.add_argument("--sizes", default="64,128", help="crop sizes (px), comma-separated")
    parser.add_argument("--stride", type=int, default=8, help="small_cnn stride (others use at least 16)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing budget per measurement")
    parser.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when present)")
    parser.add_argument("--formats", default="five", help="output formats: 'five' (h36m_17, mpi_inf_3dhp_28, "
                        "smpl_24, coco_19, blazepose_33), 'all' registered ones, or a comma-separated list")
    parser.add_argument("--own-format-joints", action="store_true",
                        help="train as separate heads do: each example computes only its own format's joints "
                             "(example i in format i mod the number of formats)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="CPU threads")
    args = parser.parse_args(argv)
    formats = {"five": FIVE_FORMATS, "all": tuple(known_skeletons())}.get(args.formats) or \
        tuple(args.formats.split(","))
    torch.set_num_threads(args.threads)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: this torch build sees no CUDA GPU")
    known = set(available_backbones())
    rows, notes = [], []
    for device_name in devices:
        device = torch.device(device_name)
        for backbone in args.backbones.split(","):
            if backbone not in known:
                notes.append(f"{backbone}: unknown backbone (available: {', '.join(sorted(known))})")
                continue
            for size in (int(s) for s in args.sizes.split(",")):
                stride = _stride_for(backbone, args.stride)
                try:
                    row = measure(backbone, size, stride, args.batch, device, args.seconds, formats,
                                  args.own_format_joints)
                except ImportError as error:
                    notes.append(f"{backbone}: skipped ({str(error).split(';')[0]})")
                    break
                rows.append(row)
                print(f"  measured {backbone} {size}px on {device_name}", file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name() if "cuda" in devices else ""
    print(f"\nPose estimator throughput, images/s (batch {args.batch}; CPU threads {args.threads}"
          f"{'; GPU ' + name if name else ''}; torch {torch.__version__})\n")
    header = f"{'backbone':18s} {'joints':>6s} {'own':>4s} {'device':6s} {'px':>4s} {'stride':>6s} {'params M':>8s} {'train':>9s} " \
             f"{'infer@B':>9s} {'infer@1':>9s} {'train vs small_cnn':>19s}"
    print(header)
    print("-" * len(header))
    reference = {(r["device"], r["size"]): r["train"] for r in rows if r["backbone"] == "small_cnn"}
    for r in rows:
        ratio = reference.get((r["device"], r["size"]))
        ratio_text = f"{r['train'] / ratio:.2f}x" if ratio else "-"
        print(f"{r['backbone']:18s} {r['joints']:6d} {'yes' if r['own'] else 'no':>4s} {r['device']:6s} {r['size']:4d} {r['stride']:6d} {r['params_m']:8.2f} "
              f"{r['train']:9.1f} {r['infer_batched']:9.1f} {r['infer_single']:9.1f} {ratio_text:>19s}")
    for note in notes:
        print(f"note: {note}")
    print("\nPaper anchor: EfficientNetV2-S, 256 px, RTX 3090, unbatched inference: 28 images/s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
