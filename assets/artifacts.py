"""Small Zarr artifacts other than dataset stores (pose tables, predictions), as published versions."""

import numpy as np
import zarr

from assets.locations import Location, location as as_location, zarr_store
from assets.versions import VersionWriter, resolve


def write_zarr_group(location, arrays: dict[str, np.ndarray], attrs: dict, *, data_version: str | None = None) -> Location:
    """Write ``arrays`` and ``attrs`` as a new Zarr v3 version at ``location`` and publish it."""
    location = as_location(location)
    with VersionWriter(location, data_version) as version:
        group = zarr.open_group(store=zarr_store(version.path, read_only=False), mode="w", zarr_format=3)
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                # strings have no stable Zarr v3 data type yet: keep them as codes with a table in attrs
                raise TypeError(f"{location}: array {name!r} has dtype {value.dtype}; store numbers (codes for strings)")
            group.create_array(name, data=value)
        group.attrs.update(attrs)
        return version.publish()


def read_zarr_group(location) -> tuple[dict[str, np.ndarray], dict]:
    """Read the published version at ``location`` (or ``location`` itself when it is a version)."""
    location = as_location(location)
    path = location if (location / "zarr.json").exists() else resolve(location)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"no Zarr artifact at {path} (expected a Zarr v3 group with zarr.json)")
    group = zarr.open_group(store=zarr_store(path, read_only=True), mode="r")
    return {name: group[name][:] for name in group.array_keys()}, dict(group.attrs)
