"""What every converter's bad-input tests check: the error names the file (and field), and the store that
was published before stays current, unchanged."""

import numpy as np
import pytest

from assets.converters.raw_io import RawDataError
from assets.store import open_store


def assert_refused_keeping_the_store(convert_again, store_path, damaged_file, field=None) -> RawDataError:
    """``convert_again()`` (a conversion into ``store_path`` after damaging ``damaged_file``) must fail."""
    before = open_store(store_path)
    fingerprint, pose3d = before.attrs["raw_fingerprint"], before.load("pose3d")
    with pytest.raises(RawDataError) as info:
        convert_again()
    assert str(damaged_file) in str(info.value)
    if field:
        assert field in str(info.value)
    after = open_store(store_path)
    assert after.path == before.path and after.attrs["raw_fingerprint"] == fingerprint
    np.testing.assert_array_equal(after.load("pose3d"), pose3d)
    return info.value


def assert_labels_on_the_rendered_joints(store, image_size: int, margin: float = 25) -> None:
    """The test trees render bright blobs at the planted joints: in the stored crops the 2D labels must sit
    on them (calibration, frames, distortion and crop agree)."""
    images, pose2d = store.load("image").astype(np.float64), store.load("pose2d")
    at_joints, elsewhere = [], []
    for image, uv in zip(images, pose2d):
        brightness = image.mean(axis=-1)
        labelled = np.isfinite(uv).all(axis=-1)
        px = np.clip(np.round(uv[labelled]).astype(int), 0, image_size - 1)
        at_joints.append(brightness[px[:, 1], px[:, 0]].mean())
        elsewhere.append(brightness.mean())
    assert np.mean(at_joints) > np.mean(elsewhere) + margin
