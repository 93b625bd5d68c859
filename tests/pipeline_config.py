"""Pipeline configs for tests: the demo datasets on a given raw root, stores in a temporary folder."""

import json

import numpy as np
import yaml

DEMO_DATASETS = ("demo_h36m", "demo_3dhp", "demo_smpl", "demo_multiview2d", "demo_lsp2d")
MULTIVIEW_DATASETS = ("demo_multiview2d",)


def write_config(folder, raw_root, datasets=None, image_size=64, training: dict | None = None,
                 benchmark: list | None = None, acae: dict | None = None):
    """A pipeline config for ``datasets`` whose stores go under ``folder``."""
    names = datasets or list(DEMO_DATASETS)
    config = {
        "demo": {"size": "tiny", "seed": 0},
        "store": {"root": str(folder / "stores"), "image_size": image_size},
        # three agreeing views: a tiny world has too few frames to absorb two-view mistakes in its checks
        "pseudo_gt": {"datasets": {n: {} for n in names if n in MULTIVIEW_DATASETS}, "min_views": 3,
                      "threshold_fraction": 0.02},
        "datasets": {n: {"converter": n, "raw": str(raw_root / n)} for n in names},
    }
    if training is not None:
        config["training"] = training
    if benchmark is not None:
        config["benchmark"] = {"datasets": benchmark}
    if acae is not None:
        config["acae"] = acae
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# a whole pipeline in seconds: a few training steps, a small autoencoder
TINY_TRAINING = {"batch_3d": {"demo_h36m": 2, "demo_smpl": 2, "demo_multiview2d": 2}, "batch_2d": {"demo_lsp2d": 2},
                 "workers": 0, "checkpoint_every": 2, "backbone": "small_cnn", "image_size": 64,
                 "stride": 16, "initial": {"steps": 4, "learning_rate": 0.002},
                 "final": {"steps": 2, "learning_rate": 0.001, "mode": "consistency"}}
TINY_ACAE = {"n_latent_sided": 4, "n_latent_center": 2, "steps": 30, "pseudo_gt_examples_per_dataset": 8}


def deliver_h36m_in_metres(raw_folder):
    """Rewrite a demo_h36m raw folder in metres: geometry stays consistent, only the units are wrong."""
    for pose_file in raw_folder.glob("S*/poses3d/*.npy"):
        np.save(pose_file, np.load(pose_file) / 1000)
    calibration = raw_folder / "calibration.json"
    cameras = json.loads(calibration.read_text())
    for camera in cameras["cameras"]:
        camera["t"] = [v / 1000 for v in camera["t"]]
    calibration.write_text(json.dumps(cameras))
