"""Training on several processes (model.distributed): 2 gloo processes on the CPU against 1 process.

Why the tolerances are what they are: in float32 the two runs differ by rounding (a batch's gradient is
summed in another order), and AdamW turns rounding into visible differences wherever a gradient is
almost 0, since it moves every weight by about the learning rate whatever its gradient's size. The head's
2D-heatmap biases have a gradient of exactly 0 in exact arithmetic (a softmax does not change when a
constant is added to all its logits), so they wander by rounding alone, in a single-process run as much
(1 versus 2 threads moves them by 3% of their size). So the losses of every step are compared to 1e-4
(measured: 1e-6), and the weights and Adam's running mean of the gradients as tensors, the difference's
norm against the tensor's norm, to 2e-3 (measured: 1e-4 to 2e-4). Mistakes tried on purpose (the 3D/2D mix
drawn per process, the loss normalised per process, rows gathered out of order, the gradient not scaled by
the number of processes) put the losses off by 3e-4 to 6e-3, and the weights by 0.2 to 1.6.
"""

import json
import shutil
import signal

import numpy as np
import pytest
import torch
import torch.distributed as dist

from assets.joint_names import union_joint_names
from model.acae import fit_acae
from model.data import MultiDatasetBatches, Source
from model.distributed import DistributedTrainingError, launch_training
from model.estimator import PoseEstimator
from model.settings import AcaeFitSettings
from model.training import CHECKPOINT_FILE, HISTORY_FILE, MODEL_FILE, TrainingConfig, train
from orchestration.config import ConfigError, load_config
from pipeline_config import TINY_TRAINING, write_config
from test_training import TINY, sources  # noqa: F401  (sources: the module-scoped fixture of tiny stores)

SKELETONS = ["h36m_17", "smpl_24", "lsp_14"]  # the fixture's stores, in batch order
ON_CPU = {**TINY, "device": "cpu"}  # gloo, also where there are GPUs
# BatchNorm frozen (its batch statistics would be each process's own) and crops as stored; consistency
# mode, so that the autoencoder term's normalisation over the global batch is covered too
COMPARABLE = TrainingConfig(**{**ON_CPU, "mode": "consistency", "bn_inference_steps": TINY["steps"],
                               "augment": False, "learning_rate": 1e-2})
LOSS_TOLERANCE = 1e-4
TENSOR_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def acae():
    joints = union_joint_names(SKELETONS)
    poses = np.random.default_rng(0).normal(0, 200, (64, len(joints), 3)) + [0, 0, 4000]
    return fit_acae(poses, joints, AcaeFitSettings(4, 2, steps=20, batch_size=32))


@pytest.fixture(scope="module")
def one_process(sources, acae, tmp_path_factory):  # noqa: F811
    return launch_training(COMPARABLE, sources, tmp_path_factory.mktemp("one_process"), nproc=1, acae=acae)


@pytest.fixture(scope="module")
def progress_of_two_processes() -> list[str]:
    return []


@pytest.fixture(scope="module")
def two_processes(sources, acae, progress_of_two_processes, tmp_path_factory):  # noqa: F811
    return launch_training(COMPARABLE, sources, tmp_path_factory.mktemp("two_processes"), nproc=2, acae=acae,
                           progress=progress_of_two_processes.append)


def _weights(result) -> dict[str, torch.Tensor]:
    return PoseEstimator.load(result.model_path).state_dict()


def _gradient_means(result) -> dict[int, torch.Tensor]:
    """Adam's running mean of each weight's gradient, from the run's last checkpoint."""
    state = torch.load(result.model_path.parent / CHECKPOINT_FILE, weights_only=True)["optimizer"]["state"]
    return {number: entry["exp_avg"] for number, entry in state.items()}


def _assert_close_as_tensors(expected: dict, actual: dict, what: str) -> None:
    for name, wanted in expected.items():
        if wanted.is_floating_point() and wanted.norm() > 0:
            difference = float((actual[name] - wanted).norm() / wanted.norm())
            assert difference <= TENSOR_TOLERANCE, f"{what} {name}: differs by {difference:.2g} of its norm"


def _assert_trained_alike(expected, actual) -> None:
    """Same losses at every step, same gradients, same weights (within float32 rounding under AdamW)."""
    assert [h["step"] for h in actual.history] == [h["step"] for h in expected.history]
    for wanted, got in zip(expected.history, actual.history):
        for term in wanted.keys() - {"step", "images_per_second"}:
            assert got[term] == pytest.approx(wanted[term], rel=LOSS_TOLERANCE), f"step {wanted['step']}: {term}"
    _assert_close_as_tensors(_gradient_means(expected), _gradient_means(actual), "gradient mean of weight")
    joints = len(union_joint_names(SKELETONS))
    wanted, got = _weights(expected), _weights(actual)
    # the 2D heatmaps' biases, which no loss depends on (module docstring)
    wanted["network.head.conv.bias"] = wanted["network.head.conv.bias"][joints:]
    got["network.head.conv.bias"] = got["network.head.conv.bias"][joints:]
    _assert_close_as_tensors(wanted, got, "weight")


def test_two_processes_train_as_one_does(one_process, two_processes, progress_of_two_processes):
    assert not dist.is_initialized()  # nproc=1 trains in the calling process, without a process group
    assert one_process.device == "cpu" and two_processes.device == "cpu x2 (gloo)"
    assert two_processes.steps == one_process.steps == COMPARABLE.steps
    _assert_trained_alike(one_process, two_processes)
    written = two_processes.model_path.parent
    assert json.loads((written / HISTORY_FILE).read_text()) == two_processes.history
    # rank 0's progress reaches the caller, once per step (log_every 1) and only from rank 0
    assert [line.split()[:2] for line in progress_of_two_processes] == \
        [["step", f"{step}/{COMPARABLE.steps}"] for step in range(1, COMPARABLE.steps + 1)]
    assert all(line.endswith("on cpu x2 (gloo)") for line in progress_of_two_processes)


def test_each_process_renders_its_own_slots_of_the_same_global_batch(sources):  # noqa: F811
    """With augmentation: every example, and its augmentation, is the same for any number of processes."""
    joints = union_joint_names(SKELETONS)
    settings = dict(steps=2, seed=3, workers=0, augment=True, image_size=64)
    whole = list(MultiDatasetBatches(sources, joints, **settings))
    shares = [MultiDatasetBatches(sources, joints, **settings, rank=rank, nproc=2) for rank in range(2)]
    for step, (batch, *per_rank) in enumerate(zip(whole, *shares)):
        for part in ("3d", "2d"):
            rows = np.concatenate(shares[0].rank_rows(part))
            for key in ("image", "intrinsics", "pose3d", "pose2d", "joint_valid", "index"):
                gathered = torch.cat([own[part][key] for own in per_rank])
                torch.testing.assert_close(gathered, batch[part][key][rows], rtol=0, atol=0, equal_nan=True,
                                           msg=f"step {step}, {part} part: {key}")


def test_a_killed_two_process_run_resumes_on_two_or_on_one_process(sources, acae, one_process,  # noqa: F811
                                                                   two_processes, tmp_path):
    killed = launch_training(COMPARABLE, sources, tmp_path / "on_two", nproc=2, acae=acae, stop_after=3)
    assert killed.steps == 3 and not (tmp_path / "on_two" / MODEL_FILE).exists()  # the checkpoint is step 2's
    shutil.copytree(tmp_path / "on_two", tmp_path / "on_one")

    on_two = launch_training(COMPARABLE, sources, tmp_path / "on_two", nproc=2, acae=acae)
    assert on_two.resumed_from == 2 and on_two.steps == COMPARABLE.steps
    # the same processes computing the same steps: the uninterrupted run's weights
    uninterrupted = _weights(two_processes)
    for name, weight in _weights(on_two).items():
        torch.testing.assert_close(weight, uninterrupted[name], rtol=1e-5, atol=1e-6)

    on_one = train(COMPARABLE, sources, tmp_path / "on_one", acae=acae)
    assert on_one.resumed_from == 2 and on_one.steps == COMPARABLE.steps
    _assert_trained_alike(one_process, on_one)


class _UnreadableInProcess1:
    """A model file path that training process 1 cannot open (``os.PathLike``): one process fails."""

    def __init__(self, path):
        self.path = str(path)

    def __fspath__(self) -> str:
        if dist.is_initialized() and dist.get_rank() == 1:
            raise PermissionError(f"process 1 may not read {self.path}")
        return self.path


def test_an_exception_in_one_process_fails_the_run_with_that_process_message(sources, one_process,  # noqa: F811
                                                                              tmp_path):
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    config = TrainingConfig(**ON_CPU)
    with pytest.raises(DistributedTrainingError, match=r"training process 1 of 2 failed: PermissionError: "
                                                       r"process 1 may not read .*model\.pt") as failed:
        launch_training(config, sources, tmp_path / "run", nproc=2,
                        init_from=_UnreadableInProcess1(one_process.model_path))
    assert "Its traceback" in str(failed.value) and "copy_matching_weights" in str(failed.value)
    assert not (tmp_path / "run" / MODEL_FILE).exists()
    # the launcher's own handlers of termination signals are gone again
    assert {number: signal.getsignal(number) for number in handlers} == handlers


def test_a_share_not_divisible_by_nproc_is_refused_before_anything_starts(sources, tmp_path):  # noqa: F811
    odd = [*sources[:1], Source("demo_smpl", sources[1].store_path, 3, "3d"), *sources[2:]]
    with pytest.raises(ValueError, match=r"source 'demo_smpl': its share of each batch, 3 examples .* "
                                         r"not divisible by nproc=2"):
        launch_training(TrainingConfig(**ON_CPU), odd, tmp_path / "run", nproc=2)
    assert not (tmp_path / "run").exists()


def test_the_pipeline_config_refuses_a_share_not_divisible_by_nproc(tmp_path):
    training = {**TINY_TRAINING, "nproc": 2, "batch_2d": {"demo_lsp2d": 3}}
    with pytest.raises(ConfigError, match=r"field 'training\.batch_2d\.demo_lsp2d' is 3, not divisible by "
                                          r"training\.nproc \(2\)"):
        load_config(write_config(tmp_path, tmp_path / "raw", training=training))
    with pytest.raises(ConfigError, match=r"field 'training\.nproc' must be an integer >= 1, got 0"):
        load_config(write_config(tmp_path, tmp_path / "raw", training={**TINY_TRAINING, "nproc": 0}))
    config = load_config(write_config(tmp_path, tmp_path / "raw", training={**TINY_TRAINING, "nproc": 2}))
    assert config.training.nproc == 2
