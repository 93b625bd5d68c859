import builtins
import shutil

import numpy as np
import pytest
import torch

from assets.joint_names import union_joint_names
from model import training
from model.acae import ACAE, fit_acae
from model.checkpoints import CheckpointError, load_checked
from model.estimator import PoseEstimator
from model.network import MetrabsConfig, MetrabsModel
from model.settings import AcaeFitSettings
from model.training import CHECKPOINT_KIND, TrainingConfig, TrainingDivergedError, train
from test_training import TINY, sources  # noqa: F401  (sources: the module-scoped fixture of tiny stores)

DELETE_TO_RESTART = "Delete it to start the run from scratch"


class _CreatesFileWhenUnpickled:
    """Unpickling calls ``open(path, "w")``: a stand-in for a checkpoint crafted to run code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def flip_64_bytes(path, at: float = 0.5):
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path):
    path.write_bytes(b"")


def random_bytes(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def another_object(path):
    torch.save([torch.zeros(3), "not a checkpoint"], path)


DAMAGES = {
    "64 flipped bytes in the tensor data": flip_64_bytes,
    "64 flipped bytes near the start": lambda path: flip_64_bytes(path, at=0.01),
    "64 flipped bytes at the end": lambda path: flip_64_bytes(path, at=1.0 - 64 / path.stat().st_size),
    "truncated": truncate,
    "empty": empty,
    "random bytes": random_bytes,
    "another pickled object": another_object,
}


@pytest.fixture(scope="module")
def good_checkpoint(sources, tmp_path_factory):  # noqa: F811
    run = tmp_path_factory.mktemp("interrupted_run")
    train(TrainingConfig(**TINY), sources, run, stop_after=2)
    return run / training.CHECKPOINT_FILE


def run_with(checkpoint_source, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint_source, run / training.CHECKPOINT_FILE)
    return run


# -- training checkpoints --------------------------------------------------------------------------
def test_the_checkpoint_holds_only_tensors_and_plain_data(good_checkpoint):
    checkpoint = torch.load(good_checkpoint, weights_only=True)  # raises on any other object
    assert checkpoint["format"] == CHECKPOINT_KIND.format_tag and checkpoint["step"] == 2


def test_a_checkpoint_crafted_to_run_code_is_refused_without_running_it(sources, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "code_ran"
    crafted = {"format": CHECKPOINT_KIND.format_tag, "version": CHECKPOINT_KIND.version, "step": 2,
               "history": [_CreatesFileWhenUnpickled(marker)]}
    torch.save(crafted, run / training.CHECKPOINT_FILE)
    # the file is a working exploit: unpickled without weights_only, it runs its code
    torch.load(run / training.CHECKPOINT_FILE, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError) as refused:
        train(TrainingConfig(**TINY), sources, run)
    assert not marker.exists()
    message = str(refused.value)
    assert str(run / training.CHECKPOINT_FILE) in message and "run arbitrary code" in message
    assert DELETE_TO_RESTART in message
    assert not (run / training.MODEL_FILE).exists()


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_checkpoint_is_refused_naming_the_file(good_checkpoint, sources, tmp_path, damage):  # noqa: F811
    run = run_with(good_checkpoint, tmp_path)
    damage(run / training.CHECKPOINT_FILE)
    with pytest.raises(CheckpointError) as refused:
        train(TrainingConfig(**TINY), sources, run)
    assert isinstance(refused.value, ValueError)
    assert str(run / training.CHECKPOINT_FILE) in str(refused.value)
    assert DELETE_TO_RESTART in str(refused.value)
    assert not (run / training.MODEL_FILE).exists()


def test_a_checkpoint_with_nan_weights_is_refused_before_training(good_checkpoint, sources, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    checkpoint = torch.load(good_checkpoint, weights_only=True)
    name = next(k for k, v in checkpoint["estimator"].items() if v.is_floating_point() and v.numel())
    checkpoint["estimator"][name].view(-1)[0] = float("nan")
    run.mkdir()
    torch.save(checkpoint, run / training.CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values, in estimator\.") as refused:
        train(TrainingConfig(**TINY), sources, run)
    assert name in str(refused.value) and str(run / training.CHECKPOINT_FILE) in str(refused.value)
    assert not (run / training.MODEL_FILE).exists()


# -- divergence ------------------------------------------------------------------------------------
def poison_3d_loss(monkeypatch, from_step: int, factor: float):
    """Multiplies the 3D loss terms by ``factor`` from step index ``from_step`` on, as labels gone bad would."""
    real = training.loss_3d_batch

    def poisoned(*args, step, **kwargs):
        terms = real(*args, step=step, **kwargs)
        return {k: v * factor for k, v in terms.items()} if step >= from_step else terms

    monkeypatch.setattr(training, "loss_3d_batch", poisoned)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(sources, tmp_path, monkeypatch):  # noqa: F811
    poison_3d_loss(monkeypatch, from_step=2, factor=float("nan"))
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"at step 3/4: the loss is not finite") as diverged:
        train(TrainingConfig(**TINY), sources, run)  # checkpoints after steps 2 and 4
    assert "3d_rel nan" in str(diverged.value)  # names the loss terms
    assert not (run / training.MODEL_FILE).exists()
    kept = load_checked(run / training.CHECKPOINT_FILE, CHECKPOINT_KIND)  # also refuses non-finite weights
    assert kept["step"] == 2


def test_an_exploding_loss_stops_training(sources, tmp_path, monkeypatch):  # noqa: F811
    poison_3d_loss(monkeypatch, from_step=0, factor=1e9)
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"at step 1/4: the loss exploded beyond 1e\+06 m"):
        train(TrainingConfig(**TINY), sources, run)
    assert not (run / training.MODEL_FILE).exists() and not (run / training.CHECKPOINT_FILE).exists()


def test_non_finite_weights_are_never_saved(sources, tmp_path):  # noqa: F811
    # an infinite learning rate turns the weights into inf/NaN on the first update, while the loss that
    # led to it was finite: only the check of the weights before saving catches it
    config = TrainingConfig(**{**TINY, "learning_rate": float("inf"), "checkpoint_every": 1})
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"by step 1/4: NaN or infinite values in estimator\."):
        train(config, sources, run)
    assert not (run / training.MODEL_FILE).exists() and not (run / training.CHECKPOINT_FILE).exists()


# -- model files -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """One small file of each kind, with the loader that reads it."""
    root = tmp_path_factory.mktemp("model_files")
    torch.manual_seed(0)
    joints = union_joint_names(["h36m_17"])
    network = MetrabsModel(MetrabsConfig(joint_names=joints, image_size=64, stride=16))
    poses = np.random.default_rng(0).normal(0, 200, (64, len(joints), 3)) + [0, 0, 4000]
    return {
        "estimator": (PoseEstimator(network, "separate", joints).save(root / "estimator.pt"), PoseEstimator.load),
        "metrabs": (network.save(root / "metrabs.pt"), MetrabsModel.load),
        "acae": (fit_acae(poses, joints, AcaeFitSettings(4, 2, steps=5, batch_size=32)).save(root / "acae.pt"), ACAE.load),
    }


LOADERS = ["estimator", "metrabs", "acae"]


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
@pytest.mark.parametrize("kind", LOADERS)
def test_a_damaged_model_file_is_refused_naming_the_file(model_files, tmp_path, kind, damage):
    source, load = model_files[kind]
    path = tmp_path / source.name
    shutil.copy(source, path)
    load(path)  # intact, it loads
    damage(path)
    with pytest.raises(CheckpointError) as refused:
        load(path)
    assert str(path) in str(refused.value) and "re-run the step that wrote it" in str(refused.value)


@pytest.mark.parametrize("kind", LOADERS)
def test_a_model_file_of_another_kind_is_refused(model_files, kind):
    other, _ = model_files[LOADERS[(LOADERS.index(kind) + 1) % len(LOADERS)]]
    _, load = model_files[kind]
    with pytest.raises(CheckpointError, match=r"not an? .*\(format tag 'dozens\.") as refused:
        load(other)
    assert str(other) in str(refused.value)


@pytest.mark.parametrize("kind", LOADERS)
def test_a_model_file_crafted_to_run_code_is_refused_without_running_it(model_files, tmp_path, kind):
    _, load = model_files[kind]
    marker = tmp_path / "code_ran"
    torch.save({"format": "anything", "state_dict": _CreatesFileWhenUnpickled(marker)}, tmp_path / "crafted.pt")
    with pytest.raises(CheckpointError, match="run arbitrary code"):
        load(tmp_path / "crafted.pt")
    assert not marker.exists()


def test_an_estimator_with_nan_weights_is_refused(model_files, tmp_path):
    estimator = PoseEstimator.load(model_files["estimator"][0])
    with torch.no_grad():
        next(estimator.parameters())[0] = float("nan")
    path = estimator.save(tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"NaN or infinite values, in state_dict\.network\."):
        PoseEstimator.load(path)
