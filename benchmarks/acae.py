"""Benchmark: the affine-combining autoencoder against PCA at equal latent dimensionality.

Prints one table: fit time and held-out reconstruction error (mean per-joint 3D error and projected
error, mm) of

  * ACAE, 48 latents (40 sided + 8 centre), chiral, projected loss -- the paper's configuration
  * ACAE, 48 latents, non-chiral (free matrices), projected loss
  * ACAE, 48 latents, chiral, plain 3D loss
  * ACAE, 48 latents, chiral, projected loss, without the sparsity term (it penalises negative weights,
    which makes the weights interpretable but costs accuracy)
  * the closed-form best autoencoder without sparsity (``init="principal", steps=0``,
    ``model/acae_init.py``), chiral and non-chiral: the optimum of the model class in squared 3D error,
    so no ACAE of that kind comes much closer to PCA in 3D error on these poses (fine-tuning it on the
    mean per-joint error gained < 1 %). It is not a floor for the projected error: a projected-loss fit
    may trade depth for image-plane accuracy and go below it (it does on the pipeline's pseudo-GT).
  * PCA with 3 * 48 = 144 components

on two datasets, both drawn from the synthetic demo world (``assets.synthetic.sample_all_formats``): its
body model read off in several skeleton formats for the very same poses, one random camera per pose
(camera-frame mm); training and held-out poses come from different subjects and motions. The labels are
exact (no annotation noise), and every joint is a fixed point on one of 22 rigid parts of a subject's body
(subjects differ in proportions). Such poses are nearly linear: 144 principal components reproduce them
to a fraction of a millimetre, a best case for PCA. The ACAE's 48 latents are points whose x, y and z
share one set of weights, a much narrower model; it buys exact equivariance and mirror symmetry instead.

  demo   every built-in format (the table gives the joint count), 30k training poses
  large  4 formats (165 joints), 100k training poses: the fit-time target's size

and, when the pipeline has run (``make demo``), on the data the ``acae`` asset really fits: the initial
model's all-skeleton pseudo-GT (``data/stores/all_skeleton_pseudo_gt.zarr``; network predictions, so
noisy), the last fifth of each dataset's rows held out (other subjects and sequences than the rest).

PCA (``evaluation/pose_pca.py``) works on the flattened poses after subtracting each pose's centroid over
the joints and the training mean; the centroid is added back exactly at reconstruction. PCA thus gets
translation for free (3 numbers per pose beyond its 144 coordinates), as the ACAE gets it from its affine
weights; it must still model the global rotation, which the ACAE is equivariant to.

Run:  .venv/bin/python benchmarks/acae.py [--quick] [--steps N] [--threads N] [--device cpu|cuda] [--datasets demo,large,pipeline]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from assets.artifacts import read_zarr_group
from assets.skeletons import BUILTIN_FORMATS, get_skeleton
from evaluation.autoencoder_experiment import held_out_true_poses
from evaluation.pose_pca import CentredPCA
from model.acae import fit_acae, reconstruction_errors
from model.settings import AcaeFitSettings

ALL_FORMATS = BUILTIN_FORMATS
LARGE_FORMATS = ("bml_movi_87", "smplx_42", "h36m_17", "coco_19")  # surface markers, hands, face: 165 joints
N_LATENT_SIDED, N_LATENT_CENTER = 40, 8
TRAIN_SEED, TEST_SEED = 1, 2  # sample_all_formats keys subjects and motions by seed: the splits share none


def demo_world_poses(num_poses: int, formats, seed: int) -> tuple[np.ndarray, list[str]]:
    """[num_poses, J, 3] camera-frame mm of the demo body in ``formats`` (row n: the same body and pose in
    every format, each pose seen by its own camera: ``held_out_true_poses``), and joint names
    '<joint>_<format>' (the l/r prefix stays first, so mirror pairs are kept)."""
    names = [f"{joint}_{name}" for name in formats for joint in get_skeleton(name).joint_names]
    return held_out_true_poses(names, num_poses, seed).astype(np.float32), names


def pipeline_pseudo_gt(path: Path, held_out_fraction: float = 0.2):
    """(train, held-out, joint names) from the pipeline's all-skeleton pseudo-GT store, or None if absent.
    Rows are evenly spaced over each dataset's training crops in order, so each dataset's tail holds
    other sequences (and usually other subjects) than its head."""
    if not (path / "zarr.json").exists():
        return None
    arrays, attrs = read_zarr_group(path)
    poses, codes = arrays["poses"].astype(np.float32), arrays["dataset"]
    held_out = np.zeros(len(poses), dtype=bool)
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        held_out[rows[int(round(len(rows) * (1 - held_out_fraction))):]] = True
    keep = np.isfinite(poses).all(axis=(1, 2))  # the PCA needs complete poses; the few with a joint
    return poses[~held_out & keep], poses[held_out & keep], list(attrs["joint_names"])  # behind the camera go


def evaluate(dataset: str, train: np.ndarray, test: np.ndarray, names, fit_kwargs: dict, device: str) -> list[dict]:
    rows = []
    started = time.perf_counter()
    pca = CentredPCA(train, 3 * (N_LATENT_SIDED + N_LATENT_CENTER))
    pca_seconds = time.perf_counter() - started
    pca_errors = reconstruction_errors(test, pca.reconstruct(test))

    variants = (
        ("ACAE chiral, projected loss", dict(chiral=True, loss="projected")),
        ("ACAE non-chiral, projected loss", dict(chiral=False, loss="projected")),
        ("ACAE chiral, 3D loss", dict(chiral=True, loss="3d")),
        ("ACAE chiral, projected, sparsity 0", dict(chiral=True, loss="projected", sparsity=0.0)),
        ("ACAE chiral, closed form (3D L2 optimum, λ=0)", dict(chiral=True, init="principal", steps=0)),
        ("ACAE non-chiral, closed form (3D L2 optimum)", dict(chiral=False, init="principal", steps=0)),
    )
    for label, options in variants:
        print(f"[{dataset}] fitting {label} on {train.shape[0]} poses x {train.shape[1]} joints", file=sys.stderr)
        started = time.perf_counter()
        settings = AcaeFitSettings(n_latent_sided=N_LATENT_SIDED, n_latent_center=N_LATENT_CENTER, **(fit_kwargs | options))
        model = fit_acae(train, names, settings, device=device, progress=lambda p: print(f"  {p}", file=sys.stderr))
        seconds = time.perf_counter() - started
        errors = model.reconstruction_error(test)
        rows.append(dict(dataset=dataset, method=label, latents=f"{model.num_latents} points", seconds=seconds, errors=errors))
    rows.append(dict(dataset=dataset, method="PCA (centroid-centred)", latents="144 coords", seconds=pca_seconds, errors=pca_errors))
    for row in rows:
        row["ratio_3d"] = row["errors"].mean_3d_mm / pca_errors.mean_3d_mm
        row["ratio_projected"] = row["errors"].mean_projected_mm / pca_errors.mean_projected_mm
    return rows


def print_table(rows: list[dict], threads: int, device: str) -> None:
    header = f"{'dataset':<34} {'method':<46} {'latent':>10} {'fit s':>7} {'3D mm':>7} {'proj mm':>8} {'3D/PCA':>7} {'proj/PCA':>8}"
    print(f"ACAE vs PCA, held-out reconstruction error; fit on {device} with {threads} torch threads")
    print(header)
    print("-" * len(header))
    for row in rows:
        e = row["errors"]
        print(
            f"{row['dataset']:<34} {row['method']:<46} {row['latents']:>10} {row['seconds']:>7.1f} {e.mean_3d_mm:>7.2f}"
            f" {e.mean_projected_mm:>8.2f} {row['ratio_3d']:>7.2f} {row['ratio_projected']:>8.2f}"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small datasets and short training: a smoke run")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: all available cores)")
    parser.add_argument("--device", default="cpu", help="device for the ACAE fits (default cpu: the target is CPU fit time)")
    parser.add_argument("--datasets", default="demo,large,pipeline", help="which of demo, large, pipeline to run")
    parser.add_argument("--steps", type=int, default=None, help="training steps of every fitted ACAE "
                        "(default: the fit's own, 300 with --quick)")
    parser.add_argument("--pseudo-gt", type=Path, default=Path("data/stores/all_skeleton_pseudo_gt.zarr"),
                        help="the pipeline's all-skeleton pseudo-GT (skipped when absent)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.quick:
        sizes = {"demo": (3000, 1000), "large": (6000, 1000)}
        fit_kwargs = dict(steps=300)
    else:
        sizes = {"demo": (30000, 6000), "large": (100000, 20000)}
        fit_kwargs = {}
    if args.steps is not None:
        fit_kwargs = dict(steps=args.steps)
    rows = []
    chosen = args.datasets.split(",")
    unknown = sorted(set(chosen) - {"demo", "large", "pipeline"})
    if unknown:
        parser.error(f"--datasets: unknown {unknown}; choose from demo, large, pipeline")
    for dataset, formats in (("demo", ALL_FORMATS), ("large", LARGE_FORMATS)):
        if dataset not in chosen:
            continue
        n_train, n_test = sizes[dataset]
        started = time.perf_counter()
        train, names = demo_world_poses(n_train, formats, TRAIN_SEED)
        test, _ = demo_world_poses(n_test, formats, TEST_SEED)
        print(f"[{dataset}] generated {n_train} + {n_test} poses x {len(names)} joints in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        label = f"{dataset}: {n_train // 1000}k+{n_test // 1000}k x {len(names)} joints"
        rows += evaluate(label, train, test, names, fit_kwargs, args.device)
    pipeline = pipeline_pseudo_gt(args.pseudo_gt) if "pipeline" in chosen else None
    if pipeline is not None:
        train, test, names = pipeline
        label = f"pipeline: {len(train)}+{len(test)} x {len(names)} joints"
        rows += evaluate(label, train, test, names, fit_kwargs, args.device)
    elif "pipeline" in chosen:
        print(f"[pipeline] {args.pseudo_gt} not found: run `make demo` first to include the pipeline's pseudo-GT",
              file=sys.stderr)
    print_table(rows, args.threads, args.device)


if __name__ == "__main__":
    main()
