import numpy as np
import pytest

from evaluation.acae_report import baseline_markdown, baseline_rows, errors_per_skeleton, skeleton_of, sparsity
from evaluation.pose_pca import CentredPCA
from model.acae import fit_acae
from model.settings import AcaeFitSettings

# two skeleton formats of six joints each ('<joint>_<format>'), all fixed affine combinations of three
# moving base points: an ACAE with three latents and PCA with 3·3 coordinates can both be exact
NAMES = [f"{joint}_{fmt}" for fmt in ("fmta", "fmtb") for joint in ("pelv", "neck", "head", "knee", "foot", "hand")]
LATENTS = 3


def base_point_poses(count, seed):
    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(100).uniform(0, 1, (len(NAMES), LATENTS))
    weights /= weights.sum(1, keepdims=True)
    bases = rng.normal(0, 400, (count, LATENTS, 3)) + np.array([0, 0, 4000.0])
    return weights @ bases


@pytest.fixture(scope="module")
def data():
    train, held_out = base_point_poses(300, 0), base_point_poses(60, 1)
    held_out[:5, 2] = np.nan  # incomplete poses: PCA cannot reconstruct them, so no row counts them
    sparse = fit_acae(train, NAMES, AcaeFitSettings(LATENTS, 0, chiral=False, sparsity=0.6, steps=20), seed=0)
    return train, held_out, sparse


def test_references_are_scored_on_the_same_complete_held_out_poses(data):
    train, held_out, sparse = data
    rows = baseline_rows(sparse, train, held_out)
    assert [r["method"] for r in rows] == ["this autoencoder", "same shape, no sparsity (closed form)",
                                           "PCA, 9 coordinates"]
    assert all(r["poses"] == 55 for r in rows)
    own = sparse.reconstruction_error(held_out[5:])
    assert rows[0]["error_3d_mm"] == pytest.approx(own.mean_3d_mm)
    assert rows[0]["error_projected_mm"] == pytest.approx(own.mean_projected_mm)
    spread = np.linalg.norm(held_out[5:] - held_out[5:].mean(1, keepdims=True), axis=-1).mean()
    assert rows[0]["error_3d_mm"] > 0.01 * spread  # 20 sparse steps from a random start: far from exact
    for exact in rows[1:]:  # the structure is inside both reference model classes
        assert exact["error_3d_mm"] < 1e-6 * spread and exact["error_projected_mm"] < 1e-6 * spread
    table = baseline_markdown(rows)
    assert table.count("\n") == 4 and "| PCA, 9 coordinates | 55 |" in table


def test_references_the_data_cannot_support_say_why(data):
    train, held_out, sparse = data
    rows = baseline_rows(sparse, train[:9], held_out)  # PCA with 9 coordinates needs more than 9 poses
    assert "error_3d_mm" in rows[0] and "error_3d_mm" in rows[1]
    assert "error_3d_mm" not in rows[2]
    assert rows[2]["note"].startswith("not computed: n_components must be in 1..8 for 9 poses")
    assert "| PCA, 9 coordinates | 55 | not computed: n_components" in baseline_markdown(rows)
    all_incomplete = held_out.copy()
    all_incomplete[:, 0] = np.nan
    assert baseline_rows(sparse, train, all_incomplete) == []
    assert "no complete held-out pose" in baseline_markdown([])


def test_errors_per_skeleton_split_by_format_name(data):
    _, held_out, sparse = data
    rows = errors_per_skeleton(sparse, held_out)
    assert [(r["skeleton"], r["joints"]) for r in rows] == [("fmta", 6), ("fmtb", 6), ("all", 12)]
    per_joint = sparse.reconstruction_error(held_out).per_joint_3d_mm
    assert rows[0]["error_3d_mm"] == pytest.approx(np.nanmean(per_joint[:6]))
    assert rows[1]["error_3d_mm"] == pytest.approx(np.nanmean(per_joint[6:]))


def test_sparsity_is_the_share_of_near_zero_weights(data):
    _, _, sparse = data
    shares = sparsity(sparse)
    assert shares["encoder"] == pytest.approx(np.mean(np.abs(sparse.encoder_weights) < 1e-3))
    assert shares["decoder"] == pytest.approx(np.mean(np.abs(sparse.decoder_weights) < 1e-3))


def test_pca_restores_translation_exactly_and_rejects_bad_input():
    poses = base_point_poses(50, 3)
    pca = CentredPCA(poses, 1)
    shifted = poses + np.array([123.0, -45.0, 600.0])
    np.testing.assert_allclose(pca.reconstruct(shifted) - pca.reconstruct(poses), shifted - poses, atol=1e-6)
    with pytest.raises(ValueError, match="complete poses"):
        CentredPCA(np.where(np.arange(50)[:, None, None] == 0, np.nan, poses), 3)
    with pytest.raises(ValueError, match=r"n_components must be in 1\.\.36"):
        CentredPCA(poses, 40)
    with pytest.raises(ValueError, match=r"shape \[N, J, 3\]"):
        CentredPCA(poses[..., :2], 3)


def test_skeleton_of_keeps_underscores_inside_joint_and_format_names():
    assert skeleton_of("leye_inner_blazepose_33") == "blazepose_33"
    assert skeleton_of("lsho_h36m_17") == "h36m_17"
    assert skeleton_of("pelv_fmta") == "fmta"  # not a registered format: after the first underscore
