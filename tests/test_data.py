"""The training data pipeline: perspective-correct augmentation, union joint layout, batch composition."""

import pickle

import numpy as np
import pytest
import torch

from assets.cameras import Camera, bilinear_sample, reproject_image
from assets.joint_names import mirror_permutation, skeleton_joint_indices, union_joint_names
from assets.skeletons import get_skeleton
from assets.store import open_store, write_store
from model.augmentation import (
    AugmentationSettings,
    ColourJitter,
    CropAugmentation,
    mirror_crop,
    render_crop,
    resample,
    source_pixels,
    virtual_camera,
)
from model.data import MultiDatasetBatches, Source, StoreExamples, collate_examples
from model.reconstruction import flip_intrinsics, project
from store_factory import make_store_arrays, overwrite_array, project_pose2d

SIZE = 32
UNION = union_joint_names(["h36m_17", "smpl_24", "lsp_14"])


def _write(path, *, name, skeleton="h36m_17", n=24, seed=0, with_3d=True, image_size=SIZE, split=None):
    arrays, attrs = make_store_arrays(n=n, skeleton=skeleton, image_size=image_size, seed=seed, with_3d=with_3d)
    attrs["dataset"] = name
    if split is not None:
        arrays["split"] = np.asarray(split, dtype=np.int8)
    return write_store(path / f"{name}.zarr", arrays, attrs)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Three small stores: two 3D-labelled ones of different skeletons and a 2D-only one.

    Their cameras have lens distortion, so every path also exercises undistortion."""
    root = tmp_path_factory.mktemp("stores")
    train_val = np.arange(24) % 3 == 2  # 16 train, 8 val examples
    return {
        "h36m": _write(root, name="h36m", skeleton="h36m_17", seed=1, split=train_val),
        "smpl": _write(root, name="smpl", skeleton="smpl_24", seed=2, split=train_val),
        "lsp": _write(root, name="lsp", skeleton="lsp_14", seed=3, with_3d=False, split=train_val),
    }


def _sources(stores, h36m=3, smpl=2, lsp=4):
    return [
        Source("h36m", stores["h36m"], h36m, "3d"),
        Source("smpl", stores["smpl"], smpl, "3d"),
        Source("lsp", stores["lsp"], lsp, "2d"),
    ]


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for part in a:
            for key, value in a[part].items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value.nan_to_num(-1e9), b[part][key].nan_to_num(-1e9)), (part, key)
                else:
                    assert value == b[part][key], (part, key)


def _projection_error(example) -> np.ndarray:
    """Pixel distance between the projected 3D labels and the 2D labels, at joints with both."""
    pose3d, pose2d = example["pose3d"].double(), example["pose2d"].double()
    both = torch.isfinite(pose3d).all(-1) & torch.isfinite(pose2d).all(-1)
    projected = project(pose3d[None], example["intrinsics"].double()[None])[0]
    return (projected - pose2d).norm(dim=-1)[both].numpy()


# -- geometry ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("augmentation, image_size", [
    (None, SIZE), (None, 48), (AugmentationSettings(), SIZE), (AugmentationSettings(), 48),
])
def test_projected_3d_labels_land_on_the_2d_labels_after_any_crop(stores, augmentation, image_size):
    examples = StoreExamples(stores["h36m"], UNION, augmentation=augmentation, image_size=image_size)
    errors = np.concatenate([_projection_error(examples[(i, epoch)]) for i in range(len(examples)) for epoch in (0, 1)])
    assert len(errors) > 100
    assert errors.max() < 0.01


def _blob_image(centre, size: int, sigma: float = 1.5) -> np.ndarray:
    v, u = np.mgrid[0:size, 0:size]
    blob = 250 * np.exp(-((u - centre[0]) ** 2 + (v - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat(np.rint(blob)[..., None], 3, axis=-1).astype(np.uint8)


def _centroid(image: torch.Tensor, near: np.ndarray, radius: int = 6) -> np.ndarray:
    intensity = image[..., 0].double().numpy()
    v, u = np.mgrid[0:intensity.shape[0], 0:intensity.shape[1]]
    window = (np.abs(u - near[0]) <= radius) & (np.abs(v - near[1]) <= radius)
    weights = intensity * window
    return np.array([(weights * u).sum(), (weights * v).sum()]) / weights.sum()


@pytest.mark.parametrize("flip_probability", [0.0, 1.0])
@pytest.mark.parametrize("augment", [False, True])
def test_a_marker_painted_at_a_joint_moves_with_its_label(tmp_path, augment, flip_probability):
    size = 64
    arrays, attrs = make_store_arrays(n=6, skeleton="h36m_17", image_size=size, seed=4)
    centre = (size - 1) / 2
    # the labelled joint nearest the centre stays in view under any augmentation
    distance = np.linalg.norm(np.nan_to_num(arrays["pose2d"], nan=1e6) - centre, axis=-1)
    marked = distance.argmin(axis=1)
    arrays["image"] = np.stack([_blob_image(arrays["pose2d"][i, j], size) for i, j in enumerate(marked)])
    store = write_store(tmp_path / "marked.zarr", arrays, attrs)
    settings = AugmentationSettings.geometry_only(flip_probability=flip_probability) if augment else None
    examples = StoreExamples(store, UNION, augmentation=settings)
    slots = np.asarray(skeleton_joint_indices(UNION, "h36m_17"))
    mirrored = mirror_permutation(UNION)
    for i, joint in enumerate(marked):
        for epoch in range(3):
            example = examples[(i, epoch)]
            slot = slots[joint]
            if augment and flip_probability == 1.0:
                slot = mirrored[slot]  # the marked joint now carries its mirror partner's label
            expected = example["pose2d"][slot].numpy()
            assert np.linalg.norm(_centroid(example["image"], expected) - expected) < 0.25


def test_the_crop_resampling_matches_the_reference_reprojection():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    K = np.array([[50.0, 1.0, 19.5], [0, 52.0, 20.0], [0, 0, 1]])
    dist = np.array([-0.05, 0.01, 0.001, -0.001, 0.0])
    crop = CropAugmentation(shift_px=(3.0, -2.0), zoom=1.2, roll_radians=0.3)
    rotation, K_out = virtual_camera(K, dist, 40, 48, crop)
    ours = resample(image, source_pixels(K, dist, rotation, K_out, 48)).numpy()
    reference = reproject_image(image, Camera(K, dist), Camera(K_out, R=rotation), (48, 48))
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1
    # the same values as the project's bilinear sampler, also at and beyond the border
    uv = rng.uniform(-3, 43, (10, 10, 2))
    assert np.abs(resample(image, uv).numpy().astype(int) - bilinear_sample(image, uv).astype(int)).max() <= 1


def test_the_stored_view_of_an_undistorted_crop_is_returned_unchanged():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]], dtype=np.float32)
    pose3d = (rng.normal(size=(17, 3)) + [0, 0, 5]).astype(np.float32)
    pose2d = project_pose2d(pose3d[None], K[None], np.zeros((1, 5)))[0]
    crop = render_crop(image, K, np.zeros(5), pose3d, pose2d, np.ones(17, bool), image_size=16)
    assert np.array_equal(crop.image.numpy(), image)
    assert np.array_equal(crop.intrinsics.numpy(), K)
    assert np.array_equal(crop.pose2d.numpy(), pose2d)
    assert np.array_equal(crop.pose3d.numpy(), pose3d)


def test_flipping_twice_is_the_identity_and_flipping_follows_the_models_convention(stores):
    flipped = StoreExamples(stores["h36m"], UNION, augmentation=AugmentationSettings(flip_probability=1.0))
    unflipped = StoreExamples(stores["h36m"], UNION, augmentation=AugmentationSettings(flip_probability=0.0))
    permutation = mirror_permutation(UNION)
    for i in range(4):
        # same seed and context: the same draws, except that one is mirrored
        a, b = unflipped[(i, 7)], flipped[(i, 7)]
        assert torch.allclose(b["intrinsics"], flip_intrinsics(a["intrinsics"][None], SIZE)[0])
        expected2d = torch.stack([(SIZE - 1) - a["pose2d"][:, 0], a["pose2d"][:, 1]], -1)[permutation]
        expected3d = a["pose3d"] * torch.tensor([-1.0, 1.0, 1.0])
        assert torch.allclose(b["pose2d"], expected2d, atol=1e-4, equal_nan=True)
        assert torch.allclose(b["pose3d"], expected3d[permutation], atol=1e-3, equal_nan=True)
        assert torch.equal(b["joint_valid"], a["joint_valid"][permutation])
        assert (b["image"].int() - a["image"].flip(1).int()).abs().max() <= 1

    skeleton = get_skeleton("h36m_17")
    arrays, _ = make_store_arrays(n=1, skeleton="h36m_17", image_size=SIZE, seed=5)
    crop = render_crop(arrays["image"][0], arrays["intrinsics"][0], arrays["distortion"][0], arrays["pose3d"][0],
                       arrays["pose2d"][0], arrays["joint_valid"][0], image_size=SIZE, crop=CropAugmentation(zoom=1.1))
    twice = mirror_crop(mirror_crop(crop, skeleton.mirror_indices), skeleton.mirror_indices)
    for field in ("image", "intrinsics", "pose3d", "pose2d", "joint_valid"):
        assert torch.equal(getattr(twice, field).nan_to_num(-1), getattr(crop, field).nan_to_num(-1)), field


# -- colour ------------------------------------------------------------------------------------------
def test_colour_ops_do_what_their_names_say():
    pixels = torch.tensor([[[250, 0, 0], [0, 250, 0], [0, 0, 250], [100, 100, 100]]], dtype=torch.uint8)
    assert torch.equal(ColourJitter().apply(pixels), pixels)
    # a third of the way round the hue circle: red → green → blue → red, grey stays grey
    turned = ColourJitter(hue_radians=2 * np.pi / 3).apply(pixels)
    assert torch.equal(turned, pixels[:, [1, 2, 0, 3]])
    grey = ColourJitter(saturation=0.0).apply(pixels)
    assert (grey.int().amax(-1) - grey.int().amin(-1)).max() <= 1
    flat = ColourJitter(contrast=0.0).apply(pixels)
    assert torch.equal(flat, pixels.double().mean(dim=(0, 1)).round().to(torch.uint8).expand_as(pixels))
    brighter = ColourJitter(brightness=0.1).apply(pixels)
    assert torch.equal(brighter, (pixels.int() + 26).clamp(max=255).to(torch.uint8))


def test_augmentation_settings_reject_impossible_ranges():
    with pytest.raises(ValueError, match="zoom_range"):
        AugmentationSettings(zoom_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="flip_probability"):
        AugmentationSettings(flip_probability=1.5)
    with pytest.raises(ValueError, match="order"):
        ColourJitter(order=("brightness", "brightness", "hue", "saturation"))


# -- one store ---------------------------------------------------------------------------------------
def test_labels_sit_in_their_skeletons_slots_of_the_union_and_nan_elsewhere(stores):
    store = open_store(stores["smpl"])
    examples = StoreExamples(stores["smpl"], UNION, split="val")
    assert len(examples) == 8
    slots = skeleton_joint_indices(UNION, "smpl_24")
    others = np.setdiff1d(np.arange(len(UNION)), slots)
    for position in range(len(examples)):
        example = examples[position]
        index = example["index"]
        assert index == examples.store_indices[position] and store.split_indices("val")[position] == index
        assert (example["skeleton"], example["dataset"]) == ("smpl_24", "smpl")
        # the store has lens distortion, so the stored view is undistorted: 3D labels stay put
        assert np.array_equal(example["pose3d"][slots].numpy(), store["pose3d"][index], equal_nan=True)
        assert np.array_equal(example["joint_valid"][slots].numpy(), store["joint_valid"][index])
        assert torch.isnan(example["pose3d"][others]).all() and torch.isnan(example["pose2d"][others]).all()
        assert not example["joint_valid"][others].any()
        assert example["has_3d"] and example["image"].shape == (SIZE, SIZE, 3)
    two_d = StoreExamples(stores["lsp"], UNION)[0]
    assert not two_d["has_3d"] and torch.isfinite(two_d["pose2d"][skeleton_joint_indices(UNION, "lsp_14")]).any()


def test_examples_pickle_without_their_open_store_and_read_the_same_after(stores):
    examples = StoreExamples(stores["h36m"], UNION, augmentation=AugmentationSettings(), seed=3)
    before = examples[(5, 2)]  # opens the image array in this process
    assert examples.__getstate__()["_image_array"] is None
    copy = pickle.loads(pickle.dumps(examples))  # as DataLoader hands it to a spawned worker
    after = copy[(5, 2)]
    assert torch.equal(before["image"], after["image"])
    assert torch.equal(before["pose2d"].nan_to_num(0), after["pose2d"].nan_to_num(0))


def test_cached_crops_give_the_same_examples_and_the_cache_stays_within_its_budget(stores):
    crop_bytes = 3 * SIZE * SIZE
    budget_mb = 5.5 * crop_bytes / 2**20  # room for 5 crops
    plain = StoreExamples(stores["h36m"], UNION, augmentation=AugmentationSettings(), seed=1)
    cached = StoreExamples(stores["h36m"], UNION, augmentation=AugmentationSettings(), seed=1, image_cache_mb=budget_mb)
    for _ in range(2):  # the second pass reads the first five crops from the cache
        for i in range(len(plain)):
            assert torch.equal(plain[(i, 4)]["image"], cached[(i, 4)]["image"])
    assert len(cached._cache) == 5
    assert pickle.loads(pickle.dumps(cached))._cache == {}  # a worker starts empty and fills its own
    with pytest.raises(ValueError, match="image_cache_mb"):
        StoreExamples(stores["h36m"], UNION, image_cache_mb=-1)


def test_a_selection_that_fits_the_cache_is_read_whole_and_gives_the_same_examples(stores):
    plain = StoreExamples(stores["smpl"], UNION, augmentation=AugmentationSettings(), seed=2)
    cached = StoreExamples(stores["smpl"], UNION, augmentation=AugmentationSettings(), seed=2, image_cache_mb=64)
    first = cached[(len(cached) - 1, 3)]  # any first access loads the whole selection
    assert sorted(cached._cache) == cached.store_indices.tolist()
    assert torch.equal(first["image"], plain[(len(plain) - 1, 3)]["image"])
    for i in range(len(plain)):
        assert torch.equal(plain[(i, 3)]["image"], cached[(i, 3)]["image"])


def test_a_batch_renders_each_example_as_it_renders_alone(stores, tmp_path):
    """Batched rendering (one resampling call for the batch) is per example: distorted and undistorted
    cameras, several source sizes, flips and colour jitter mixed in one batch give what each example gives
    on its own."""
    arrays, attrs = make_store_arrays(n=6, skeleton="h36m_17", image_size=24, seed=7)
    arrays["distortion"][:] = 0  # the other stores' cameras have lens distortion
    small = write_store(tmp_path / "small.zarr", arrays, {**attrs, "dataset": "small"})
    settings = AugmentationSettings(flip_probability=0.5)
    datasets = [StoreExamples(path, UNION, augmentation=settings, image_size=SIZE, seed=3)
                for path in (stores["h36m"], stores["smpl"], small)]
    datasets.append(StoreExamples(stores["lsp"], UNION, augmentation=None, image_size=SIZE))
    drawn = [d.draw(i, (5, i)) for d in datasets for i in range(4)]
    assert {d["source"].shape[0] for d in drawn} == {SIZE, 24}
    assert any(d["crop"] is not None and d["crop"].flip for d in drawn)
    assert any(d["crop"] is not None and not d["crop"].flip for d in drawn)
    batch = collate_examples(drawn)
    for row, d in enumerate(drawn):
        alone = collate_examples([d])
        for key in ("image", "intrinsics", "pose3d", "pose2d", "joint_valid"):
            expected, got = alone[key][0], batch[key][row]
            if key == "image":
                assert (got.int() - expected.int()).abs().max() <= 1, row  # float32 resampling, rounded
            else:
                assert torch.equal(got.nan_to_num(-1e9), expected.nan_to_num(-1e9)), (row, key)


# -- batches -----------------------------------------------------------------------------------------
def test_each_step_holds_the_configured_count_of_every_dataset(stores):
    batches = MultiDatasetBatches(_sources(stores), UNION, steps=3, seed=0, workers=0)
    steps = list(batches)
    assert len(steps) == len(batches) == 3
    train = np.flatnonzero(np.arange(24) % 3 != 2)
    for step in steps:
        assert set(step) == {"3d", "2d"}
        assert step["3d"]["dataset"] == ["h36m"] * 3 + ["smpl"] * 2
        assert step["3d"]["skeleton"] == ["h36m_17"] * 3 + ["smpl_24"] * 2
        assert step["2d"]["dataset"] == ["lsp"] * 4
        assert step["3d"]["image"].shape == (5, SIZE, SIZE, 3) and step["3d"]["image"].dtype == torch.uint8
        assert step["3d"]["pose3d"].shape == (5, len(UNION), 3)
        assert step["2d"]["pose2d"].shape == (4, len(UNION), 2) and step["2d"]["intrinsics"].shape == (4, 3, 3)
        assert step["3d"]["has_3d"].all() and not step["2d"]["has_3d"].any()
        assert np.isin(step["3d"]["index"].numpy(), train).all()
    only_3d = MultiDatasetBatches(_sources(stores)[:2], UNION, steps=1, seed=0, workers=0)
    assert set(next(iter(only_3d))) == {"3d"}


def test_every_example_is_drawn_once_per_epoch(stores):
    batches = MultiDatasetBatches(_sources(stores, h36m=3), UNION, steps=11, seed=5, workers=0, augment=False)
    drawn = np.concatenate([step["3d"]["index"][:3].numpy() for step in batches])  # 33 draws of 16 examples
    train = np.flatnonzero(np.arange(24) % 3 != 2).tolist()
    assert sorted(drawn[:16]) == train and sorted(drawn[16:32]) == train
    assert not np.array_equal(drawn[:16], drawn[16:32])  # each epoch has an order of its own


def test_same_seed_same_batches_and_resuming_continues_the_same_run(stores):
    full = list(MultiDatasetBatches(_sources(stores), UNION, steps=5, seed=11, workers=0))
    again = list(MultiDatasetBatches(_sources(stores), UNION, steps=5, seed=11, workers=0))
    _assert_batches_equal(full, again)
    resumed = list(MultiDatasetBatches(_sources(stores), UNION, steps=5, seed=11, workers=0, start_step=3))
    _assert_batches_equal(resumed, full[3:])
    other_seed = next(iter(MultiDatasetBatches(_sources(stores), UNION, steps=1, seed=12, workers=0)))
    assert not torch.equal(other_seed["3d"]["image"], full[0]["3d"]["image"])


def test_worker_processes_give_the_same_batches_as_loading_in_process(stores):
    in_process = list(MultiDatasetBatches(_sources(stores), UNION, steps=4, seed=2, workers=0))
    batches = MultiDatasetBatches(_sources(stores), UNION, steps=4, seed=2, workers=2, image_cache_mb=16)
    _assert_batches_equal(list(batches), in_process)
    _assert_batches_equal(list(batches), in_process)  # the persistent workers serve a second pass too


def test_stores_of_different_crop_sizes_need_an_explicit_output_size(stores, tmp_path):
    large = _write(tmp_path, name="large", skeleton="h36m_17", image_size=48)
    sources = [Source("large", large, 2, "3d"), Source("smpl", stores["smpl"], 2, "3d")]
    with pytest.raises(ValueError, match=r"image_size.*'large': 48.*'smpl': 32"):
        MultiDatasetBatches(sources, UNION, steps=1, seed=0, workers=0)
    step = next(iter(MultiDatasetBatches(sources, UNION, steps=1, seed=0, workers=0, image_size=40)))
    assert step["3d"]["image"].shape == (4, 40, 40, 3)
    assert max(_projection_error({k: v[i] for k, v in step["3d"].items()}).max() for i in range(4)) < 0.01


# -- bad input ---------------------------------------------------------------------------------------
def test_a_missing_store_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset 'ghost'.*nowhere\.zarr"):
        MultiDatasetBatches([Source("ghost", tmp_path / "nowhere.zarr", 2, "3d")], UNION, steps=1, seed=0, workers=0)


def test_a_2d_only_dataset_in_the_3d_part_is_refused(stores):
    with pytest.raises(ValueError, match=r"dataset 'lsp'.*no 3D labels.*2D part"):
        MultiDatasetBatches([Source("lsp", stores["lsp"], 2, "3d")], UNION, steps=1, seed=0, workers=0)


def test_an_empty_split_is_refused(stores):
    with pytest.raises(ValueError, match=r"dataset 'h36m'.*no examples in split 'test'"):
        MultiDatasetBatches([Source("h36m", stores["h36m"], 2, "3d", split="test")], UNION, steps=1, seed=0, workers=0)


def test_a_skeleton_outside_the_union_is_refused(stores):
    with pytest.raises(ValueError, match=r"dataset 'lsp'.*skeleton 'lsp_14' is not in the union"):
        StoreExamples(stores["lsp"], union_joint_names(["h36m_17"]), name="lsp")


def test_nan_intrinsics_are_named_with_store_and_examples(tmp_path):
    path = _write(tmp_path, name="broken")
    arrays, _ = make_store_arrays(n=24, seed=0, image_size=SIZE)
    intrinsics = arrays["intrinsics"].copy()
    intrinsics[[3, 7], 0, 0] = np.nan
    overwrite_array(path, "intrinsics", intrinsics)
    with pytest.raises(ValueError, match=r"broken\.zarr.*'intrinsics' has non-finite values at examples \[3, 7\]"):
        StoreExamples(path, UNION)


def test_images_that_disagree_with_the_stores_crop_size_are_named(tmp_path):
    path = _write(tmp_path, name="resized", n=4, image_size=SIZE)
    overwrite_array(path, "image", np.zeros((4, 16, 16, 3), dtype=np.uint8))
    expected = r"dataset 'resized'.*array 'image' has shape \(4, 16, 16, 3\), expected \(4, 32, 32, 3\)"
    with pytest.raises(ValueError, match=expected):
        StoreExamples(path, UNION, name="resized")


def test_bad_settings_are_refused(stores):
    with pytest.raises(ValueError, match="image_size"):
        StoreExamples(stores["h36m"], UNION, image_size=0)
    with pytest.raises(ValueError, match="count_per_batch"):
        Source("h36m", stores["h36m"], 0, "3d")
    with pytest.raises(ValueError, match="part"):
        Source("h36m", stores["h36m"], 2, "3D")
    with pytest.raises(ValueError, match="more than once"):
        MultiDatasetBatches([Source("a", stores["h36m"], 1, "3d"), Source("a", stores["smpl"], 1, "3d")], UNION,
                            steps=1, seed=0, workers=0)
    with pytest.raises(ValueError, match="start_step"):
        MultiDatasetBatches(_sources(stores), UNION, steps=2, seed=0, workers=0, start_step=3)
