import numpy as np
import pytest

from assets.converters import get_converter
from assets.converters.common import convert
from assets.pseudo_gt import PseudoGTError, triangulate_store, write_pseudo_gt_store
from assets.quality import run_store_checks
from assets.store import open_store, write_store


@pytest.fixture(scope="module")
def detections_store(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("pseudo_gt") / "demo_multiview2d.zarr"
    convert(get_converter("demo_multiview2d"), tiny_world / "demo_multiview2d", out, image_size=64)
    return open_store(out)


def _hidden_truth(store, raw_root):
    sequences = store.attrs["codes"]["sequence"]
    keys = np.unique(np.stack([store.load("sequence"), store.load("frame")], axis=1), axis=0)
    return np.stack([np.load(raw_root / "_evaluation_only" / f"{sequences[s]}.npy")[f] for s, f in keys])


def test_triangulated_pseudo_gt_matches_the_hidden_truth(detections_store, tiny_world):
    pseudo = triangulate_store(detections_store)
    truth = _hidden_truth(detections_store, tiny_world / "demo_multiview2d")
    errors = np.linalg.norm(pseudo.world - truth, axis=-1)
    assert pseudo.stats["joints_triangulated_fraction"] > 0.8
    assert np.nanmedian(errors) < 30  # mm; detections have ~3 px noise and 10% outliers
    # each example's pose3d is the world pose in that example's own crop camera
    ext = detections_store.load("extrinsics").astype(np.float64)
    i = 5
    expected = pseudo.world[pseudo.instant_of_example[i]] @ ext[i, :3, :3].T + ext[i, :3, 3]
    np.testing.assert_allclose(pseudo.pose3d[i], expected, atol=1e-6)
    assert set(pseudo.stats) >= {"reprojection_error_px", "inlier_view_histogram", "bone_length_robust_cv"}
    assert sum(pseudo.stats["inlier_view_histogram"]) >= 2


def test_pseudo_gt_store_passes_the_store_checks(detections_store, tmp_path):
    # three agreeing views: with only a handful of frames, a single two-view mistake would be >2% of bones
    pseudo = triangulate_store(detections_store, min_views=3)
    path = write_pseudo_gt_store(detections_store, pseudo, tmp_path / "pg.zarr")
    store = open_store(path)
    assert store.attrs["has_pose3d"] and store.attrs["pseudo_gt"]["joints_triangulated_fraction"] > 0.5
    np.testing.assert_array_equal(store.load("image"), detections_store.load("image"))
    failed = [o.name for o in run_store_checks(store) if not o.passed]
    assert failed == []


def test_a_moving_camera_is_refused(tiny_world, tmp_path):
    smpl = convert(get_converter("demo_smpl"), tiny_world / "demo_smpl", tmp_path / "smpl.zarr", image_size=32)
    store = open_store(smpl.path)
    arrays = {name: store.load(name) for name in store.array_names}
    arrays["camera"][:] = 0
    arrays["sequence"][:] = 0
    attrs = {k: v for k, v in store.attrs.items() if k not in ("counts", "num_examples", "created")}
    attrs["codes"] = dict(attrs["codes"], sequence=["s"], camera=["c"])
    # two "cameras" of one sequence where each crop sits somewhere else
    arrays["camera"][len(store) // 2:] = 1
    attrs["codes"]["camera"] = ["c0", "c1"]
    moving = open_store(write_store(tmp_path / "moving.zarr", arrays, attrs))
    with pytest.raises(PseudoGTError, match="moves"):
        triangulate_store(moving)


def test_unknown_extrinsics_are_refused(tiny_world, tmp_path):
    lsp = convert(get_converter("demo_lsp2d"), tiny_world / "demo_lsp2d", tmp_path / "lsp.zarr", image_size=32)
    with pytest.raises(PseudoGTError, match="extrinsics"):
        triangulate_store(open_store(lsp.path))
