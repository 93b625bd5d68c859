"""The pipeline configuration (params.yaml): datasets, store location, image size.

Which file: ``DOZENS_CONFIG`` if set, else ``params.yaml`` in the working directory (DVC runs stages
there), else the project's own. Paths in the file are relative to the file's folder.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from assets.converters import CONVERTERS

CONFIG_ENV = "DOZENS_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "params.yaml"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PseudoGTConfig:
    threshold_fraction: float = 0.02
    min_views: int = 2


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    converter: str
    raw: Path
    pseudo_gt: PseudoGTConfig | None = None  # set for multi-view 2D datasets, which get triangulated

    @property
    def multiview_2d(self) -> bool:
        return self.pseudo_gt is not None


@dataclass(frozen=True)
class RunSettings:
    steps: int
    learning_rate: float
    mode: str = "separate"


@dataclass(frozen=True)
class TrainingSettings:
    batch_3d: dict
    batch_2d: dict
    initial: RunSettings
    final: RunSettings
    backbone: str = "small_cnn"
    image_size: int | None = None  # network input side; None: the stores' crop size
    stride: int = 16
    workers: int = 2
    image_cache_mb: int = 512  # decoded crops kept in memory per loader process
    checkpoint_every: int = 100


@dataclass(frozen=True)
class AcaeSettings:
    n_latent_sided: int = 40
    n_latent_center: int = 8
    sparsity: float = 0.6
    steps: int = 3000
    pseudo_gt_examples_per_dataset: int = 600


@dataclass(frozen=True)
class BenchmarkSettings:
    datasets: tuple = ()
    schedule: str = "0 3 * * *"


@dataclass(frozen=True)
class PipelineConfig:
    path: Path
    datasets: dict[str, DatasetConfig]
    store_root: Path
    image_size: int
    demo_size: str
    demo_seed: int
    training: TrainingSettings | None = None
    acae: AcaeSettings = AcaeSettings()
    benchmark: BenchmarkSettings = BenchmarkSettings()

    @property
    def models_root(self) -> Path:
        return self.store_root.parent / "models"

    @property
    def benchmark_history_path(self) -> Path:
        return self.store_root.parent / "benchmarks" / "history.parquet"

    def benchmark_latest_path(self, name: str) -> Path:
        """The latest scores (and mean-pose baseline) of benchmark ``name``, as JSON."""
        return self.benchmark_history_path.parent / "latest" / f"{name}.json"

    def dataset_store_path(self, name: str) -> Path:
        return self.store_root / "dataset" / f"{name}.zarr"

    def pseudo_gt_store_path(self, name: str) -> Path:
        return self.store_root / "pseudo_gt" / f"{name}.zarr"

    @property
    def multiview_datasets(self) -> list[str]:
        return sorted(name for name, entry in self.datasets.items() if entry.multiview_2d)

    def training_store_path(self, name: str) -> Path:
        """The store training reads: the pseudo-GT store for multi-view 2D datasets."""
        return self.pseudo_gt_store_path(name) if self.datasets[name].multiview_2d else self.dataset_store_path(name)

    @property
    def raw_root(self) -> Path:
        """Common parent of the raw folders (where the demo world is generated)."""
        return Path(os.path.commonpath([d.raw.parent for d in self.datasets.values()]))


def _field(mapping: dict, key: str, path: Path, where: str, kind=None):
    if not isinstance(mapping, dict) or key not in mapping:
        raise ConfigError(f"{path}: field '{where}{key}' is missing")
    value = mapping[key]
    if kind is not None and not isinstance(value, kind):
        raise ConfigError(f"{path}: field '{where}{key}' must be {kind.__name__}, got {value!r}")
    return value


def default_config_path() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path.cwd() / "params.yaml"
    return local if local.is_file() else DEFAULT_CONFIG


def load_config(path: os.PathLike | str | None = None) -> PipelineConfig:
    path = Path(path or default_config_path()).resolve()
    if not path.is_file():
        raise ConfigError(f"pipeline config {path} does not exist (set {CONFIG_ENV} or create params.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    base = path.parent
    pseudo_gt = raw.get("pseudo_gt") or {}
    multiview = pseudo_gt.get("datasets") or {}
    if not isinstance(multiview, dict):
        raise ConfigError(f"{path}: field 'pseudo_gt.datasets' must map dataset names to settings, got {multiview!r}")
    defaults = {"threshold_fraction": float(pseudo_gt.get("threshold_fraction", 0.02)),
                "min_views": int(pseudo_gt.get("min_views", 2))}
    datasets = {}
    for name, entry in _field(raw, "datasets", path, "", dict).items():
        converter = _field(entry, "converter", path, f"datasets.{name}.", str)
        if converter not in CONVERTERS:
            raise ConfigError(f"{path}: field 'datasets.{name}.converter' is {converter!r}; "
                              f"known converters: {', '.join(sorted(CONVERTERS))}")
        datasets[name] = DatasetConfig(
            name=name, converter=converter, raw=(base / _field(entry, "raw", path, f"datasets.{name}.", str)),
            pseudo_gt=_pseudo_gt_settings(multiview[name], defaults, path, name) if name in multiview else None)
    if not datasets:
        raise ConfigError(f"{path}: field 'datasets' lists no dataset")
    unknown = sorted(set(multiview) - set(datasets))
    if unknown:
        raise ConfigError(f"{path}: field 'pseudo_gt.datasets' names {unknown}, which are not under 'datasets'")
    store = _field(raw, "store", path, "", dict)
    demo = raw.get("demo", {}) or {}
    return PipelineConfig(
        path=path, datasets=datasets, store_root=base / _field(store, "root", path, "store.", str),
        image_size=int(_field(store, "image_size", path, "store.", int)),
        demo_size=str(demo.get("size", "demo")), demo_seed=int(demo.get("seed", 0)),
        training=_training_settings(raw.get("training"), datasets, path),
        acae=_settings(AcaeSettings, raw.get("acae"), path, "acae"),
        benchmark=_benchmark_settings(raw.get("benchmark"), datasets, path))


def _benchmark_settings(entry, datasets: dict, path: Path) -> BenchmarkSettings:
    settings = _settings(BenchmarkSettings, entry, path, "benchmark")
    unknown = sorted(set(settings.datasets) - set(datasets))
    if unknown:
        raise ConfigError(f"{path}: field 'benchmark.datasets' names {unknown}, which are not under 'datasets'")
    return BenchmarkSettings(datasets=tuple(settings.datasets), schedule=settings.schedule)


def _settings(cls, entry, path: Path, where: str):
    entry = entry or {}
    known = set(cls.__dataclass_fields__)
    if not isinstance(entry, dict) or set(entry) - known:
        extra = sorted(set(entry) - known) if isinstance(entry, dict) else entry
        raise ConfigError(f"{path}: field '{where}' has unknown settings {extra}; known: {sorted(known)}")
    try:
        return cls(**entry)
    except TypeError as exc:
        raise ConfigError(f"{path}: field '{where}': {exc}") from None


def _training_settings(entry, datasets: dict, path: Path) -> TrainingSettings | None:
    if not entry:
        return None
    batches = {}
    for part in ("batch_3d", "batch_2d"):
        counts = entry.get(part) or {}
        if not isinstance(counts, dict) or not all(isinstance(v, int) and v > 0 for v in counts.values()):
            raise ConfigError(f"{path}: field 'training.{part}' must map dataset names to positive counts")
        unknown = sorted(set(counts) - set(datasets))
        if unknown:
            raise ConfigError(f"{path}: field 'training.{part}' names {unknown}, which are not under 'datasets'")
        batches[part] = dict(counts)
    if not batches["batch_3d"]:
        raise ConfigError(f"{path}: field 'training.batch_3d' lists no dataset with 3D labels")
    rest = {k: v for k, v in entry.items() if k not in ("batch_3d", "batch_2d", "initial", "final")}
    return _settings(TrainingSettings, {
        **rest, **batches,
        "initial": _settings(RunSettings, entry.get("initial"), path, "training.initial"),
        "final": _settings(RunSettings, entry.get("final"), path, "training.final"),
    }, path, "training")


def _pseudo_gt_settings(entry, defaults: dict, path: Path, name: str) -> PseudoGTConfig:
    entry = entry or {}
    unknown = sorted(set(entry) - set(defaults)) if isinstance(entry, dict) else None
    if unknown is None or unknown:
        raise ConfigError(f"{path}: field 'pseudo_gt.datasets.{name}' may set {sorted(defaults)}, got {entry!r}")
    return PseudoGTConfig(**{**defaults, **entry})
