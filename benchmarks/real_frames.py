"""Benchmark: how the demo's model does on the real recording's held-out frames, as training grows.

Trains the initial model's recipe (``training.*`` of the config, mode ``separate``) on the demo's stores
and scores it on ``pose2sim_demo``'s test split (the recording's last block of time, all four cameras)
next to the mean-pose floor, for

  * --steps:      training runs of several lengths (each a whole run with its own schedule), all real
                  training instants;
  * --instants:   the same number of steps, with only the first k training instants of the recording
                  (the later ones are left out of training): a data-scaling curve.

For every run it prints PA-MPJPE and hip-aligned MPJPE (the virtual root of ``blazepose_33``) on the
real training crops and on the held-out frames, and the held-out figure relative to the floor. A
falling training error with a flat held-out error is a generalisation gap that more steps do not close.

Needs the demo's stores (``make demo`` first). Each run is a few minutes on 2 CPU cores.

Run:  .venv/bin/python benchmarks/real_frames.py [--steps 600,1200,2400] [--instants 20,41,82]
                                                 [--config params.yaml] [--out data/benchmarks/real_frames]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from assets.joint_names import skeleton_joint_indices
from assets.store import SPLITS, open_store, write_store
from evaluation.benchmark import mean_pose_baseline
from evaluation.metrics import mpjpe, pa_mpjpe
from orchestration.config import load_config
from orchestration.model_assets import training_sources

REAL = "pose2sim_demo"


def first_instants_store(source_path, instants: int, out_path) -> Path:
    """A copy of the recording's store whose training split keeps only its first ``instants`` frames
    (every camera of them); later training frames move to ``val``, the test split stays as it is."""
    store = open_store(source_path)
    arrays = {name: store.load(name) for name in store.array_names}
    train = arrays["split"] == SPLITS.index("train")
    kept_frames = np.unique(arrays["frame"][train])[:instants]
    arrays["split"] = np.where(train & ~np.isin(arrays["frame"], kept_frames), SPLITS.index("val"), arrays["split"])
    return write_store(out_path, arrays, dict(store.attrs))


def scores(model_path, store_path) -> dict:
    """PA-MPJPE and root-relative MPJPE (the format's root) on the train and test splits, flip test on."""
    from model.estimator import PoseEstimator

    estimator = PoseEstimator.load(model_path)
    store = open_store(store_path)
    skeleton = store.skeleton
    joints = skeleton_joint_indices(estimator.joint_names, skeleton.name)
    out = {}
    for split in ("train", "test"):
        rows = store.split_indices(split)
        images = store["image"].read_rows(rows)
        intrinsics = store["intrinsics"].get_orthogonal_selection((rows,))
        gt = store["pose3d"].get_orthogonal_selection((rows,)).astype(np.float64)
        labelled = np.isfinite(gt).all(-1).any(-1)
        pred = np.concatenate([estimator.predict(images[i:i + 64], intrinsics[i:i + 64], None, flip_test=True)
                               for i in range(0, len(rows), 64)])[:, joints]
        out[split] = {"pa_mpjpe_mm": float(np.nanmean(pa_mpjpe(pred[labelled], gt[labelled]))),
                      "mpjpe_mm": float(np.nanmean(mpjpe(pred[labelled], gt[labelled], skeleton.root_joints)))}
    return out


def run(config, steps: int, instants: int | None, work: Path) -> dict:
    from model.data import Source
    from model.training import TrainingConfig, train

    sources = training_sources(config)
    real_store = config.training_store_path(REAL)
    if instants is not None:
        subset = first_instants_store(real_store, instants, work / f"{REAL}-{instants}.zarr")
        sources = [Source(s.name, subset, s.count_per_batch, s.part) if s.name == REAL else s for s in sources]
    settings = config.training
    run_settings = TrainingConfig(mode="separate", steps=steps, learning_rate=settings.initial.learning_rate,
                                  backbone=settings.backbone, workers=settings.workers,
                                  image_cache_mb=settings.image_cache_mb, checkpoint_every=steps,
                                  image_size=settings.image_size or config.image_size, stride=settings.stride,
                                  abs_loss_start_step=max(1, steps // 6), weak_perspective_steps=max(1, steps // 20))
    started = time.perf_counter()
    result = train(run_settings, sources, work / f"model-{steps}-{instants}")
    return {"steps": steps, "instants": instants, "seconds": round(time.perf_counter() - started, 1),
            "images_per_second": round(result.images_per_second, 1),
            **scores(result.model_path, real_store)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="600,1200,2400", help="run lengths with all training instants")
    parser.add_argument("--instants", default="", help="numbers of training instants, at --instant-steps")
    parser.add_argument("--instant-steps", type=int, default=1200)
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default="data/benchmarks/real_frames", help="folder for the JSON results")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if REAL not in config.training.batch_3d:
        parser.error(f"the config's training.batch_3d has no {REAL!r}")
    real_store = config.training_store_path(REAL)
    floor = mean_pose_baseline(real_store)
    plans = [(int(s), None) for s in args.steps.split(",") if s]
    plans += [(args.instant_steps, int(k)) for k in args.instants.split(",") if k]
    rows = []
    with tempfile.TemporaryDirectory(prefix="real-frames-") as work:
        for steps, instants in plans:
            print(f"  training {steps} steps on {'all' if instants is None else instants} real training instants",
                  file=sys.stderr, flush=True)
            rows.append(run(config, steps, instants, Path(work)))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "latest.json").write_text(json.dumps({"floor": floor, "runs": rows}, indent=1))

    print(f"\n{REAL}: held-out frames {floor['examples']}, root {floor['root']}; mean-pose floor "
          f"({floor['frame']} frame) PA-MPJPE {floor['pa_mpjpe_mm']:.1f} mm, MPJPE {floor['mpjpe_mm']:.1f} mm\n")
    header = (f"{'steps':>6} {'instants':>8} {'train PA':>9} {'train MPJPE':>12} {'test PA':>8} {'test MPJPE':>11} "
              f"{'PA / floor':>11} {'MPJPE / floor':>14} {'img/s':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['steps']:>6} {('all' if r['instants'] is None else r['instants']):>8} "
              f"{r['train']['pa_mpjpe_mm']:>9.1f} {r['train']['mpjpe_mm']:>12.1f} {r['test']['pa_mpjpe_mm']:>8.1f} "
              f"{r['test']['mpjpe_mm']:>11.1f} {r['test']['pa_mpjpe_mm'] / floor['pa_mpjpe_mm']:>11.2f} "
              f"{r['test']['mpjpe_mm'] / floor['mpjpe_mm']:>14.2f} {r['images_per_second']:>6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
