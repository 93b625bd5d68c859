"""Benchmark: how far `dozens bridge` (``model.bridge.bridge_poses``) lands from the truth, per pair of formats.

Loads a fitted autoencoder (the pipeline's by default: run `make demo` first) and draws true poses of the
synthetic demo world, the same body and pose read off in every format the autoencoder knows
(``assets.synthetic.sample_all_formats``). They are held out by construction: that function keys its
subjects and motions by (seed, "sample_all_formats", ...), while the demo datasets whose pseudo-GT the
pipeline's autoencoder is fitted on key theirs by (seed, dataset name, ...), so no subject or motion is
shared whatever the seed. Each pose's source-format joints are bridged to the target format and compared
with the target format's true joints.

Columns (millimetres; 3D errors averaged over joints and poses):

  bridge       mean per-joint 3D error of the bridged joints, without any alignment: the bridge keeps the
               input's frame, so its output is compared as it comes (world frame here; the autoencoder
               commutes with rotation and translation, so the frame does not change the error)
  encode       the same through ``ACAE.reconstruct`` of the union pose with every joint outside the source
               format missing: the autoencoder's own missing-joint imputation, which the bridge does not
               use (model/bridge.py says why)
  mean pose    the target format's mean pose over the poses scored, placed on each pose by the similarity
               transform that fits it best (Procrustes: true position, orientation and size given): what
               knowing nothing about the pose beyond its placement gives
  copy         where target joints share a name with source joints (``lsho`` in both), the error of copying
               those joints over, next to the bridge's error on the same joints ("bridge same")

``--noise-mm S`` adds Gaussian noise of S mm per coordinate to the source joints (errors are still against
the clean truth), to see how the bridge passes input errors on.

Run:  .venv/bin/python benchmarks/bridge.py [--acae PATH] [--config params.yaml] [--pairs h36m_17:smpl_24,...]
                                            [--poses N] [--seed S] [--noise-mm S]
"""

import argparse
import sys
import time

import numpy as np

from assets.joint_names import union_joint_names
from assets.skeletons import get_skeleton
from assets.synthetic import sample_all_formats
from evaluation.metrics import procrustes_align
from model.bridge import bridge_poses, bridgeable_formats, load_acae

DEFAULT_TARGETS = ("smpl_24", "h36m_17", "coco_19", "bml_movi_87")
# sample_all_formats draws its own subjects for any seed; 2 matches benchmarks/acae.py's held-out draw
DEFAULT_SEED = 2


def default_pairs(formats) -> list[tuple[str, str]]:
    """Every known format into each of ``DEFAULT_TARGETS`` the autoencoder knows (all formats if none)."""
    targets = [name for name in DEFAULT_TARGETS if name in formats] or list(formats)
    return [(source, target) for source in formats for target in targets]


def parse_pairs(text: str, formats) -> list[tuple[str, str]]:
    pairs = []
    for item in text.split(","):
        source, separator, target = item.strip().partition(":")
        if not separator or not source or not target:
            raise ValueError(f"--pairs: expected FROM:TO[,FROM:TO...], got {item!r}")
        for name in (source, target):
            get_skeleton(name)  # names a typo with the list of registered formats
            if name not in formats:
                raise ValueError(f"--pairs: the autoencoder was not fitted on {name!r}; it knows {', '.join(formats)}")
        pairs.append((source, target))
    return pairs


def mean_joint_error(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.nanmean(np.linalg.norm(pred - true, axis=-1)))


def mean_pose_error(true: np.ndarray) -> float:
    """The error of the poses' own mean pose (after aligning them to their first pose), Procrustes-placed
    on each of them."""
    everywhere = np.ones(true.shape[:2], dtype=bool)
    aligned = procrustes_align(true, np.broadcast_to(true[0], true.shape), everywhere)
    mean_pose = np.broadcast_to(aligned.mean(axis=0), true.shape).copy()
    return mean_joint_error(procrustes_align(mean_pose, true, everywhere), true)


def encode_reconstruction(acae, source_poses: np.ndarray, source: str, target: str) -> np.ndarray:
    """The target's joints of ``ACAE.reconstruct`` of union poses that hold only the source's joints."""
    names = {name: i for i, name in enumerate(acae.joint_names)}
    source_columns = [names[name] for name in union_joint_names([source])]
    target_columns = [names[name] for name in union_joint_names([target])]
    union = np.full((len(source_poses), acae.num_joints, 3), np.nan)
    union[:, source_columns] = source_poses
    return acae.reconstruct(union)[:, target_columns]


def score_pair(acae, truth: dict, inputs: dict, source: str, target: str, mean_pose_mm: dict) -> dict:
    true = truth[target]
    bridged = bridge_poses(acae, inputs[source], source, target)
    row = {"from": source, "to": target, "given": inputs[source].shape[1], "wanted": true.shape[1],
           "bridge": mean_joint_error(bridged, true),
           "encode": mean_joint_error(encode_reconstruction(acae, inputs[source], source, target), true),
           "mean_pose": mean_pose_mm[target]}
    source_index = {name: i for i, name in enumerate(get_skeleton(source).joint_names)}
    shared = [(source_index[name], t) for t, name in enumerate(get_skeleton(target).joint_names)
              if name in source_index]
    if shared and source != target:
        from_columns, to_columns = (list(columns) for columns in zip(*shared))
        row |= {"shared": len(shared),
                "copy": mean_joint_error(inputs[source][:, from_columns], true[:, to_columns]),
                "bridge_same": mean_joint_error(bridged[:, to_columns], true[:, to_columns])}
    return row


def markdown_table(rows: list[dict]) -> str:
    lines = ["| from | to | bridge | encode | mean pose | copy (shared joints) | bridge same |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        copy = f"{r['copy']:.1f} ({r['shared']})" if "copy" in r else "–"
        same = f"{r['bridge_same']:.1f}" if "bridge_same" in r else "–"
        lines.append(f"| {r['from']} ({r['given']}) | {r['to']} ({r['wanted']}) | {r['bridge']:.1f} | "
                     f"{r['encode']:.1f} | {r['mean_pose']:.1f} | {copy} | {same} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--acae", help="fitted autoencoder file (default: the pipeline's, from the config)")
    parser.add_argument("--config", help="pipeline config that says where the pipeline's autoencoder is "
                                         "(default: $DOZENS_CONFIG or params.yaml)")
    parser.add_argument("--pairs", help="FROM:TO[,FROM:TO...] (default: every format the autoencoder knows into "
                                        f"each of {', '.join(DEFAULT_TARGETS)} it knows)")
    parser.add_argument("--poses", type=int, default=2000, help="poses drawn (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the draw (default %(default)s)")
    parser.add_argument("--noise-mm", type=float, default=0.0, help="Gaussian noise per coordinate added to the "
                                                                    "source joints (default 0)")
    args = parser.parse_args(argv)
    if args.poses < 1 or args.noise_mm < 0:
        parser.error("--poses must be positive and --noise-mm at least 0")

    if args.acae is None:
        from orchestration.cli import published_acae_path

        args.acae = published_acae_path(args.config)
    acae = load_acae(args.acae)
    formats = bridgeable_formats(acae)
    try:
        pairs = parse_pairs(args.pairs, formats) if args.pairs else default_pairs(formats)
    except (KeyError, ValueError) as error:
        parser.error(str(error))

    started = time.perf_counter()
    needed = sorted({name for pair in pairs for name in pair}, key=formats.index)
    truth = sample_all_formats(args.poses, seed=args.seed, formats=needed)
    rng = np.random.default_rng(args.seed)
    inputs = {name: poses + rng.normal(0.0, args.noise_mm, poses.shape) if args.noise_mm else poses
              for name, poses in truth.items()}
    mean_pose_mm = {name: mean_pose_error(truth[name]) for name in {target for _, target in pairs}}
    rows = [score_pair(acae, truth, inputs, source, target, mean_pose_mm) for source, target in pairs]
    print(f"Bridge errors of {args.acae} ({acae.num_joints} joints, {acae.num_latents} latents) on {args.poses} true "
          f"poses of the synthetic world (seed {args.seed}" + (f", {args.noise_mm:g} mm noise per input coordinate"
                                                                 if args.noise_mm else "")
          + f"; {time.perf_counter() - started:.0f} s): mean per-joint 3D error in mm, no alignment; "
          "(N): the format's joints.\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
