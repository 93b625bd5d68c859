import json

import numpy as np
import pytest
import torch
from PIL import Image

from assets.joint_names import union_joint_names
import model
from model.estimator import PoseEstimator, fit_crops
from model.inference import predict_folder
from model.network import MetrabsConfig, MetrabsModel
from orchestration.cli import main


@pytest.fixture
def estimator_path(tmp_path):
    torch.manual_seed(0)
    joints = union_joint_names(["h36m_17", "smpl_24"])
    network = MetrabsModel(MetrabsConfig(joint_names=joints, image_size=64, stride=16))
    return PoseEstimator(network, "separate", joints).save(tmp_path / "model.pt")


def _intrinsics(size, count=2):
    return np.tile(np.array([[size * 1.2, 0, (size - 1) / 2], [0, size * 1.2, (size - 1) / 2], [0, 0, 1]],
                            np.float32), (count, 1, 1))


def test_load_and_predict_one_skeleton_in_camera_millimetres(estimator_path):
    estimator = model.load(estimator_path)
    crops = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    smpl = estimator.predict(crops, _intrinsics(64), skeleton="smpl_24")
    assert smpl.shape == (2, 24, 3) and np.isfinite(smpl).all()
    everything = estimator.predict(crops, _intrinsics(64))
    assert everything.shape == (2, 41, 3)
    assert estimator.skeletons() == ["h36m_17", "smpl_24"]


def test_crops_of_another_size_are_resized_with_their_intrinsics(estimator_path):
    estimator = model.load(estimator_path)
    crops = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    upscaled = np.repeat(np.repeat(crops, 2, axis=1), 2, axis=2)
    resized, K = fit_crops(upscaled, _intrinsics(128), 64)
    assert tuple(resized.shape) == (2, 64, 64, 3)
    # a 2x nearest upscale, filtered back down, is the original image up to rounding
    assert np.abs(resized.numpy().astype(int) - crops).max() <= 1
    np.testing.assert_allclose(K.numpy(), _intrinsics(64), atol=1e-4)  # the same camera for the same view
    np.testing.assert_array_equal(estimator.predict(upscaled, _intrinsics(128), skeleton="h36m_17"),
                                  estimator.predict(resized, K, skeleton="h36m_17"))


def test_bad_inputs_name_what_was_expected(estimator_path):
    estimator = model.load(estimator_path)
    with pytest.raises(ValueError, match="square"):
        estimator.predict(np.zeros((1, 64, 48, 3), np.uint8), _intrinsics(64, 1))
    bad = _intrinsics(64, 1)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="intrinsics"):
        estimator.predict(np.zeros((1, 64, 64, 3), np.uint8), bad)
    with pytest.raises(ValueError, match="lsp_14"):
        estimator.predict(np.zeros((1, 64, 64, 3), np.uint8), _intrinsics(64, 1), skeleton="lsp_14")
    with pytest.raises(FileNotFoundError):
        model.load(estimator_path.parent / "missing.pt")


def test_predict_command_on_a_folder_of_crops(estimator_path, tmp_path, capsys):
    folder = tmp_path / "crops"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / name)
    poses = predict_folder(model.load(estimator_path), folder, skeleton="h36m_17", fov_degrees=50)
    assert sorted(poses) == ["a.png", "b.jpg"] and poses["a.png"].shape == (17, 3)
    out = tmp_path / "poses.json"
    assert main(["predict", str(folder), "--model", str(estimator_path), "--skeleton", "h36m_17",
                 "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["joint_names"][0] == "pelv" and len(written["poses"]["b.jpg"]) == 17
    (folder / "c.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="c.png"):
        predict_folder(model.load(estimator_path), folder, skeleton="h36m_17")
