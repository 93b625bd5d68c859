"""Converters from raw dataset layouts to the canonical store, looked up by name."""

import importlib
from types import ModuleType

CONVERTERS = {
    "demo_h36m": "assets.converters.demo_h36m",
    "demo_3dhp": "assets.converters.demo_3dhp",
    "demo_smpl": "assets.converters.demo_smpl",
    "demo_multiview2d": "assets.converters.demo_multiview2d",
    "demo_lsp2d": "assets.converters.demo_lsp2d",
    "pose2sim_demo": "assets.converters.pose2sim_demo",
}


def get_converter(name: str) -> ModuleType:
    try:
        return importlib.import_module(CONVERTERS[name])
    except KeyError:
        raise KeyError(f"unknown converter {name!r}; known converters: {', '.join(sorted(CONVERTERS))}") from None
