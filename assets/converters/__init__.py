"""Converters from raw dataset layouts to the canonical store, looked up by name."""

import importlib
from types import ModuleType

CONVERTERS = {
    "demo_h36m": "assets.converters.demo_h36m",
    "demo_3dhp": "assets.converters.demo_3dhp",
    "demo_smpl": "assets.converters.demo_smpl",
    "demo_multiview2d": "assets.converters.demo_multiview2d",
    "demo_lsp2d": "assets.converters.demo_lsp2d",
    "demo_format": "assets.converters.demo_format",
    "pose2sim_demo": "assets.converters.pose2sim_demo",
    "pose2sim_multi": "assets.converters.pose2sim_multi",
    "h36m": "assets.converters.h36m",
    "mpi_inf_3dhp": "assets.converters.mpi_inf_3dhp",
    "mpi_inf_3dhp_test": "assets.converters.mpi_inf_3dhp_test",
    "3dpw": "assets.converters.3dpw",
    "panoptic": "assets.converters.panoptic",
    "aspset": "assets.converters.aspset",
    "coco": "assets.converters.coco",
    "mpii": "assets.converters.mpii",
}


def get_converter(name: str) -> ModuleType:
    """The converter module registered as ``name`` (see assets/converters/interface.py for what it declares)."""
    from assets.converters.interface import check_converter

    try:
        module_name = CONVERTERS[name]
    except KeyError:
        raise KeyError(f"unknown converter {name!r}; known converters: {', '.join(sorted(CONVERTERS))}") from None
    return check_converter(importlib.import_module(module_name))
