import numpy as np
import pytest
import torch

from assets.converters import get_converter
from assets.converters.common import convert
from assets.joint_names import union_joint_names
from model.acae import fit_acae
from model.data import Source
from model.estimator import PoseEstimator, latent_point_names
from model.settings import AcaeFitSettings
from model.training import TrainingConfig, learning_rate_at, train

TINY = dict(steps=4, checkpoint_every=2, log_every=1, workers=0, image_size=64, abs_loss_start_step=2,
            weak_perspective_steps=1)


@pytest.fixture(scope="module")
def sources(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("training_stores")
    paths = {name: convert(get_converter(name), tiny_world / name, root / f"{name}.zarr", image_size=64).path
             for name in ("demo_h36m", "demo_smpl", "demo_lsp2d")}
    return [Source("demo_h36m", paths["demo_h36m"], 2, "3d"), Source("demo_smpl", paths["demo_smpl"], 2, "3d"),
            Source("demo_lsp2d", paths["demo_lsp2d"], 2, "2d")]


def _weights(path):
    return {k: v.clone() for k, v in PoseEstimator.load(path).state_dict().items()}


def test_resume_after_interruption_continues_from_the_checkpoint(sources, tmp_path):
    config = TrainingConfig(**TINY)
    whole = train(config, sources, tmp_path / "whole")
    assert whole.steps == 4 and whole.resumed_from == 0 and whole.model_path.exists()

    killed = train(config, sources, tmp_path / "resumed", stop_after=3)  # dies after step 3, checkpoint at 2
    assert killed.steps == 3 and not (tmp_path / "resumed" / "model.pt").exists()
    resumed = train(config, sources, tmp_path / "resumed")
    assert resumed.resumed_from == 2 and resumed.steps == 4
    a, b = _weights(whole.model_path), _weights(resumed.model_path)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_other_data_is_not_resumed(sources, tmp_path):
    config = TrainingConfig(**TINY)
    train(config, sources, tmp_path / "run", stop_after=2)
    again = train(config, sources, tmp_path / "run", data_fingerprint="new data")
    assert again.resumed_from == 0


def test_training_lowers_the_loss(sources, tmp_path):
    config = TrainingConfig(**{**TINY, "steps": 30, "checkpoint_every": 30, "learning_rate": 3e-3})
    result = train(config, sources, tmp_path / "run")
    first, last = result.history[0]["total"], np.mean([h["total"] for h in result.history[-5:]])
    assert last < 0.8 * first


@pytest.mark.parametrize("mode, consistency_examples", [("consistency", None), ("consistency", 2), ("latent", None),
                                                        ("hybrid", None)])
def test_every_mode_trains_with_a_frozen_autoencoder(sources, tmp_path, mode, consistency_examples):
    joints = union_joint_names(["h36m_17", "smpl_24", "lsp_14"])
    rng = np.random.default_rng(0)
    poses = rng.normal(0, 200, (64, len(joints), 3)) + [0, 0, 4000]
    acae = fit_acae(poses, joints, AcaeFitSettings(4, 2, steps=20, batch_size=32))
    result = train(TrainingConfig(**{**TINY, "mode": mode, "consistency_examples": consistency_examples}), sources,
                   tmp_path / mode, acae=acae)
    if mode != "latent":
        assert all(np.isfinite(h["consistency"]) and h["consistency"] > 0 for h in result.history)
    estimator = PoseEstimator.load(result.model_path)
    assert estimator.mode == mode
    crops = np.zeros((2, 64, 64, 3), np.uint8)
    K = np.tile(np.array([[80, 0, 31.5], [0, 80, 31.5], [0, 0, 1]], np.float32), (2, 1, 1))
    smpl = estimator.predict(crops, K, skeleton="smpl_24")
    assert smpl.shape == (2, 24, 3) and np.isfinite(smpl).all()
    if mode != "consistency":
        assert estimator.network.joint_names[:6] == latent_point_names(acae.latent_sides)


def test_modes_that_need_an_autoencoder_say_so(sources, tmp_path):
    with pytest.raises(ValueError, match="needs a fitted autoencoder"):
        train(TrainingConfig(**{**TINY, "mode": "consistency"}), sources, tmp_path / "run")
    with pytest.raises(ValueError, match="mode"):
        TrainingConfig(mode="joint")


def test_learning_rate_schedule_decays_then_restarts_lower():
    steps, base = 1000, 1e-3
    assert learning_rate_at(0, steps, base) == pytest.approx(base)
    assert learning_rate_at(919, steps, base) == pytest.approx(base / 3, rel=0.01)
    assert learning_rate_at(920, steps, base) == pytest.approx(base / 30)
    assert learning_rate_at(999, steps, base) < base / 30
