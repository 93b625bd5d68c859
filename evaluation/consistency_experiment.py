"""The consistency experiment (the paper's ablation of the final training modes): separate output heads
per skeleton format predict mutually inconsistent skeletons; does consistency regularisation with the
autoencoder fix that, at no cost in accuracy?

From one starting point, the pipeline's initial model (step 1: separate heads), each final mode of
``model.training`` is fine-tuned for the same number of steps, on the same batch composition, with the
same learning rate, consistency sample and frozen autoencoder (the pipeline's):

  separate     step 1 continued: an output per joint of every format, each learning from its own labels
  consistency  the same outputs, plus their distance from the autoencoder's reconstruction of them
  latent       the head predicts the autoencoder's latent points, decoded into every format
  hybrid       latents and joints, with the student-teacher terms

Each, and the initial model itself (0 further steps, the reference), is scored on every test set
(``evaluation.benchmark.score``): MPJPE and PA-MPJPE in the test set's own format, and consistency: the
mean distance (mm) of ALL the model's joints, of every format, from the autoencoder's reconstruction of
them, i.e. how far the predicted skeletons are from being one body read off in several formats. It is
measured with the autoencoder the regularised modes learnt from, as the paper's is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from assets.locations import Location, location
from evaluation.benchmark import score
from evaluation.experiment_files import counted, json_text, training_time_cells, write_files
from evaluation.plots import figure_png, plt
from model.distributed import launch_training
from model.estimator import MODES, PoseEstimator

INITIAL = "initial"  # the reference row: the initial model, not fine-tuned further
METRICS = {"mpjpe_mm": "MPJPE", "pa_mpjpe_mm": "PA-MPJPE", "consistency_mm": "consistency"}
REPORT_FILE, DATA_FILE, PLOT_FILE = "consistency.md", "consistency.json", "consistency_scores.png"


@dataclass(frozen=True)
class ConsistencyExperimentSettings:
    """``steps``: fine-tuning steps of every mode; ``modes``: the final modes compared (``model.estimator.MODES``)."""

    steps: int
    modes: tuple[str, ...] = MODES

    def __post_init__(self):
        object.__setattr__(self, "modes", tuple(self.modes))
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown or not self.modes or len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes: expected distinct modes of {MODES}, got {self.modes}")
        if self.steps < 1:
            raise ValueError(f"steps must be positive, got {self.steps}")


# The demo's 41 crops a step on 2 cores, as the pipeline's runs train: separate ~130 crops/s, consistency
# (8 crops with every joint) ~60. Not timed here: latent (48 latent points, decoded) should cost about what
# separate does, hybrid (latents and every joint of every crop) perhaps half of consistency's rate. So 4
# runs of 400 steps take ~20 min, then 5 models are scored on the test sets: well inside an hour
SMALL = ConsistencyExperimentSettings(steps=400)
TINY = ConsistencyExperimentSettings(steps=1)  # seconds, for tests: the runs and the report, not their results


@dataclass
class ConsistencyResult:
    """``rows``: one per (model, test set): model (``INITIAL`` or a mode), dataset, skeleton, examples and
    the ``METRICS`` (mm). ``runs``: one per mode: mode, steps, resumed_from (= steps: an earlier identical
    run was reused), seconds, images_per_second, final_loss, model_path."""

    rows: list[dict]
    runs: list[dict]
    steps: int
    seconds: float

    @property
    def models(self) -> list[str]:
        return [INITIAL, *(run["mode"] for run in self.runs)]

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(row["dataset"] for row in self.rows))

    def find(self, model: str, dataset: str) -> dict:
        return next(row for row in self.rows if (row["model"], row["dataset"]) == (model, dataset))

    def mean(self, model: str, metric: str) -> float:
        """The mean over test sets (each counts once, whatever its size)."""
        return float(np.mean([row[metric] for row in self.rows if row["model"] == model]))

    def markdown(self) -> str:
        lines = [
            "# Consistency experiment: separate heads against consistency regularisation", "",
            f"Every mode fine-tuned for {counted(self.steps, 'step')} from the initial model (separate heads), with the "
            "pipeline's batch composition, learning rate and autoencoder; `initial`: the initial model itself. "
            "Errors in mm on each test set's test split:", "",
            "- MPJPE, PA-MPJPE: in the test set's own skeleton format (root-relative; Procrustes-aligned).",
            "- consistency: mean distance of every format's predicted joints from the autoencoder's "
            "reconstruction of them (0: the formats agree on one body, as the autoencoder sees bodies).", "",
            "## Mean over the test sets", "",
            "| model | " + " | ".join(METRICS.values()) + " | training s | crops/s |",
            "|---|" + "---|" * (len(METRICS) + 2),
        ]
        runs = {run["mode"]: run for run in self.runs}
        for model in self.models:
            cells = [f"{self.mean(model, metric):.1f}" for metric in METRICS] + training_time_cells(runs.get(model))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        for metric, title in METRICS.items():
            lines += ["", f"## {title} per test set", "", "| test set | format | examples | " + " | ".join(self.models)
                      + " |", "|---|---|---|" + "---|" * len(self.models)]
            for dataset in self.datasets:
                first = self.find(INITIAL, dataset)
                lines.append(f"| {dataset} | {first['skeleton']} | {first['examples']} | "
                             + " | ".join(f"{self.find(model, dataset)[metric]:.1f}" for model in self.models) + " |")
            lines.append("| mean | | | " + " | ".join(f"{self.mean(model, metric):.1f}" for model in self.models) + " |")
        return "\n".join(lines) + "\n"

    def plots_png(self) -> dict[str, bytes]:
        """{file name: PNG}: the mean of each metric per model, one panel per metric."""
        figure, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6), dpi=100)
        colours = plt.cm.tab10(np.arange(len(self.models)))
        for panel, (metric, title) in zip(axes, METRICS.items()):
            values = [self.mean(model, metric) for model in self.models]
            panel.bar(range(len(values)), values, color=colours)
            panel.set_xticks(range(len(values)), self.models, rotation=30, fontsize=8)
            panel.set(title=f"{title}, mean over {len(self.datasets)} test sets", ylabel="mm")
            panel.title.set_fontsize(9)
            panel.grid(axis="y", alpha=0.3)
        figure.suptitle(f"each mode: {counted(self.steps, 'step')} from the initial model", fontsize=9)
        figure.tight_layout()
        return {PLOT_FILE: figure_png(figure)}

    def to_json(self) -> str:
        return json_text({"steps": self.steps, "seconds": self.seconds, "runs": self.runs, "rows": self.rows})

    def write(self, folder) -> list[Location]:
        """``consistency.md``, ``consistency.json`` and the plot in ``folder``, each file written atomically."""
        return write_files(folder, {REPORT_FILE: self.markdown().encode(), DATA_FILE: self.to_json().encode(),
                                    **self.plots_png()})


def _score_row(model: str, estimator, dataset: str, store_path, acae) -> dict:
    result = score(estimator, store_path, acae=acae)
    return {"model": model, "dataset": dataset, "skeleton": result["skeleton"], "examples": result["examples"],
            **{metric: result["metrics"][metric] for metric in METRICS}}


def run_consistency_experiment(
    runs: Mapping,
    sources: Sequence,
    initial_model,
    acae,
    test_stores: Mapping,
    runs_folder,
    *,
    nproc: int = 1,
    data_fingerprint: str = "",
    progress: Callable[[str], None] | None = None,
) -> ConsistencyResult:
    """Fine-tune ``initial_model`` (an estimator file) in each mode and score it (module docstring).

    ``runs``: {mode: its ``model.training.TrainingConfig``}, all of the same length; ``sources``: the
    batch composition (``model.data.Source``); ``acae``: the frozen autoencoder (``model.acae.ACAE``);
    ``test_stores``: {test set name: store path}. Each run trains in ``runs_folder/<mode>``, on ``nproc``
    processes, and resumes there a checkpoint of the same settings, sources and ``data_fingerprint`` (the
    caller's digest of the initial model, autoencoder and data): a finished one is reused as it is.
    """
    started = time.perf_counter()
    report = progress or (lambda message: None)
    wrong = [mode for mode, config in runs.items() if config.mode != mode]
    lengths = {config.steps for config in runs.values()}
    if not runs or wrong or len(lengths) != 1:
        raise ValueError(f"runs: expected {{mode: its training config}}, all of the same steps; got modes "
                         f"{ {mode: config.mode for mode, config in runs.items()} } and steps {sorted(lengths)}")
    if not test_stores:
        raise ValueError("test_stores: no test set to score the models on")

    def score_model(model: str, model_path) -> list[dict]:
        estimator = PoseEstimator.load(model_path)
        rows = []
        for dataset, store_path in test_stores.items():
            rows.append(_score_row(model, estimator, dataset, store_path, acae))
            report(f"{model} on {dataset}: MPJPE {rows[-1]['mpjpe_mm']:.1f} mm, consistency "
                   f"{rows[-1]['consistency_mm']:.1f} mm")
        return rows

    rows = score_model(INITIAL, initial_model)
    trained = []
    for number, (mode, config) in enumerate(runs.items(), 1):
        report(f"fine-tuning {mode} ({number}/{len(runs)}): {counted(config.steps, 'step')}")
        result = launch_training(config, sources, location(runs_folder) / mode, nproc=nproc, acae=acae,
                                 init_from=initial_model, data_fingerprint=data_fingerprint,
                                 progress=lambda message, mode=mode: report(f"{mode}: {message}"))
        trained.append({"mode": mode, "steps": result.steps, "resumed_from": result.resumed_from,
                        "seconds": result.seconds, "images_per_second": result.images_per_second,
                        "final_loss": result.history[-1]["total"] if result.history else float("nan"),
                        "model_path": str(result.model_path)})
        rows += score_model(mode, result.model_path)
    return ConsistencyResult(rows=rows, runs=trained, steps=lengths.pop(), seconds=time.perf_counter() - started)
