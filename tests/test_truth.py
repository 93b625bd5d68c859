"""The demo world's true joints of converted examples (assets/synthetic/truth.py): regenerated in a store's
own format they are its labels, in any other format the same body."""

import numpy as np
import pytest

from assets.converters import get_converter
from assets.converters.common import convert
from assets.skeletons import get_skeleton
from assets.store import open_store
from assets.synthetic.truth import (RELATIVE_TOLERANCE, TRUTH_DATASETS, TruthMismatchError, TruthUnavailableError,
                                    check_truth, has_truth, true_joints)
from assets.synthetic.world import DATASETS, READERS

STORE_IMAGE_SIZE = 32
# the 2D labels carry an annotator's 1 px noise in the original frame, well under 1% of a crop's side
LABEL_NOISE_SHARE = 0.01
OTHER_FORMAT = "h36m_17"
# pelvis-like roots of two formats read off one body lie a few centimetres apart; another person in
# another pose would be metres away or at least a body part off
SAME_BODY_ROOT_DISTANCE_MM = 150.0


@pytest.fixture(scope="module")
def stores(tiny_world, tmp_path_factory):
    """Each covered dataset of the tiny world converted to a store, on first use."""
    folder, converted = tmp_path_factory.mktemp("truth_stores"), {}

    def store(name: str):
        if name not in converted:
            converted[name] = convert(get_converter(READERS[name]), tiny_world / name, folder / name,
                                      dataset_name=name, image_size=STORE_IMAGE_SIZE, progress=lambda message: None).path
        return converted[name]

    return store


def test_every_dataset_with_3d_labels_or_generic_layout_is_covered():
    assert set(TRUTH_DATASETS) == set(DATASETS) - {"demo_multiview2d", "demo_lsp2d"}
    assert all(has_truth(name) for name in TRUTH_DATASETS) and not has_truth("demo_lsp2d")


@pytest.mark.parametrize("name", TRUTH_DATASETS)
def test_the_truth_of_the_stores_own_format_is_its_labels_and_other_formats_are_the_same_body(stores, name):
    path = stores(name)
    store = open_store(path)
    own = true_joints(path, store.skeleton.name, seed=0)
    labels = store.load("pose3d").astype(np.float64)
    labelled = np.isfinite(labels).all(axis=-1)
    if labelled.any():
        np.testing.assert_allclose(own[labelled], labels[labelled],
                                   atol=RELATIVE_TOLERANCE * np.abs(labels[labelled]).max())
        assert check_truth(path, seed=0) <= RELATIVE_TOLERANCE * np.abs(labels[labelled]).max()
    else:  # 2D labels only: the truth projects onto them
        projected = np.einsum("nij,nkj->nki", store.load("intrinsics").astype(np.float64), own)
        pose2d = store.load("pose2d").astype(np.float64)
        seen = np.isfinite(pose2d).all(axis=-1)
        distance = np.linalg.norm(projected[..., :2] / projected[..., 2:] - pose2d, axis=-1)[seen]
        assert seen.any() and distance.max() < LABEL_NOISE_SHARE * STORE_IMAGE_SIZE
    other = true_joints(path, OTHER_FORMAT, seed=0)
    assert other.shape == (len(store), get_skeleton(OTHER_FORMAT).num_joints, 3)
    roots = [poses[:, list(get_skeleton(skeleton).root_joints)].mean(axis=1)
             for poses, skeleton in ((own, store.skeleton.name), (other, OTHER_FORMAT))]
    assert np.linalg.norm(roots[0] - roots[1], axis=-1).max() < SAME_BODY_ROOT_DISTANCE_MM


def test_the_truth_of_some_examples_is_theirs(stores):
    path = stores("demo_h36m")
    everything = true_joints(path, "smpl_24", seed=0)
    some = open_store(path).split_indices("test")[::-1]
    np.testing.assert_array_equal(true_joints(path, "smpl_24", seed=0, indices=some), everything[some])


def test_a_world_of_another_seed_does_not_pass_for_the_stores(stores):
    with pytest.raises(TruthMismatchError, match="another seed"):
        check_truth(stores("demo_kinectv2_25"), seed=1)
    # a sequence named after its random draws is not even in the other world
    with pytest.raises(TruthUnavailableError, match="no sequence"):
        check_truth(stores("demo_smpl"), seed=1)


def test_datasets_without_truth_are_refused_by_name(stores):
    with pytest.raises(TruthUnavailableError, match="'demo_multiview2d'"):
        true_joints(stores("demo_h36m"), OTHER_FORMAT, seed=0, dataset="demo_multiview2d")
