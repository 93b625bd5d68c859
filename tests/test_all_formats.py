"""The demo trains one model on a dataset of every skeleton format, so it answers in each of the paper's 23."""

import json

import numpy as np
import pytest
import torch

from assets.converters import get_converter
from assets.converters.interface import converter_skeleton
from assets.joint_names import union_joint_names
from assets.skeletons import get_skeleton
from model.estimator import PoseEstimator
from model.network import MetrabsConfig, MetrabsModel
from orchestration.cli import main
from orchestration.config import load_config

# the formats the released MeTRAbs-ACAE models output (the WACV 2023 paper's 23)
PAPER_FORMATS = ("smpl_24", "kinectv2_25", "h36m_17", "h36m_25", "mpi_inf_3dhp_17", "mpi_inf_3dhp_28", "coco_19",
                 "smplx_42", "ghum_35", "lsp_14", "sailvos_26", "gpa_34", "aspset_17", "bml_movi_87", "mads_19",
                 "berkeley_mhad_43", "total_capture_21", "jta_22", "ikea_asm_17", "human4d_32", "3dpeople_29",
                 "umpm_15", "smpl+head_30")


@pytest.fixture(scope="module")
def demo_training_formats(tiny_world):
    """The skeleton formats of the datasets the project's params.yaml trains on, read from the demo world's
    raw folders by their converters, as training reads them."""
    config = load_config("params.yaml")
    sources = [*config.training.batch_3d, *config.training.batch_2d]
    formats = []
    for name in sources:
        entry = config.datasets[name]
        if entry.converter.startswith("pose2sim"):  # the real recordings: BlazePose landmarks
            formats.append(get_converter(entry.converter).SKELETON)
        else:
            formats.append(converter_skeleton(get_converter(entry.converter), tiny_world / entry.raw.name))
    return list(dict.fromkeys(formats))


@pytest.fixture(scope="module")
def all_formats_model(demo_training_formats, tmp_path_factory):
    torch.manual_seed(0)
    joints = union_joint_names(demo_training_formats)
    network = MetrabsModel(MetrabsConfig(joint_names=joints, image_size=64, stride=16))
    return PoseEstimator(network, "separate", joints).save(tmp_path_factory.mktemp("model") / "model.pt")


def test_the_demo_trains_on_a_dataset_of_every_paper_format(demo_training_formats):
    assert set(PAPER_FORMATS) <= set(demo_training_formats)
    assert "blazepose_33" in demo_training_formats  # and the real recordings' format


def _intrinsics(count: int) -> np.ndarray:
    return np.tile(np.array([[77.0, 0, 31.5], [0, 77.0, 31.5], [0, 0, 1]], np.float32), (count, 1, 1))


@pytest.mark.parametrize("skeleton", PAPER_FORMATS)
def test_predict_and_detect_poses_answer_in_each_format(all_formats_model, skeleton):
    estimator = PoseEstimator.load(all_formats_model)
    joints = get_skeleton(skeleton).num_joints
    crops = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    poses = estimator.predict(crops, _intrinsics(2), skeleton=skeleton)
    assert poses.shape == (2, joints, 3) and np.isfinite(poses).all()
    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    found = estimator.detect_poses(image, skeleton, boxes=np.array([[40.0, 10.0, 60.0, 100.0]]))
    assert found["poses3d"].shape == (1, joints, 3) and found["poses2d"].shape == (1, joints, 2)
    assert np.isfinite(found["poses3d"]).all()


def test_the_predict_command_takes_a_format_name_with_a_plus(all_formats_model, tmp_path):
    from PIL import Image

    (tmp_path / "crops").mkdir()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "crops" / "a.png")
    out = tmp_path / "poses.json"
    assert main(["predict", str(tmp_path / "crops"), "--model", str(all_formats_model), "--skeleton", "smpl+head_30",
                 "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["skeleton"] == "smpl+head_30"
    assert np.asarray(written["poses"]["a.png"]).shape == (30, 3)
