"""Deterministic synthetic demo world: one body model, plausible motions, calibrated and handheld
cameras, rendered person crops, and a small dataset per skeleton format written in real-dataset-like raw
layouts (``docs/raw_layouts.md``) or real releases' layouts. ``python -m assets.synthetic --help`` generates them from the command line.
``truth.py`` regenerates the true joints of a converted store's examples, in any format.
"""

from .body import Body, PartFrames, Subject, format_joints, joint_limits
from .motion import STYLES, Motion, generate_motion, sample_all_formats
from .render import Figure, Scene, figure_box, render_crop
from .world import DATASETS, READERS, SIZES, generate_dataset, generate_world

__all__ = [
    "Body", "PartFrames", "Subject", "format_joints", "joint_limits", "STYLES", "Motion",
    "generate_motion", "Figure", "Scene", "figure_box", "render_crop", "DATASETS", "READERS", "SIZES",
    "generate_dataset", "generate_world", "sample_all_formats",
]
