"""The pipeline's stages, each written once: what it runs, what it reads, its settings, where it writes.

Everything else follows from this table: the runner's order (``pipeline_steps``), the data-version
signatures that decide what is stale (orchestration/freshness.py), the Dagster assets' code versions and
dependencies (orchestration/asset_graph.py), and dvc.yaml (orchestration/dvc_file.py writes it; a test checks it).

    dataset[name]            raw folder -> canonical store (one partition per configured dataset)
    pseudo_gt[name]          a multi-view 2D dataset's store -> triangulated 3D pseudo-GT store
    training_pool            every training store -> one index of the examples
    initial_model            pool -> a model with one head per skeleton format
    all_skeleton_pseudo_gt   initial model + pool -> every format's joints on training crops
    acae                     all-skeleton pseudo-GT -> the affine-combining autoencoder
    final_model              initial model + acae + pool -> the fine-tuned model
    benchmark[name]          both models + acae + a test store -> scores and the history
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestration.code_versions import hash_files, relative_files

DATASETS, MULTIVIEW, BENCHMARKS = "datasets", "multiview", "benchmarks"


@dataclass(frozen=True)
class Stage:
    name: str
    code: tuple[str, ...]  # the modules whose functions the stage calls; their imports are followed
    inputs: Callable  # (config, partition) -> [(stage, partition)] it reads
    settings: Callable  # (config, partition) -> the settings slice its result depends on
    output: Callable  # (config, partition) -> the path it writes
    group: str  # the Dagster asset group (the UI's sections)
    partitioned_by: str | None = None
    needs_training: bool = False  # exists only when the config has a training section
    published: bool = False  # written as versions behind a pointer (assets.versions)
    dvc_params: tuple[str, ...] = ()  # the params.yaml keys of its settings, for dvc.yaml
    # what DVC tracks, when more than the output: a model's folder holds its training checkpoint too
    dvc_output: Callable | None = None
    resumable: bool = False  # a killed run goes on from what it left there (DVC must not delete it)
    # its scores as a metrics file (`dvc metrics show/diff`): (config, partition) -> path
    dvc_metrics: Callable | None = None
    # data DVC draws as plots (`dvc plots show/diff`): (config, partition) -> path, and the plot's fields
    dvc_plot: tuple[Callable, dict] | None = None


def store_input(config, dataset: str) -> tuple[str, str]:
    """The stage whose store training and benchmarks read for ``dataset``."""
    return ("pseudo_gt" if config.datasets[dataset].multiview_2d else "dataset", dataset)


def _training_inputs(config) -> list:
    """The stores training reads (the pool only lists their examples: the content is in the stores)."""
    sources = list(config.training.batch_3d) + list(config.training.batch_2d)
    return [store_input(config, name) for name in sources]


def _network(config) -> dict:
    t = config.training
    return {"backbone": t.backbone, "image_size": t.image_size or config.image_size, "stride": t.stride}


_NETWORK_PARAMS = ("training.backbone", "training.image_size", "training.stride")
_LOSS_PLOT = {"x": "step", "y": "total", "y_label": "training loss (m)"}

STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("dataset", ("assets.converters.common", "assets.quality"), group="datasets",
          inputs=lambda config, p: [],
          settings=lambda config, p: {"converter": config.datasets[p].converter, "image_size": config.image_size,
                                      "options": config.datasets[p].options.as_dict()},
          output=lambda config, p: config.dataset_store_path(p),
          partitioned_by=DATASETS, published=True, dvc_params=("store.image_size", "datasets.${key}")),
    Stage("pseudo_gt", ("assets.pseudo_gt", "assets.quality"), group="pseudo_gt",
          inputs=lambda config, p: [("dataset", p)],
          settings=lambda config, p: config.datasets[p].pseudo_gt,
          output=lambda config, p: config.pseudo_gt_store_path(p),
          partitioned_by=MULTIVIEW, published=True,
          dvc_params=("pseudo_gt.threshold_fraction", "pseudo_gt.min_views", "pseudo_gt.datasets.${key}")),
    Stage("training_pool", ("model.pool",), group="training",
          inputs=lambda config, p: _training_inputs(config),
          settings=lambda config, p: {"batch_3d": config.training.batch_3d, "batch_2d": config.training.batch_2d},
          output=lambda config, p: config.store_root / "training_pool.parquet",
          needs_training=True, dvc_params=("training.batch_3d", "training.batch_2d")),
    Stage("initial_model", ("model.distributed",), group="training",
          inputs=lambda config, p: [("training_pool", None), *_training_inputs(config)],
          settings=lambda config, p: {"run": config.training.initial, "network": _network(config)},
          output=lambda config, p: config.models_root / "initial" / "model.pt",
          needs_training=True, dvc_params=("training.initial", *_NETWORK_PARAMS),
          dvc_output=lambda config, p: config.models_root / "initial", resumable=True,
          dvc_plot=(lambda config, p: config.models_root / "initial" / "history.json", _LOSS_PLOT)),
    Stage("all_skeleton_pseudo_gt", ("model.pseudo_labels", "assets.artifacts"), group="training",
          inputs=lambda config, p: [("initial_model", None), ("training_pool", None), *_training_inputs(config)],
          settings=lambda config, p: config.acae.pseudo_gt_examples_per_dataset,
          output=lambda config, p: config.all_skeleton_pseudo_gt_path,
          needs_training=True, published=True, dvc_params=("acae.pseudo_gt_examples_per_dataset",)),
    Stage("acae", ("model.acae",), group="training",
          inputs=lambda config, p: [("all_skeleton_pseudo_gt", None)],
          settings=lambda config, p: config.acae,
          output=lambda config, p: config.models_root / "acae.pt",
          needs_training=True, dvc_params=("acae",)),
    Stage("final_model", ("model.distributed",), group="training",
          inputs=lambda config, p: [("initial_model", None), ("acae", None), ("training_pool", None),
                                    *_training_inputs(config)],
          settings=lambda config, p: {"run": config.training.final, "network": _network(config)},
          output=lambda config, p: config.models_root / "final" / "model.pt",
          needs_training=True, dvc_params=("training.final", *_NETWORK_PARAMS),
          dvc_output=lambda config, p: config.models_root / "final", resumable=True,
          dvc_plot=(lambda config, p: config.models_root / "final" / "history.json", _LOSS_PLOT)),
    Stage("benchmark", ("evaluation.benchmark",), group="benchmarks",
          inputs=lambda config, p: [("final_model", None), ("initial_model", None), ("acae", None),
                                    store_input(config, p)],
          settings=lambda config, p: None,
          output=lambda config, p: config.benchmark_latest_path(p),
          partitioned_by=BENCHMARKS, needs_training=True,
          dvc_metrics=lambda config, p: config.benchmark_metrics_path(p),
          dvc_plot=(lambda config, p: config.benchmark_curve_path(p),
                    {"x": "threshold_mm", "y": ["initial", "final"], "x_label": "threshold (mm)",
                     "y_label": "PCK (%)"})),
)}


def partitions(config, stage: Stage) -> list:
    if stage.needs_training and config.training is None:
        return []
    return {None: [None], DATASETS: sorted(config.datasets), MULTIVIEW: config.multiview_datasets,
            BENCHMARKS: list(config.benchmark.datasets)}[stage.partitioned_by]


def pipeline_steps(config) -> list[tuple[str, list]]:
    """(stage, partitions) in dependency order, for the stages the config defines."""
    return [(name, parts) for name, stage in STAGES.items() if (parts := partitions(config, stage))]


# the generators `dozens generate` runs to write the demo world's raw folders (dvc.yaml's `demo_world`
# stage). Their own packages only, and the association of people across views and time, which decides
# pose2sim_multi's tracks: the other helpers they import (stores, cameras) do not shape the raw files, and
# an edit there should not regenerate the world (minutes of MediaPipe)
DEMO_WORLD_CODE = ("assets/synthetic", "assets/real", "assets/association.py")
DEMO_WORLD_STAGE = "demo_world"
# the real recordings `dozens generate` builds: converter -> the module whose build() writes its raw folder
REAL_RECORDINGS = {"pose2sim_demo": "assets.real.pose2sim", "pose2sim_multi": "assets.real.pose2sim_multi"}


def generated_datasets(config) -> tuple[list[str], list[str]]:
    """The configured datasets whose raw folders `dozens generate` writes: (synthetic ones, real recordings)."""
    from assets.synthetic.world import READERS

    synthetic = [name for name, entry in config.datasets.items() if READERS.get(entry.raw.name) == entry.converter]
    real = [name for name, entry in config.datasets.items() if entry.converter in REAL_RECORDINGS]
    return synthetic, real


def every_step(config) -> list[tuple[str, str | None]]:
    """(stage, partition) of every step the config defines, in dependency order."""
    return [(name, partition) for name, parts in pipeline_steps(config) for partition in parts]


def upstream_steps(config, name: str, partition: str | None = None) -> list[tuple[str, str | None]]:
    """Every step a step reads, directly or through others, in dependency order."""
    found, todo = set(), list(STAGES[name].inputs(config, partition))
    while todo:
        step = todo.pop()
        if step not in found:
            found.add(step)
            todo += STAGES[step[0]].inputs(config, step[1])
    return [step for step in every_step(config) if step in found]


def converter_file(converter: str) -> str:
    """A converter's module file: named after the converter (dvc.yaml's dataset stage relies on it)."""
    return f"assets/converters/{converter}.py"


def code_files(name: str) -> list[str]:
    """The files of a stage's code (for a conversion: without the partition's converter module, but with
    every module some converter imports besides the shared conversion code, so that DVC, which can name
    only ``assets/converters/${item.converter}.py`` per dataset, depends on the same files)."""
    files = set(relative_files(STAGES[name].code))
    if name == "dataset":
        from assets.converters import CONVERTERS

        for converter in CONVERTERS:
            files |= set(relative_files((f"assets.converters.{converter}",))) - {converter_file(converter)}
    return sorted(files)


def stage_code_version(config, name: str, partition: str | None = None) -> str:
    """Hash of the code a stage (partition) runs: a conversion also runs its dataset's converter."""
    files = code_files(name)
    if name == "dataset" and partition is not None:
        files.append(converter_file(config.datasets[partition].converter))
    return hash_files(files)


def output(config, name: str, partition: str | None = None) -> Path:
    return STAGES[name].output(config, partition)
