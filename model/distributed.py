"""Training on several processes with torch.distributed (docs/distributed_training.md).

``launch_training(config, sources, out_dir, nproc=n)`` runs ``model.training.train`` in ``n`` processes
started by torch's elastic launcher with ``torchrun --standalone`` semantics (one machine, a rendezvous on
127.0.0.1 at a port the system picks): NCCL and one GPU per process where ``config.device`` is CUDA (or is
unset and CUDA is present), gloo on the CPU otherwise. ``nproc=1`` is ``train`` in the calling process:
nothing is started and torch.distributed is not initialised.

The processes share every global batch (``model.training``), so the global batch, its augmentation and
the random numbers of the forward pass do not depend on ``nproc``; only rank 0 reports progress and
writes the checkpoint, history and model, and a checkpoint resumes on any number of processes.

An exception in any process ends all of them (the launcher stops the others) and raises
``DistributedTrainingError`` with that process's message and traceback.

The processes are forked from a forkserver: a clean process, started at the first launch of the calling
process, that has imported torch and this code once (``spawn`` would import them in every process of
every launch, about 5 s each). It keeps the code and environment it started with, so a long-lived session
that edits the training code must restart before launching again. A script that launches
needs the ``if __name__ == "__main__":`` guard: every process imports the main module.
"""

import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from model.data import Source, check_batch_shares
from model.training import TrainingConfig, TrainingResult, pick_device, train

log = logging.getLogger(__name__)

# A process that dies is noticed by the launcher within a poll and the others are stopped; this timeout
# only ends a process stuck alive in a collective. The longest honest wait for one is a slow process's
# first batch (its image cache filling) or rank 0 writing a checkpoint.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
START_METHOD = "forkserver"
# imported once by the forkserver; torch.optim imports torch's compiler stack lazily, at 1.5 s a process
FORKSERVER_PRELOAD = ["model.distributed", "torch._dynamo"]
_RELAY_POLL_SECONDS = 0.2


class DistributedTrainingError(RuntimeError):
    """A training process failed; the message is that process's exception and traceback."""


@dataclasses.dataclass(frozen=True)
class _RankFailure:
    """What a failing process sends before it exits. The launcher reports only one failure, and not always
    the first: a process whose peer died fails too, with a broken connection as its error."""

    rank: int
    time: float
    message: str
    traceback: str


def launch_training(
    config: TrainingConfig,
    sources: Sequence[Source],
    out_dir,
    *,
    nproc: int = 1,
    acae=None,
    init_from=None,
    progress: Callable[[str], None] | None = None,
    stop_after: int | None = None,
    data_fingerprint: str = "",
) -> TrainingResult:
    """``model.training.train`` on ``nproc`` processes (same arguments); returns rank 0's result.

    Every dataset's ``count_per_batch`` must be divisible by ``nproc`` (ValueError otherwise, before
    anything starts). On CUDA each process takes the GPU of its local rank; on the CPU the cores are
    shared out among the processes.
    """
    sources = list(sources)
    check_batch_shares(sources, nproc)
    if nproc == 1:
        return train(config, sources, out_dir, acae=acae, init_from=init_from, progress=progress,
                     stop_after=stop_after, data_fingerprint=data_fingerprint)
    device_type = _device_type(config.device, nproc)
    multiprocessing.set_forkserver_preload(FORKSERVER_PRELOAD)  # no effect once the forkserver runs
    messages = multiprocessing.get_context(START_METHOD).Queue()
    failures: list[_RankFailure] = []
    with tempfile.TemporaryDirectory(prefix="dozens-training-") as launcher_logs:
        # torchrun --standalone: one node, a rendezvous on this machine at a port the system picks
        launch = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                              rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
                              max_restarts=0, start_method=START_METHOD,
                              logs_specs=DefaultLogsSpecs(log_dir=launcher_logs))
        try:
            with _relayed(messages, progress or log.info, failures), _signal_handlers_kept(launch.signals_to_handle):
                results = elastic_launch(launch, _train_rank)(config, sources, str(out_dir), device_type, acae,
                                                              init_from, stop_after, data_fingerprint, messages)
        except ChildFailedError as failed:
            raise DistributedTrainingError(_failure_message(failures, failed, nproc)) from None
    return results[0]


def _device_type(requested: str | None, nproc: int) -> str:
    """'cuda' (NCCL, one GPU per process) or 'cpu' (gloo), checked before any process starts."""
    device = pick_device(requested)
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise ValueError(f"device: training on nproc={nproc} processes runs on 'cuda' (NCCL) or 'cpu' (gloo), "
                         f"got {requested!r}")
    if device.index is not None:
        raise ValueError(f"device: with nproc={nproc} each process takes the GPU of its local rank; "
                         f"expected 'cuda', got {requested!r}")
    visible = torch.cuda.device_count()
    if visible < nproc:
        raise ValueError(f"nproc: {nproc} processes on CUDA need a GPU each, but {visible} are visible; lower "
                         "nproc (params.yaml: training.nproc), or train on the CPU (TrainingConfig.device 'cpu')")
    return "cuda"


def _train_rank(config: TrainingConfig, sources: list[Source], out_dir: str, device_type: str, acae, init_from,
                stop_after: int | None, data_fingerprint: str, messages) -> TrainingResult | None:
    """One process of the run (the launcher sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    rank, local_rank, nproc = (int(os.environ[name]) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    try:
        if device_type == "cuda":
            device, backend = torch.device("cuda", local_rank), "nccl"
            torch.cuda.set_device(device)
        else:
            device, backend = torch.device("cpu"), "gloo"
            # torch gives every process a thread per core; the processes share the cores instead
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            torch.set_num_threads(max(1, cores // nproc))
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        try:
            result = train(dataclasses.replace(config, device=str(device)), sources, out_dir, acae=acae,
                           init_from=init_from, progress=messages.put, stop_after=stop_after,
                           data_fingerprint=data_fingerprint, distributed=True)
        finally:
            dist.destroy_process_group()
    except Exception as error:
        messages.put(_RankFailure(rank, time.time(), f"{type(error).__name__}: {error}", traceback.format_exc()))
        raise
    return result if rank == 0 else None


@contextmanager
def _relayed(messages, report: Callable[[str], None], failures: list[_RankFailure]) -> Iterator[None]:
    """Rank 0's progress lines reported here as they come (the launcher holds the calling thread), and the
    processes' failures collected."""
    finished = threading.Event()

    def relay() -> None:
        while True:
            try:
                message = messages.get(timeout=_RELAY_POLL_SECONDS)
            except queue.Empty:
                if finished.is_set():
                    return
                continue
            if isinstance(message, _RankFailure):
                failures.append(message)
                continue
            try:
                report(message)
            except Exception:  # the lines must still be read: a full queue would block rank 0 at its exit
                log.exception("reporting a line of training progress failed: %s", message)

    relay_thread = threading.Thread(target=relay, name="training-progress", daemon=True)
    relay_thread.start()
    try:
        yield
    finally:
        finished.set()
        relay_thread.join()
        messages.close()


@contextmanager
def _signal_handlers_kept(signal_names: str) -> Iterator[None]:
    """The launcher turns termination signals into exceptions that stop the processes, and leaves its
    handlers installed; the caller's (Dagster's, pytest's) are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the launcher installs handlers only in the main thread
        return
    signals = [getattr(signal, name.strip()) for name in signal_names.split(",")]
    handlers = {number: signal.getsignal(number) for number in signals}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            if handler is not None:  # None: a handler installed outside Python, which cannot be put back
                signal.signal(number, handler)


def _failure_message(failures: list[_RankFailure], failed: ChildFailedError, nproc: int) -> str:
    """The first failure a process sent, unless the launcher saw a process die without sending one (killed
    by a signal, e.g. for memory): that one came first, and the others' broken connections follow from it."""
    rank, failure = failed.get_first_failure()
    if failure.exitcode < 0 and all(sent.rank != rank for sent in failures):
        return f"training process {rank} of {nproc} was killed by signal {failure.signal_name()}"
    first = min(failures, key=lambda sent: sent.time, default=None)
    if first is not None:
        rank, message, stack = first.rank, first.message, first.traceback
    elif isinstance(failure.message, dict):  # what the launcher's wrapper recorded of the exception
        message = failure.message.get("message", "")
        stack = failure.message.get("extraInfo", {}).get("py_callstack", "")
    else:
        return f"training process {rank} of {nproc} exited with code {failure.exitcode} and no error message"
    return f"training process {rank} of {nproc} failed: {message}\n\nIts traceback:\n{stack}"
