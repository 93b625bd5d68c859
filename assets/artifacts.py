"""Small Zarr artifacts other than dataset stores (pose tables, predictions), written atomically."""

import shutil
from pathlib import Path

import numpy as np
import zarr

from assets.store import recover_interrupted_swap, staging_path, swap_into_place


def write_zarr_group(path, arrays: dict[str, np.ndarray], attrs: dict) -> Path:
    """Write ``arrays`` and ``attrs`` as a Zarr v3 group at ``path``: built aside, then swapped in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                # strings have no stable Zarr v3 data type yet: keep them as codes with a table in attrs
                raise TypeError(f"{path}: array {name!r} has dtype {value.dtype}; store numbers (codes for strings)")
            group.create_array(name, data=value)
        group.attrs.update(attrs)
        swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_zarr_group(path) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(path)
    recover_interrupted_swap(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"no Zarr artifact at {path} (expected a Zarr v3 group with zarr.json)")
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in group.array_keys()}, dict(group.attrs)
