import re

import numpy as np
import pytest
import torch

from assets.skeletons import mirror_name
from model.acae import ACAE, fit_acae, joint_sides_from_names, reconstruction_errors
from model.settings import AcaeFitSettings

# A small chiral skeleton: 3 centre joints and 8 left/right pairs, interleaved so the internal
# [left, right, centre] permutation is not the identity.
JOINT_NAMES = [
    "pelv", "lhip", "rhip", "lkne", "rkne", "lank", "rank", "neck", "lsho", "rsho",
    "lelb", "relb", "lwri", "rwri", "head", "ltoe", "rtoe", "lhan", "rhan",
]
BASE_PAIRS, BASE_CENTRE = 3, 2  # the hidden structure: 3 left/right pairs and 2 centre base points


def mirror_permutation(names):
    index = {n: i for i, n in enumerate(names)}
    return np.array([index.get(mirror_name(n), i) for i, n in enumerate(names)])


def mirror_poses(poses, names):
    mirrored = poses[..., mirror_permutation(names), :].copy()
    mirrored[..., 0] *= -1
    return mirrored


def affine_structure(rng, names):
    """[J, K] mirror-symmetric affine weights (rows sum to 1) of the joints over the base points, which are
    ordered [left (BASE_PAIRS), right (BASE_PAIRS), centre (BASE_CENTRE)]."""
    sides = joint_sides_from_names(names)
    weights = np.zeros((len(names), 2 * BASE_PAIRS + BASE_CENTRE))
    pair_weights = {}
    for j, (name, side) in enumerate(zip(names, sides)):
        if side == "center":
            shared, centre = rng.uniform(0, 1, BASE_PAIRS), rng.uniform(0, 1, BASE_CENTRE)
            weights[j] = np.concatenate([shared, shared, centre])
            continue
        key = name[1:]
        if key not in pair_weights:
            pair_weights[key] = rng.uniform(0, 1, (3, BASE_PAIRS + BASE_CENTRE)) ** 2
        same, other, centre = pair_weights[key][0, :BASE_PAIRS], pair_weights[key][1, :BASE_PAIRS], pair_weights[key][2, BASE_PAIRS:]
        weights[j] = np.concatenate([same, other, centre] if side == "left" else [other, same, centre])
    return weights / weights.sum(1, keepdims=True)


def random_rotations(rng, count):
    q, r = np.linalg.qr(rng.normal(size=(count, 3, 3)))
    q *= np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def structured_poses(count, seed=0, structure_seed=0):
    """Camera-frame poses (mm, ~4 m away) whose joints are fixed affine combinations of a few moving base points."""
    rng = np.random.default_rng(seed)
    weights = affine_structure(np.random.default_rng(structure_seed), JOINT_NAMES)
    template = np.random.default_rng(structure_seed + 1).normal(0, 300, (weights.shape[1], 3))
    base = template + rng.normal(0, 120, (count, *template.shape))
    base = np.einsum("nij,nkj->nki", random_rotations(rng, count), base)
    base += np.stack([rng.uniform(-800, 800, count), rng.uniform(-500, 500, count), rng.uniform(3000, 5000, count)], 1)[:, None]
    return np.einsum("jk,nkc->njc", weights, base)


def spread_mm(poses):
    """Std of joint positions around each pose's centroid: the scale errors are compared against."""
    return float(np.std(poses - poses.mean(1, keepdims=True)))


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def train_poses():
    return structured_poses(3000, seed=1)


@pytest.fixture(scope="module")
def test_poses():
    return structured_poses(500, seed=2)


@pytest.fixture(scope="module")
def chiral_model(train_poses):
    return fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(6, 2, steps=300, batch_size=256))


@pytest.fixture(scope="module")
def free_model(train_poses):
    return fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(6, 2, chiral=False, steps=300, batch_size=256))


def random_similarity(rng):
    rotation = random_rotations(rng, 1)[0]
    scale = rng.uniform(0.5, 2.0)
    translation = rng.normal(0, 1000, 3)
    return lambda points: scale * points @ rotation.T + translation


# 1. affine constraint ------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["chiral_model", "free_model"])
def test_weights_are_affine_combinations(request, model_name):
    model = request.getfixturevalue(model_name)
    assert model.encoder_weights.shape == (len(JOINT_NAMES), 8)
    assert model.decoder_weights.shape == (8, len(JOINT_NAMES))
    np.testing.assert_allclose(model.encoder_weights.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(model.decoder_weights.sum(axis=0), 1.0, atol=1e-5)


def test_public_weights_are_in_the_callers_joint_order(chiral_model, test_poses):
    latents = np.einsum("njc,jl->nlc", test_poses, chiral_model.encoder_weights.astype(np.float64))
    np.testing.assert_allclose(chiral_model.encode(test_poses), latents, atol=1e-6)
    joints = np.einsum("nlc,lj->njc", latents, chiral_model.decoder_weights.astype(np.float64))
    np.testing.assert_allclose(chiral_model.decode(latents), joints, atol=1e-6)


# 2. equivariance to similarity transforms --------------------------------------------------------------
@pytest.mark.parametrize("with_missing_joints", [False, True])
def test_encode_and_reconstruct_commute_with_similarity_transforms(chiral_model, test_poses, with_missing_joints):
    rng = np.random.default_rng(3)
    poses = test_poses[:50].copy()
    if with_missing_joints:  # per-pose renormalised encoder weights must keep the equivariance
        poses[rng.random(poses.shape[:2]) < 0.2] = np.nan
    for _ in range(5):
        transform = random_similarity(rng)
        np.testing.assert_allclose(chiral_model.encode(transform(poses)), transform(chiral_model.encode(poses)), atol=1e-2)
        np.testing.assert_allclose(chiral_model.reconstruct(transform(poses)), transform(chiral_model.reconstruct(poses)), atol=1e-2)


# 3. chirality ------------------------------------------------------------------------------------------
def mirror_latents(latents, model):
    sides = np.array(model.latent_sides)
    left, right = np.flatnonzero(sides == "left"), np.flatnonzero(sides == "right")
    permutation = np.arange(len(sides))
    permutation[left], permutation[right] = right, left
    mirrored = latents[..., permutation, :].copy()
    mirrored[..., 0] *= -1
    return mirrored


def test_chiral_sharing_makes_mirroring_exact(chiral_model, test_poses):
    assert chiral_model.latent_sides == ("left",) * 3 + ("right",) * 3 + ("center",) * 2
    mirrored = mirror_poses(test_poses, JOINT_NAMES)
    np.testing.assert_allclose(chiral_model.encode(mirrored), mirror_latents(chiral_model.encode(test_poses), chiral_model), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(chiral_model.reconstruct(mirrored), mirror_poses(chiral_model.reconstruct(test_poses), JOINT_NAMES), rtol=1e-5, atol=1e-3)


def test_non_chiral_model_has_no_mirror_symmetry(free_model, test_poses):
    # the counterpart of the test above: without shared blocks, mirroring is not built in
    assert set(free_model.latent_sides) == {"free"}
    mirrored = mirror_poses(test_poses, JOINT_NAMES)
    difference = free_model.reconstruct(mirrored) - mirror_poses(free_model.reconstruct(test_poses), JOINT_NAMES)
    assert np.abs(difference).max() > 1.0


# 4. recovery of a known affine structure -------------------------------------------------------------
def test_recovers_a_low_dimensional_affine_structure(train_poses, test_poses):
    # A small sparsity weight: exact recovery needs some negative weights, which the L1 term discourages.
    model = fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(2 * BASE_PAIRS, BASE_CENTRE, sparsity=0.01, steps=2000, batch_size=256))
    errors = model.reconstruction_error(test_poses)
    assert errors.mean_3d_mm < 0.05 * spread_mm(test_poses)
    assert np.all(errors.per_joint_3d_mm < 0.1 * spread_mm(test_poses))


# 5. missing joints ------------------------------------------------------------------------------------
def test_training_with_missing_joints_converges(train_poses, test_poses):
    rng = np.random.default_rng(4)
    poses = train_poses.copy()
    poses[rng.random(poses.shape[:2]) < 0.2] = np.nan
    model = fit_acae(poses, JOINT_NAMES, AcaeFitSettings(2 * BASE_PAIRS, BASE_CENTRE, sparsity=0.01, steps=2000, batch_size=256))
    assert np.isfinite(model.encoder_weights).all() and np.isfinite(model.decoder_weights).all()
    assert model.info["training"]["missing_fraction"] == pytest.approx(0.2, abs=0.02)
    assert model.reconstruction_error(test_poses).mean_3d_mm < 0.05 * spread_mm(test_poses)

    # reconstruct() fills in the joints missing from its input
    partial = test_poses.copy()
    partial[rng.random(partial.shape[:2]) < 0.2] = np.nan
    filled = model.reconstruct(partial)
    assert np.isfinite(filled).all()
    assert reconstruction_errors(test_poses, filled).mean_3d_mm < 0.1 * spread_mm(test_poses)


def test_missing_joints_do_not_poison_gradients(chiral_model, test_poses):
    poses = torch.tensor(test_poses[:20], requires_grad=True)
    with torch.no_grad():
        poses[:, 3] = float("nan")
    chiral_model.reconstruct(poses).sum().backward()
    assert torch.isfinite(poses.grad).all()
    assert torch.all(poses.grad[:, 3] == 0)


# 6. persistence and array kinds --------------------------------------------------------------------------
def test_save_load_round_trip(chiral_model, test_poses, tmp_path):
    path = chiral_model.save(tmp_path / "nested" / "acae.pt")
    assert [p.name for p in path.parent.iterdir()] == ["acae.pt"]  # no temp file left behind
    loaded = ACAE.load(path)
    assert loaded.joint_names == chiral_model.joint_names
    assert loaded.joint_sides == chiral_model.joint_sides
    assert loaded.latent_sides == chiral_model.latent_sides
    assert loaded.info == chiral_model.info
    np.testing.assert_array_equal(loaded.encoder_weights, chiral_model.encoder_weights)
    np.testing.assert_array_equal(loaded.decoder_weights, chiral_model.decoder_weights)
    np.testing.assert_array_equal(loaded.reconstruct(test_poses), chiral_model.reconstruct(test_poses))


def test_returns_the_kind_of_array_it_is_given(chiral_model, test_poses):
    batch = test_poses[:4].astype(np.float32)
    as_numpy = chiral_model.encode(batch)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32 and as_numpy.shape == (4, 8, 3)
    as_torch = chiral_model.encode(torch.from_numpy(batch))
    assert isinstance(as_torch, torch.Tensor) and as_torch.shape == (4, 8, 3)
    np.testing.assert_allclose(as_torch.numpy(), as_numpy, rtol=1e-6)
    # any leading shape, including a single pose
    assert chiral_model.reconstruct(test_poses[0]).shape == (len(JOINT_NAMES), 3)
    assert chiral_model.decode(np.zeros((2, 3, 8, 3))).shape == (2, 3, len(JOINT_NAMES), 3)


def test_reconstruction_errors_per_joint_and_projected():
    poses = np.array([[[0.0, 0.0, 4000.0], [100.0, 0.0, 4000.0]]] * 2)
    shifted = poses + np.array([0.0, 0.0, 10.0])  # moved along depth only
    shifted[1, 1] = np.nan
    errors = reconstruction_errors(poses, shifted)
    np.testing.assert_allclose(errors.per_joint_3d_mm, [10.0, 10.0])
    assert errors.mean_3d_mm == pytest.approx(10.0)
    # joint 0 lies on the optical axis: a depth shift does not move it in the image
    assert errors.per_joint_projected_mm[0] == pytest.approx(0.0)
    # joint 1 at x=100 mm: 100/4000 - 100/4010 in normalised coordinates, times the 4000 mm mean depth
    assert errors.per_joint_projected_mm[1] == pytest.approx(4000 * (100 / 4000 - 100 / 4010))


# training controls ---------------------------------------------------------------------------------------
def test_progress_reports_and_seeded_determinism(train_poses, test_poses):
    reports = []
    model = fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(6, 2, steps=40), log_every=10, progress=reports.append, validation_poses=test_poses)
    assert [r.step for r in reports] == [10, 20, 30, 40]
    assert all(r.validation_3d_mm > 0 and r.validation_projected_mm > 0 for r in reports)
    assert "validation" in str(reports[-1])
    assert len(model.info["history"]) == 4
    again = fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(6, 2, steps=40), progress=lambda r: None)
    np.testing.assert_array_equal(again.encoder_weights, model.encoder_weights)
    by_epochs = fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(6, 2, epochs=2, batch_size=500), progress=lambda r: None)
    assert by_epochs.info["training"]["steps"] == 12


# 7. bad input -------------------------------------------------------------------------------------------
def test_sides_follow_the_lr_name_convention():
    assert joint_sides_from_names(["lhip", "rhip", "lumbar", "neck", "rear", "lear"]) == [
        "left", "right", "center", "center", "right", "left",
    ]


def _with_nan_joint(poses):
    poses = poses.copy()
    poses[:, JOINT_NAMES.index("lkne")] = np.nan
    return poses


@pytest.mark.parametrize(
    "poses_fn, names, kwargs, message",
    [
        (lambda p: p, JOINT_NAMES, dict(n_latent_sided=5), "n_latent_sided must be even"),
        (lambda p: p, JOINT_NAMES[:-1] + ["pelv"], {}, "duplicate joint names: ['pelv']"),
        (lambda p: p[:, :, 0], JOINT_NAMES, {}, "must have shape [N, J, 3]"),
        (lambda p: p[:, :-1], JOINT_NAMES, {}, "18 joints but 19 joint names"),
        (_with_nan_joint, JOINT_NAMES, {}, "joint 'lkne' has no finite value in any pose"),
        (lambda p: p[:5], JOINT_NAMES, {}, "5 poses < 8 latents"),
        (lambda p: p, JOINT_NAMES, dict(loss="2d"), "loss must be one of"),
        (lambda p: p - p.mean(1, keepdims=True), JOINT_NAMES, {}, "positive depth"),
        (lambda p: p, JOINT_NAMES, dict(sides=["center"] * 18), "19 joints"),
        (lambda p: p, JOINT_NAMES, dict(sides=["middle"] * 19), "sides must be one of"),
        (lambda p: p, JOINT_NAMES, dict(steps=10, epochs=1), "either steps or epochs"),
    ],
)
def test_bad_input_raises_a_clear_error(train_poses, poses_fn, names, kwargs, message):
    options = dict(n_latent_sided=6, n_latent_center=2, steps=1) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        fit_acae(poses_fn(train_poses[:100]), names, AcaeFitSettings(**options))


def test_sides_override_must_pair_sided_joints_in_chiral_mode(train_poses):
    sides = joint_sides_from_names(JOINT_NAMES)
    sides[JOINT_NAMES.index("rhip")] = "center"  # 'lhip' loses its partner
    sides[JOINT_NAMES.index("head")] = "left"  # no 'l'/'r' name at all
    with pytest.raises(ValueError) as info:
        fit_acae(train_poses[:100], JOINT_NAMES, AcaeFitSettings(6, 2, sides=sides, steps=1))
    assert "'lhip' (left, needs 'rhip' marked 'right')" in str(info.value)
    assert "'head' (left" in str(info.value)
    # the same sides are fine without chirality, and centre overrides are always fine
    fit_acae(train_poses[:100], JOINT_NAMES, AcaeFitSettings(6, 2, sides=sides, chiral=False, steps=1))
    sides[JOINT_NAMES.index("lhip")] = sides[JOINT_NAMES.index("head")] = "center"
    model = fit_acae(train_poses[:100], JOINT_NAMES, AcaeFitSettings(6, 2, sides=sides, steps=1))
    assert model.joint_sides[JOINT_NAMES.index("lhip")] == "center"


def test_inference_rejects_wrong_shapes_and_foreign_files(chiral_model, tmp_path):
    with pytest.raises(ValueError, match=r"poses must have shape \[\.\.\., 19, 3\]"):
        chiral_model.encode(np.zeros((2, 18, 3)))
    with pytest.raises(ValueError, match=r"latents must have shape \[\.\.\., 8, 3\]"):
        chiral_model.decode(np.zeros((2, 19, 3)))
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an ACAE file"):
        ACAE.load(tmp_path / "other.pt")


# 6. the closed-form (principal) start -----------------------------------------------------------------
@pytest.mark.parametrize("chiral", [True, False])
def test_principal_start_is_exact_on_affine_structure_and_keeps_the_constraints(train_poses, test_poses, chiral):
    # joints that are affine combinations of 2·3 + 2 moving base points: 8 latents reproduce them exactly
    model = fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(2 * BASE_PAIRS, BASE_CENTRE, chiral=chiral, init="principal", steps=0))
    assert model.info["training"]["init"] == "principal" and model.info["history"] == []
    assert model.reconstruction_error(test_poses).mean_3d_mm < 1e-3 * spread_mm(test_poses)
    np.testing.assert_allclose(model.encoder_weights.sum(0), 1, atol=1e-5)
    np.testing.assert_allclose(model.decoder_weights.sum(0), 1, atol=1e-5)
    if chiral:  # mirroring the input mirrors the latents, as for any chiral model
        latents = model.encode(test_poses[:5])
        np.testing.assert_allclose(model.encode(mirror_poses(test_poses[:5], JOINT_NAMES)),
                                   mirror_latents(latents, model), atol=1e-2)


def test_principal_start_falls_back_to_random_with_too_few_complete_poses(train_poses):
    poses = train_poses[:40].copy()
    poses[:, 0] = np.nan  # one complete pose only (set below): too few for 8 latents
    poses[0, 0] = 0.0
    poses[0, 0, 2] = 4000.0
    model = fit_acae(poses, JOINT_NAMES, AcaeFitSettings(2 * BASE_PAIRS, BASE_CENTRE, init="principal", steps=2))
    assert model.info["training"]["init"] == "random"
    with pytest.raises(ValueError, match=r"closed-form autoencoder alone, but 1 complete pose\(s\) cannot support 8 latents"):
        fit_acae(poses, JOINT_NAMES, AcaeFitSettings(2 * BASE_PAIRS, BASE_CENTRE, init="principal", steps=0))
    with pytest.raises(ValueError, match=r"or 0 with init='principal'"):
        fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(2 * BASE_PAIRS, BASE_CENTRE, steps=0))
    with pytest.raises(ValueError, match="init must be one of"):
        fit_acae(train_poses, JOINT_NAMES, AcaeFitSettings(2 * BASE_PAIRS, BASE_CENTRE, init="pca", steps=1))


def test_closed_form_error_is_the_discarded_joint_space_variance():
    # Unstructured poses: no autoencoder is exact, and the closed form's squared error must equal the
    # variance outside the constant + top L-1 principal directions of the per-axis joint vectors (the
    # L2 optimum of the model class, which the benchmark reports as its floor).
    rng = np.random.default_rng(7)
    poses = rng.normal(0, 100, (400, len(JOINT_NAMES), 3)) + np.array([0, 0, 4000.0])
    latents = 6
    model = fit_acae(poses, JOINT_NAMES, AcaeFitSettings(latents, 0, chiral=False, init="principal", steps=0))
    squared_error = ((model.reconstruct(poses) - poses) ** 2).sum()
    rows = poses.transpose(0, 2, 1).reshape(-1, len(JOINT_NAMES))
    centred = rows - rows.mean(axis=1, keepdims=True)
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]
    np.testing.assert_allclose(squared_error, eigenvalues[latents - 1:].sum(), rtol=1e-4)
    # and no gradient-trained model of the same class does better in L2 on its training data
    trained = fit_acae(poses, JOINT_NAMES, AcaeFitSettings(latents, 0, chiral=False, sparsity=0.0, loss="3d", steps=300))
    assert ((trained.reconstruct(poses) - poses) ** 2).sum() >= squared_error * (1 - 1e-6)
