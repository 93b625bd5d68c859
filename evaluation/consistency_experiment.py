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

Consistency is not correctness. Skeletons can agree under the autoencoder and all be wrong together, and
the yardstick is the very autoencoder the regularised modes were trained to agree with, which favours
them by construction; a test set's labels, in one format, say nothing of the others. The demo world
knows every test crop's true body in every format (``evaluation.truth_scores``), so a fourth measure
makes what the paper cannot, on each test set the world regenerates: MPJPE, all formats, vs truth. Each
format the model outputs is scored against the world's true joints of that format (root-relative MPJPE
about the format's ``root_joints``, mean over the test crops), then the formats are averaged, each
counting once (the JSON keeps each format's). No autoencoder takes part: regularisation that made the
formats agree by moving them towards the body lowers it, agreement on a wrong body does not. Test sets
the world cannot regenerate (recordings) have no such score (— in the tables, null in the JSON), and its
means are over those that have one. Each test set's truth is checked against its labels and computed
once, for all the models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from assets.locations import Location, location
from assets.store import open_store
from evaluation.benchmark import predict_split, score
from evaluation.experiment_files import counted, json_text, training_time_cells, write_files
from evaluation.plots import figure_png, plt
from evaluation.truth_scores import EvaluationSet, mpjpe_by_format, true_test_poses
from model.distributed import launch_training
from model.estimator import MODES, PoseEstimator

INITIAL = "initial"  # the reference row: the initial model, not fine-tuned further
ALL_FORMATS = "all_formats_mpjpe_mm"  # against the world's truth: NaN on a test set without it
METRICS = {"mpjpe_mm": "MPJPE", "pa_mpjpe_mm": "PA-MPJPE", "consistency_mm": "consistency",
           ALL_FORMATS: "MPJPE, all formats, vs truth"}
BY_FORMAT = "mpjpe_by_format_mm"  # a row's {format: MPJPE vs truth} behind ALL_FORMATS ({}: no truth)
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


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _mm(value) -> str:
    """A table cell of millimetres: "—" where there is no value (a test set without the world's truth)."""
    return f"{value:.1f}" if _finite(value) else "—"


@dataclass
class ConsistencyResult:
    """``rows``: one per (model, test set): model (``INITIAL`` or a mode), dataset, skeleton, examples, the
    ``METRICS`` (mm) and ``BY_FORMAT``. ``runs``: one per mode: mode, steps, resumed_from (= steps: an earlier
    identical run was reused), seconds, images_per_second, final_loss, model_path."""

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

    def scored(self, metric: str) -> list[str]:
        """The test sets with a value of ``metric`` (of ``ALL_FORMATS``: those with the world's truth)."""
        return list(dict.fromkeys(row["dataset"] for row in self.rows if _finite(row[metric])))

    def find(self, model: str, dataset: str) -> dict:
        return next(row for row in self.rows if (row["model"], row["dataset"]) == (model, dataset))

    def mean(self, model: str, metric: str) -> float:
        """The mean over the test sets with a value (each counts once, whatever its size); NaN where none has."""
        values = [row[metric] for row in self.rows if row["model"] == model and _finite(row[metric])]
        return float(np.mean(values)) if values else float("nan")

    def format_means(self, model: str) -> dict[str, float]:
        """{format: mean over the test sets with truth of its MPJPE vs truth} of ``model``'s output formats."""
        by_format: dict[str, list[float]] = {}
        for row in self.rows:
            if row["model"] == model:
                for skeleton, value in row[BY_FORMAT].items():
                    by_format.setdefault(skeleton, []).append(value)
        return {skeleton: float(np.mean(values)) for skeleton, values in by_format.items()}

    def markdown(self) -> str:
        with_truth = self.scored(ALL_FORMATS)
        others = " (— on the others); its means are over those" if len(with_truth) < len(self.datasets) else ""
        lines = [
            "# Consistency experiment: separate heads against consistency regularisation", "",
            f"Every mode fine-tuned for {counted(self.steps, 'step')} from the initial model (separate heads), with the "
            "pipeline's batch composition, learning rate and autoencoder; `initial`: the initial model itself. "
            "Errors in mm on each test set's test split:", "",
            "- MPJPE, PA-MPJPE: in the test set's own skeleton format (root-relative; Procrustes-aligned).",
            "- consistency: mean distance of every format's predicted joints from the autoencoder's "
            "reconstruction of them (0: the formats agree on one body, as the autoencoder sees bodies).",
            f"- {METRICS[ALL_FORMATS]}: every format the model outputs against the demo world's true joints of that "
            "format (root-relative MPJPE), averaged over the formats; no autoencoder involved: are the skeletons of "
            f"all formats each right, not only consistent? On the {len(with_truth)} of {len(self.datasets)} test "
            f"sets the world regenerates{others}.", "",
            "## Mean over the test sets", "",
            "| model | " + " | ".join(METRICS.values()) + " | training s | crops/s |",
            "|---|" + "---|" * (len(METRICS) + 2),
        ]
        runs = {run["mode"]: run for run in self.runs}
        for model in self.models:
            cells = [_mm(self.mean(model, metric)) for metric in METRICS] + training_time_cells(runs.get(model))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        for metric, title in METRICS.items():
            lines += ["", f"## {title} per test set", "", "| test set | format | examples | " + " | ".join(self.models)
                      + " |", "|---|---|---|" + "---|" * len(self.models)]
            for dataset in self.datasets:
                first = self.find(INITIAL, dataset)
                lines.append(f"| {dataset} | {first['skeleton']} | {first['examples']} | "
                             + " | ".join(_mm(self.find(model, dataset)[metric]) for model in self.models) + " |")
            lines.append("| mean | | | " + " | ".join(_mm(self.mean(model, metric)) for model in self.models) + " |")
        if with_truth:
            means = {model: self.format_means(model) for model in self.models}
            formats = list(dict.fromkeys(skeleton for model in self.models for skeleton in means[model]))
            lines += ["", f"## MPJPE vs truth per output format, mean over the {counted(len(with_truth), 'test set')} "
                          "with truth", "", "| format | " + " | ".join(self.models) + " |",
                      "|---|" + "---|" * len(self.models)]
            lines += [f"| {skeleton} | " + " | ".join(_mm(means[model].get(skeleton)) for model in self.models) + " |"
                      for skeleton in formats]
        return "\n".join(lines) + "\n"

    def plots_png(self) -> dict[str, bytes]:
        """{file name: PNG}: the mean of each metric per model, one panel per metric."""
        columns = 2
        lines = math.ceil(len(METRICS) / columns)
        figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.6 * lines), dpi=100, squeeze=False)
        colours = plt.cm.tab10(np.arange(len(self.models)))
        for panel in axes.flat[len(METRICS):]:
            panel.set_visible(False)
        for panel, (metric, title) in zip(axes.flat, METRICS.items()):
            values = [self.mean(model, metric) for model in self.models]
            panel.bar(range(len(values)), values, color=colours)
            panel.set_xticks(range(len(values)), self.models, rotation=30, fontsize=8)
            panel.set(title=f"{title}, mean over {counted(len(self.scored(metric)), 'test set')}", ylabel="mm")
            panel.title.set_fontsize(9)
            panel.grid(axis="y", alpha=0.3)
            if not self.scored(metric):
                panel.text(0.5, 0.5, "no test set with the world's truth", transform=panel.transAxes, ha="center",
                           fontsize=8)
        figure.suptitle(f"each mode: {counted(self.steps, 'step')} from the initial model", fontsize=9)
        figure.tight_layout()
        return {PLOT_FILE: figure_png(figure)}

    def to_json(self) -> str:
        return json_text({"steps": self.steps, "seconds": self.seconds, "runs": self.runs, "rows": self.rows})

    def write(self, folder) -> list[Location]:
        """``consistency.md``, ``consistency.json`` and the plot in ``folder``, each file written atomically."""
        return write_files(folder, {REPORT_FILE: self.markdown().encode(), DATA_FILE: self.to_json().encode(),
                                    **self.plots_png()})


def score_on_test_sets(model: str, estimator, test_sets: Sequence[EvaluationSet], acae, *,
                       world_seed: int | None = None, truths: dict | None = None,
                       progress: Callable[[str], None] | None = None) -> list[dict]:
    """The rows of ``estimator`` (named ``model``) on each test set (``ConsistencyResult.rows``, module
    docstring). ``world_seed``: the demo world's, for the test sets with a ``world_dataset``; ``truths``:
    {test set name: {format: true joints}}, completed here with the formats the estimator outputs: pass the
    same dict for every model, and each test set's truth is checked and computed once. Each test set is predicted
    once, for both."""
    report = progress or (lambda message: None)
    truths = {} if truths is None else truths
    _check_world_seed(test_sets, world_seed)
    formats = estimator.skeletons()
    rows = []
    for test_set in test_sets:
        predictions = predict_split(estimator, open_store(test_set.store_path), "test")
        result = score(estimator, test_set.store_path, acae=acae, predictions=predictions)
        by_format = {}
        if test_set.world_dataset is not None:
            known = truths.setdefault(test_set.name, {})
            missing = [skeleton for skeleton in formats if skeleton not in known]
            if missing:
                known.update(true_test_poses(test_set, missing, world_seed))
                report(f"truth of {test_set.name}'s {len(known[missing[0]])} test crops in "
                       f"{counted(len(missing), 'format')}")
            # every test crop, with labels or not: the truth has them all
            all_joints, _ = predictions
            by_format = mpjpe_by_format(all_joints, estimator.joint_names,
                                        {skeleton: known[skeleton] for skeleton in formats})
        rows.append({"model": model, "dataset": test_set.name, "skeleton": result["skeleton"],
                     "examples": result["examples"],
                     **{metric: result["metrics"][metric] for metric in METRICS if metric != ALL_FORMATS},
                     ALL_FORMATS: float(np.mean(list(by_format.values()))) if by_format else float("nan"),
                     BY_FORMAT: by_format})
        report(f"{model} on {test_set.name}: MPJPE {rows[-1]['mpjpe_mm']:.1f} mm, consistency "
               f"{rows[-1]['consistency_mm']:.1f} mm, all formats vs truth {_mm(rows[-1][ALL_FORMATS])} mm")
    return rows


def _check_world_seed(test_sets: Sequence[EvaluationSet], world_seed: int | None) -> None:
    with_truth = [test_set.name for test_set in test_sets if test_set.world_dataset is not None]
    if with_truth and world_seed is None:
        raise ValueError(f"world_seed: needed for the truth of test sets {', '.join(with_truth)}")


def run_consistency_experiment(
    runs: Mapping,
    sources: Sequence,
    initial_model,
    acae,
    test_sets: Sequence[EvaluationSet],
    runs_folder,
    *,
    world_seed: int | None = None,
    nproc: int = 1,
    data_fingerprint: str = "",
    progress: Callable[[str], None] | None = None,
) -> ConsistencyResult:
    """Fine-tune ``initial_model`` (an estimator file) in each mode and score it (module docstring).

    ``runs``: {mode: its ``model.training.TrainingConfig``}, all of the same length; ``sources``: the
    batch composition (``model.data.Source``); ``acae``: the frozen autoencoder (``model.acae.ACAE``);
    ``test_sets``: where to score, with the world dataset of their truth or None; ``world_seed``: the demo
    world's (needed where a test set has truth). Each run trains in ``runs_folder/<mode>``, on ``nproc``
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
    if not test_sets:
        raise ValueError("test_sets: no test set to score the models on")
    _check_world_seed(test_sets, world_seed)
    truths: dict[str, dict[str, np.ndarray]] = {}  # each test set's, over the models

    def score_model(model: str, model_path) -> list[dict]:
        return score_on_test_sets(model, PoseEstimator.load(model_path), test_sets, acae, world_seed=world_seed,
                                  truths=truths, progress=report)

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
