"""Pipeline configs for tests: the demo datasets on a given raw root, stores in a temporary folder."""

import yaml

DEMO_DATASETS = {
    "demo_h36m": {},
    "demo_3dhp": {},
    "demo_smpl": {},
    "demo_multiview2d": {"multiview_2d": True},
    "demo_lsp2d": {},
}


def write_config(folder, raw_root, datasets=None, image_size=64):
    """A pipeline config for ``datasets`` whose stores go under ``folder``."""
    names = datasets or list(DEMO_DATASETS)
    config = {
        "demo": {"size": "tiny", "seed": 0},
        "store": {"root": str(folder / "stores"), "image_size": image_size},
        "datasets": {n: {"converter": n, "raw": str(raw_root / n), **DEMO_DATASETS[n]} for n in names},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
