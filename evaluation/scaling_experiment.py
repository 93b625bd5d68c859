"""The data-scaling experiment: does training on more datasets help, also on datasets not trained on?

Models are trained from scratch in ``separate`` mode, as the pipeline's initial model is, on nested
subsets of the pipeline's 3D training datasets (1, 4, 12 and all of them by default, clipped to what the
pipeline has). Every run has the same number of steps and the same number of 3D crops per step, shared
out as evenly as possible among its datasets (``split_crops``: the first datasets of the order get the
remainder); the pipeline's 2D part of the batch is kept as it is in every run, so that only the 3D
datasets change.

The subsets are the prefixes of one order: the pipeline's ``batch_3d`` order with the evaluation dataset
moved to the front (``first_dataset``; by default the first of ``batch_3d``), so every subset holds it.

Scoring: a model trained on one dataset knows only that dataset's skeleton format, and an unseen test set
usually has another, so every test set is scored in ONE format, the evaluation dataset's, which every
model predicts: against the demo world's TRUE joints in that format of each test crop, in its camera frame
(``evaluation.truth_scores``, first checked against the store's own labels). MPJPE (root-relative, the
format's root) and PA-MPJPE, in mm. A test set is "seen" by a model trained on its dataset (on its
training split: test splits are always held out), "unseen" otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from assets.locations import Location, location
from assets.store import open_store
from evaluation.experiment_files import counted, json_text, training_time_cells, write_files
from evaluation.plots import figure_png, plt
from evaluation.truth_scores import EvaluationSet, score_against_truth, true_test_poses
from model.distributed import launch_training
from model.estimator import PoseEstimator

METRICS = {"mpjpe_mm": "MPJPE", "pa_mpjpe_mm": "PA-MPJPE"}
REPORT_FILE, DATA_FILE, PLOT_FILE = "scaling.md", "scaling.json", "scaling_curve.png"


@dataclass(frozen=True)
class ScalingExperimentSettings:
    """``steps``: the length of every run; ``subset_sizes``: numbers of 3D training datasets (None: all);
    ``crops_3d``: 3D crops per step of every run (None: as many as the pipeline's batch has);
    ``first_dataset``: the evaluation dataset, first in every subset (None: the first of the pipeline's)."""

    steps: int
    subset_sizes: tuple[int | None, ...] = (1, 4, 12, None)
    crops_3d: int | None = None
    first_dataset: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "subset_sizes", tuple(self.subset_sizes))
        if self.steps < 1 or not self.subset_sizes or any(n is not None and n < 1 for n in self.subset_sizes):
            raise ValueError(f"need steps >= 1 and subset sizes >= 1 (None: all), got {self.steps} and "
                             f"{self.subset_sizes}")
        if self.crops_3d is not None and self.crops_3d < 1:
            raise ValueError(f"crops_3d must be positive or None, got {self.crops_3d}")

    def sizes(self, available: int) -> list[int]:
        """The subset sizes for ``available`` 3D datasets, each at most that, ascending, without repeats."""
        return sorted({available if n is None else min(n, available) for n in self.subset_sizes})


# The demo: 4 runs as long as its initial model's (600 steps of 41 crops, 37 3D and 4 2D) at ~155 crops/s on
# 2 cores (separate heads compute only their own format's joints): under 3 min a run, with the scores on 20
# test sets about a quarter of an hour
SMALL = ScalingExperimentSettings(steps=600)
TINY = ScalingExperimentSettings(steps=1, subset_sizes=(1, None))  # seconds, for tests: the runs and the report


def split_crops(total: int, count: int, multiple: int = 1) -> list[int]:
    """``total`` crops per step shared among ``count`` datasets as evenly as possible, each share a
    positive multiple of ``multiple`` (training processes take equal parts of every share), the first
    datasets taking the remainder; the shares sum to ``total``."""
    if count < 1 or multiple < 1 or total % multiple or total < count * multiple:
        raise ValueError(f"cannot share {total} crops per step among {count} datasets in positive multiples of "
                         f"{multiple}: need a multiple of {multiple} of at least {count * multiple}")
    base, remainder = divmod(total // multiple, count)
    return [(base + (i < remainder)) * multiple for i in range(count)]


def nested_order(names: Sequence[str], first: str | None = None) -> list[str]:
    """``names`` with ``first`` (default: the first name) moved to the front: the subsets are its prefixes."""
    names = list(names)
    first = names[0] if first is None and names else first
    if first not in names:
        raise ValueError(f"first dataset {first!r} is not a 3D training dataset; they are {', '.join(names)}")
    return [first, *(name for name in names if name != first)]


@dataclass
class ScalingResult:
    """``subsets``: one per run: size, datasets, crops ({dataset: 3D crops per step}), steps, resumed_from
    (= steps: an earlier identical run was reused), seconds, images_per_second, model_path. ``rows``: one per
    (size, test set): size, dataset, seen, examples and the ``METRICS`` (mm, in ``evaluation_format``)."""

    evaluation_format: str
    subsets: list[dict]
    rows: list[dict]
    crops_2d: dict  # the 2D part of every run's batch, {dataset: crops per step}
    settings: ScalingExperimentSettings
    seconds: float

    @property
    def sizes(self) -> list[int]:
        return [subset["size"] for subset in self.subsets]

    @property
    def test_sets(self) -> list[str]:
        return list(dict.fromkeys(row["dataset"] for row in self.rows))

    def find(self, size: int, dataset: str) -> dict:
        return next(row for row in self.rows if (row["size"], row["dataset"]) == (size, dataset))

    def mean(self, size: int, metric: str, seen: bool) -> float:
        """Mean over the seen (or unseen) test sets of the run on ``size`` datasets; NaN where there are none."""
        values = [row[metric] for row in self.rows if row["size"] == size and row["seen"] == seen]
        return float(np.mean(values)) if values else float("nan")

    def markdown(self) -> str:
        crops_3d = sum(self.subsets[0]["crops"].values())
        two_d = ", ".join(f"{name} {count}" for name, count in self.crops_2d.items()) or "none"
        lines = [
            "# Data-scaling experiment: more training datasets, seen and unseen test sets", "",
            f"Every run trains from scratch (separate heads) for {counted(self.settings.steps, 'step')} with {crops_3d} "
            f"3D crops per step, shared among its datasets, and the pipeline's 2D crops ({two_d}). Every test set is "
            f"scored in {self.evaluation_format}, the format of {self.subsets[0]['datasets'][0]} (in every run), "
            "against the demo world's true joints of each test crop. Cells: MPJPE / PA-MPJPE (mm); *(seen)*: the run "
            "trained on that dataset's training split; (n) after a mean: the number of test sets it averages.", "",
            "## Runs", "",
            "| datasets | 3D crops per step | training s | crops/s |", "|---|---|---|---|",
        ]
        for subset in self.subsets:
            shares = ", ".join(f"{name} {count}" for name, count in subset["crops"].items())
            lines.append(f"| {subset['size']} | {shares} | " + " | ".join(training_time_cells(subset)) + " |")
        lines += ["", "## Test sets", "", "| test set | " + " | ".join(counted(n, "dataset") for n in self.sizes) + " |",
                  "|---|" + "---|" * len(self.sizes)]
        for dataset in self.test_sets:
            cells = []
            for size in self.sizes:
                row = self.find(size, dataset)
                cells.append(f"{row['mpjpe_mm']:.1f} / {row['pa_mpjpe_mm']:.1f}" + (" *(seen)*" if row["seen"] else ""))
            lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
        for seen, label in ((True, "mean, seen"), (False, "mean, unseen")):
            cells = [" / ".join(f"{self.mean(size, metric, seen):.1f}" for metric in METRICS)
                     if any(row["seen"] == seen for row in self.rows if row["size"] == size) else "—"
                     for size in self.sizes]
            count = [sum(row["seen"] == seen for row in self.rows if row["size"] == size) for size in self.sizes]
            lines.append(f"| **{label}** | " + " | ".join(f"{cell} ({n})" if n else cell for cell, n in zip(cells, count))
                         + " |")
        return "\n".join(lines) + "\n"

    def plots_png(self) -> dict[str, bytes]:
        """{file name: PNG}: mean error on the seen and the unseen test sets against the number of datasets."""
        figure, axes = plt.subplots(figsize=(6, 3.8), dpi=100)
        for seen, colour in ((True, "tab:blue"), (False, "tab:orange")):
            for (metric, title), style in zip(METRICS.items(), ("o-", "s--")):
                values = [self.mean(size, metric, seen) for size in self.sizes]
                axes.plot(self.sizes, values, style, color=colour, label=f"{title}, {'seen' if seen else 'unseen'}")
        axes.set_xscale("log")
        axes.set_xticks(self.sizes, [str(size) for size in self.sizes])
        axes.minorticks_off()
        axes.set(title=f"mean error in {self.evaluation_format} against the truth, "
                       f"{counted(self.settings.steps, 'step')} a run", xlabel="3D training datasets", ylabel="mm")
        axes.title.set_fontsize(9)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        return {PLOT_FILE: figure_png(figure)}

    def to_json(self) -> str:
        return json_text({"evaluation_format": self.evaluation_format, "settings": asdict(self.settings),
                          "crops_2d": self.crops_2d, "seconds": self.seconds, "subsets": self.subsets,
                          "rows": self.rows})

    def write(self, folder) -> list[Location]:
        """``scaling.md``, ``scaling.json`` and the curve in ``folder``, each file written atomically."""
        return write_files(folder, {REPORT_FILE: self.markdown().encode(), DATA_FILE: self.to_json().encode(),
                                    **self.plots_png()})


def run_scaling_experiment(
    settings: ScalingExperimentSettings,
    config,
    sources: Sequence,
    test_sets: Sequence[EvaluationSet],
    runs_folder,
    *,
    world_seed: int,
    nproc: int = 1,
    data_fingerprint: str = "",
    progress: Callable[[str], None] | None = None,
) -> ScalingResult:
    """Train a model per subset of the 3D datasets and score each on every test set (module docstring).

    ``config``: every run's ``model.training.TrainingConfig`` (separate mode, ``settings.steps`` long);
    ``sources``: the pipeline's batch composition (``model.data.Source``: its 3D datasets in order, and the
    2D part every run keeps); ``world_seed``: the demo world's. Each run trains in
    ``runs_folder/<size>_datasets`` on ``nproc`` processes, resuming a checkpoint there of the same settings,
    sources and ``data_fingerprint`` (the caller's digest of the data): a finished one is reused as it is.
    """
    started = time.perf_counter()
    report = progress or (lambda message: None)
    if config.mode != "separate" or config.steps != settings.steps:
        raise ValueError(f"config: expected a separate-mode run of {settings.steps} steps (settings.steps), got "
                         f"mode {config.mode!r}, {config.steps} steps")
    by_name = {source.name: source for source in sources if source.part == "3d"}
    sources_2d = [source for source in sources if source.part == "2d"]
    order = nested_order(list(by_name), settings.first_dataset)
    crops_3d = settings.crops_3d or sum(source.count_per_batch for source in by_name.values())
    without_truth = [test_set.name for test_set in test_sets if test_set.world_dataset is None]
    if not test_sets or without_truth:
        raise ValueError("test_sets: the models are scored against the demo world's truth, and "
                         + (f"{', '.join(without_truth)} have none" if without_truth else "there is no test set"))
    evaluation_format = open_store(by_name[order[0]].store_path).skeleton.name
    truths = {}
    for test_set in test_sets:
        truths[test_set.name] = true_test_poses(test_set, [evaluation_format], world_seed)[evaluation_format]
        report(f"truth of {test_set.name}'s {len(truths[test_set.name])} test crops in {evaluation_format}")

    subsets, rows = [], []
    sizes = settings.sizes(len(order))
    for number, size in enumerate(sizes, 1):
        crops = dict(zip(order[:size], split_crops(crops_3d, size, nproc)))
        run_sources = [replace(by_name[name], count_per_batch=count) for name, count in crops.items()] + sources_2d
        label = counted(size, "dataset")
        report(f"training on {label} ({number}/{len(sizes)}): {counted(settings.steps, 'step')} of {crops_3d} 3D crops")
        result = launch_training(config, run_sources, location(runs_folder) / f"{size}_datasets", nproc=nproc,
                                 data_fingerprint=data_fingerprint,
                                 progress=lambda message, label=label: report(f"{label}: {message}"))
        subsets.append({"size": size, "datasets": list(crops), "crops": crops, "steps": result.steps,
                        "resumed_from": result.resumed_from, "seconds": result.seconds,
                        "images_per_second": result.images_per_second, "model_path": str(result.model_path)})
        estimator = PoseEstimator.load(result.model_path)
        for test_set in test_sets:
            scores = score_against_truth(estimator, test_set.store_path, truths[test_set.name], evaluation_format)
            rows.append({"size": size, "dataset": test_set.name, "seen": test_set.name in crops, **scores})
            report(f"{label} on {test_set.name} ({'seen' if rows[-1]['seen'] else 'unseen'}): MPJPE "
                   f"{scores['mpjpe_mm']:.1f} mm")
    return ScalingResult(evaluation_format=evaluation_format, subsets=subsets, rows=rows,
                         crops_2d={source.name: source.count_per_batch for source in sources_2d}, settings=settings,
                         seconds=time.perf_counter() - started)
