import json
import math
from dataclasses import replace

import numpy as np
import pytest

from assets.joint_names import union_joint_names
from evaluation.autoencoder_experiment import (DATA_FILE, EVALUATION_SETS, LATENTS_PLOT_FILE, REPORT_FILE,
                                               SPARSITY_PLOT_FILE, TINY, AutoencoderExperimentSettings,
                                               RankLimitedJointMixing, held_out_true_poses, ray_errors,
                                               run_autoencoder_experiment)
from model.settings import AcaeFitSettings

NAMES = union_joint_names(("h36m_17", "coco_19", "mpii_16"))
REFERENCES = ("affine_optimum", "linear_optimum", "pca")
RELATIVE_TOLERANCE = 1e-5  # the ACAE's weights are float32


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def pseudo_gt(count, seed):
    """True poses of other subjects plus annotation-like noise, one joint missing (behind the camera)."""
    poses = held_out_true_poses(NAMES, count, seed=seed)
    poses += np.random.default_rng(seed).normal(0, 20, poses.shape)
    poses[3, 0] = np.nan
    return poses


@pytest.fixture(scope="module")
def result():
    return run_autoencoder_experiment(pseudo_gt(400, 5), NAMES, held_out_true_poses(NAMES, 60, seed=6), TINY)


def rows_of(result, method, evaluated_on, **where):
    return sorted((r for r in result.rows if r["method"] == method and r["evaluated_on"] == evaluated_on
                   and all(r[key] == value for key, value in where.items())), key=lambda r: r["latents"])


def test_every_fit_and_reference_is_scored_on_every_set_with_finite_errors(result):
    points, latents = TINY.fit_points(), TINY.latent_sweep()
    assert latents == [6, 12, 18] and len(points) == 6  # the default (12, 0.6) joins both sweeps
    assert len(result.rows) == (len(points) + len(REFERENCES) * len(latents)) * len(EVALUATION_SETS)
    # every 10th pose held out; the incomplete one (row 3) is fitted by the ACAEs but scored nowhere
    assert result.counts == {"joints": 52, "formats": 3, "pseudo_gt_fit": 360, "pseudo_gt_fit_complete": 359,
                            "pseudo_gt_held_out": 40, "truth": 60}
    poses = {"truth": 60, "pseudo_gt_held_out": 40, "pseudo_gt_fit": 359}
    for row in result.rows:
        assert "note" not in row and row["poses"] == poses[row["evaluated_on"]]
        values = [row["error_3d_mm"], row["error_perpendicular_mm"], row["rms_3d_mm"]]
        values += [v for entry in row["per_format"].values() for v in (entry["error_3d_mm"], entry["error_perpendicular_mm"])]
        assert all(math.isfinite(v) and v > 0 for v in values)
        assert (row["encoder_sparsity"] is None) == (row["method"] in ("linear_optimum", "pca"))
    assert [(r["n_latent_sided"], r["n_latent_center"]) for r in rows_of(result, "pca", "truth")] == [(6, 0), (10, 2), (16, 2)]


def test_the_perpendicular_error_never_exceeds_the_3d_error(result):
    for row in result.rows:
        assert row["error_perpendicular_mm"] <= row["error_3d_mm"]
        for entry in row["per_format"].values():
            assert entry["error_perpendicular_mm"] <= entry["error_3d_mm"]
        joints = sum(entry["joints"] for entry in row["per_format"].values())
        mean_over_formats = sum(e["joints"] * e["error_3d_mm"] for e in row["per_format"].values()) / joints
        assert mean_over_formats == pytest.approx(row["error_3d_mm"], rel=1e-9)


def test_closed_forms_do_not_get_worse_with_more_latents(result):
    """Both optima project onto nested subspaces, so every pose-axis row, hence the RMS, can only improve."""
    for method in ("affine_optimum", "linear_optimum"):
        for evaluated_on in EVALUATION_SETS:
            rms = [r["rms_3d_mm"] for r in rows_of(result, method, evaluated_on)]
            assert all(b <= a * (1 + RELATIVE_TOLERANCE) for a, b in zip(rms, rms[1:])), (method, evaluated_on, rms)
        mean = [r["error_3d_mm"] for r in rows_of(result, method, "truth")]
        assert all(b <= a * (1 + RELATIVE_TOLERANCE) for a, b in zip(mean, mean[1:])), (method, mean)


def test_closed_forms_bound_every_fitted_acae_on_its_training_poses(result):
    """Least-squares optima, so the bound holds for the RMS error: unconstrained rank L <= affine <= ACAE."""
    for latents in TINY.latent_sweep():
        linear, = rows_of(result, "linear_optimum", "pseudo_gt_fit", latents=latents)
        affine, = rows_of(result, "affine_optimum", "pseudo_gt_fit", latents=latents)
        fitted = rows_of(result, "acae", "pseudo_gt_fit", latents=latents)
        assert len(fitted) == 2
        assert linear["rms_3d_mm"] <= affine["rms_3d_mm"] * (1 + RELATIVE_TOLERANCE)
        for acae in fitted:
            assert affine["rms_3d_mm"] <= acae["rms_3d_mm"] * (1 + RELATIVE_TOLERANCE)


def test_markdown_has_a_line_per_fit_and_reference_and_the_per_format_table(result):
    text = result.markdown()
    overall = [line for line in text.splitlines() if line.startswith("| ") and "(sided+centre)" not in line
               and line.count("|") == 9]
    assert len(overall) == len(TINY.fit_points()) + len(REFERENCES) * len(TINY.latent_sweep())
    assert sum("**ACAE (fitted)** | 12 (10+2) | 0.6 |" in line for line in overall) == 1
    assert sum(line.startswith("| PCA, 3·L coordinates | 18 (16+2) |  |") for line in overall) == 1
    per_format = text.split("## Per format, 12 latents, on the truth")[1]
    assert [line.split(" | ")[0] for line in per_format.splitlines() if line.startswith("| ") and "/" in line] == \
        ["| h36m_17", "| coco_19", "| mpii_16", "| all"]


def test_write_puts_the_report_the_data_and_two_plots_in_the_folder(result, tmp_path):
    written = result.write(tmp_path / "report")
    assert sorted(p.name for p in written) == sorted([REPORT_FILE, DATA_FILE, LATENTS_PLOT_FILE, SPARSITY_PLOT_FILE])
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(p.name for p in written)  # no temporaries
    assert (tmp_path / "report" / REPORT_FILE).read_text() == result.markdown()
    document = json.loads((tmp_path / "report" / DATA_FILE).read_text())
    assert len(document["rows"]) == len(result.rows) and document["settings"]["fit"]["steps"] == TINY.fit.steps
    for plot in (LATENTS_PLOT_FILE, SPARSITY_PLOT_FILE):
        assert (tmp_path / "report" / plot).read_bytes().startswith(b"\x89PNG")


def test_a_reference_the_training_poses_cannot_support_gets_a_note():
    settings = replace(TINY, sparsity_weights=(), latent_counts=(6,))  # 12 latents: PCA needs 36 < poses
    result = run_autoencoder_experiment(pseudo_gt(25, 7), NAMES, held_out_true_poses(NAMES, 5, seed=8), settings)
    notes = {(r["method"], r["latents"]) for r in result.rows if "note" in r}
    assert notes == {("pca", 12)}
    assert all(r["note"].startswith("not computed: n_components must be in 1..") for r in result.rows if "note" in r)
    assert "| PCA, 3·L coordinates | 12 (10+2) |  | not computed | not computed |" in result.markdown()
    json.loads(result.to_json())


def test_held_out_true_poses_follow_the_joint_order_and_sit_metres_in_front_of_a_camera():
    poses = held_out_true_poses(NAMES, 30, seed=3)
    assert poses.shape == (30, len(NAMES), 3) and np.isfinite(poses).all()
    np.testing.assert_allclose(held_out_true_poses(NAMES[::-1], 30, seed=3), poses[:, ::-1])
    distance = np.linalg.norm(poses.mean(1), axis=-1)
    assert (poses[..., 2] > 1000).all() and (distance > 2900).all() and (distance < 7000).all()
    assert not np.allclose(held_out_true_poses(NAMES, 30, seed=4), poses)
    with pytest.raises(ValueError, match="not '<joint>_<format>'"):
        held_out_true_poses(["pelv_nosuchformat"], 3)


def test_ray_errors_split_the_error_along_and_across_the_ray():
    reference = np.array([[[0.0, 0.0, 4000.0], [300.0, -200.0, 5000.0]]])
    along = reference * 0.01
    _, perpendicular = ray_errors(reference, reference + along)
    np.testing.assert_allclose(perpendicular, 0.0, atol=1e-9)
    offset = np.array([[[30.0, 40.0, 120.0], [-10.0, 25.0, 60.0]]])
    error_3d, perpendicular = ray_errors(reference, reference + offset)
    ray = reference / np.linalg.norm(reference, axis=-1, keepdims=True)
    np.testing.assert_allclose(error_3d ** 2, perpendicular ** 2 + np.sum(offset * ray, axis=-1) ** 2)


def test_rank_limited_mixing_is_exact_on_poses_in_its_span():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 10))  # every pose-axis row is a combination of 4 joint patterns
    poses = np.einsum("nck,kj->njc", rng.normal(size=(50, 3, 4)), basis)
    mixing = RankLimitedJointMixing(poses)
    np.testing.assert_allclose(mixing.reconstruct(poses, 4), poses, atol=1e-9)
    assert np.abs(mixing.reconstruct(poses, 3) - poses).max() > 1e-3
    with pytest.raises(ValueError, match=r"rank must be in 1\.\.10"):
        mixing.reconstruct(poses, 11)


def test_settings_keep_the_latent_proportion_and_reject_bad_sweeps():
    settings = AutoencoderExperimentSettings()
    assert [settings.latent_split(n) for n in (16, 32, 48, 64)] == [(14, 2), (26, 6), (40, 8), (54, 10)]
    assert len(settings.fit_points()) == 20
    cross = replace(settings, full_grid=False, fit=AcaeFitSettings(n_latent_sided=20, n_latent_center=4, sparsity=0.5))
    assert cross.latent_sweep() == [16, 24, 32, 48, 64]
    assert len(cross.fit_points()) == 5 + 6 - 1 and (24, 0.5) in cross.fit_points()
    with pytest.raises(ValueError, match="latent counts >= 1"):
        AutoencoderExperimentSettings(latent_counts=(0, 8))
    with pytest.raises(ValueError, match="pseudo_gt_held_out_every"):
        AutoencoderExperimentSettings(pseudo_gt_held_out_every=1)
