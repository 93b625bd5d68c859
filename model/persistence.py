"""Writing model files atomically: a killed save never leaves a truncated file where a good one was."""

from pathlib import Path

import torch

from assets.atomic_files import write_atomically


def save_torch_atomic(payload, path) -> Path:
    """``torch.save`` into a temporary file beside ``path``, which then replaces it in one step."""
    return write_atomically(path, lambda handle: torch.save(payload, handle))
