"""The pipeline configuration (params.yaml): datasets, store location, image size.

Which file: ``DOZENS_CONFIG`` if set, else ``params.yaml`` in the working directory (DVC runs stages
there), else the project's own. Paths in the file are relative to the file's folder and may not leave it
(absolute paths may point anywhere). Every key and value is checked: a mistake is a ConfigError naming its key.
"""

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from assets.locations import Location, is_url, location

from assets.converters import CONVERTERS, get_converter
from assets.converters.interface import ConverterOptions, OptionError, known_options, resolve_options
from model.settings import AcaeFitSettings

CONFIG_ENV = "DOZENS_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "params.yaml"

# Copies, checked against the originals by tests/test_config.py: importing those would make reading the config
# load torch (model.estimator.MODES) and the demo-world renderer (assets.synthetic.world.SIZES).
TRAINING_MODES = ("separate", "consistency", "latent", "hybrid")
DEMO_SIZES = ("demo", "tiny")

# Dataset names become file names (stores, benchmark results), Dagster partition keys, shell words in dvc.yaml's
# commands and parts of DVC's dotted parameter paths (`datasets.${key}`), hence no '/', '.' or spaces.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
DATASET_NAME_MAX = 64
DATASET_NAME_RULE = (f"dataset names need 1 to {DATASET_NAME_MAX} letters, digits, '_' or '-', "
                     "starting with a letter or digit")


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
    options: ConverterOptions = ConverterOptions()  # frame_step, cameras and the converter's own options

    @property
    def multiview_2d(self) -> bool:
        return self.pseudo_gt is not None


@dataclass(frozen=True)
class RunSettings:
    steps: int
    learning_rate: float
    mode: str = "separate"
    consistency_examples: int | None = None  # consistency mode: examples per step that compute every joint


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
    nproc: int = 1  # training processes (torch.distributed): one per GPU, or gloo processes sharing the CPU
    request_gpus: bool = False  # on Kubernetes: each training step asks for nproc GPUs (a dagster-k8s op tag)


@dataclass(frozen=True)
class AcaeSettings:
    # params.yaml's acae section names some of the fit's settings (_ACAE_FIT_RULES); the rest keep their defaults
    fit: AcaeFitSettings = AcaeFitSettings()
    pseudo_gt_examples_per_dataset: int = 600  # training crops per 3D dataset the initial model labels for the fit


@dataclass(frozen=True)
class BenchmarkSettings:
    datasets: tuple = ()
    schedule: str = "0 3 * * *"


@dataclass(frozen=True)
class PipelineConfig:
    path: Path
    datasets: dict[str, DatasetConfig]
    store_root: Location  # a local folder or an object-store URL (assets.locations)
    image_size: int
    demo_size: str
    demo_seed: int
    training: TrainingSettings | None = None
    conversion_workers: int = 0  # processes that decode and crop images (0: the converting process itself)
    jobs: int = 1  # Dagster runs at once for the stale partitions of one stage (dozens demo --jobs)
    executor: str = "in_process"  # the Dagster executor of every job (orchestration/definitions.py)
    acae: AcaeSettings = AcaeSettings()
    benchmark: BenchmarkSettings = BenchmarkSettings()

    @property
    def models_root(self) -> Location:
        return self.store_root.parent / "models"

    @property
    def logs_root(self) -> Location:
        """One text file of Dagster's event log per run (the instance keeps them too)."""
        return self.store_root.parent / "logs"

    @property
    def benchmark_history_path(self) -> Location:
        """The append-only benchmark history: a folder of Parquet files, one per benchmark run."""
        return self.store_root.parent / "benchmarks" / "history"

    def benchmark_latest_path(self, name: str) -> Location:
        """The latest scores (and mean-pose baseline) of benchmark ``name``, as JSON."""
        return self.benchmark_history_path.parent / "latest" / f"{name}.json"

    def benchmark_metrics_path(self, name: str) -> Location:
        """The latest scores of benchmark ``name``, numbers only, for ``dvc metrics``."""
        return self.benchmark_history_path.parent / "metrics" / f"{name}.json"

    def benchmark_curve_path(self, name: str) -> Location:
        """The latest PCK curves of benchmark ``name`` (both models), as JSON records for ``dvc plots``."""
        return self.benchmark_history_path.parent / "pck" / f"{name}.json"

    def dataset_store_path(self, name: str) -> Location:
        """The dataset's store location: published versions and their pointer (assets.versions)."""
        return self.store_root / "dataset" / name

    def pseudo_gt_store_path(self, name: str) -> Location:
        return self.store_root / "pseudo_gt" / name

    @property
    def all_skeleton_pseudo_gt_path(self) -> Location:
        return self.store_root / "all_skeleton_pseudo_gt"

    @property
    def multiview_datasets(self) -> list[str]:
        return sorted(name for name, entry in self.datasets.items() if entry.multiview_2d)

    def training_store_path(self, name: str) -> Location:
        """The store training reads: the pseudo-GT store for multi-view 2D datasets."""
        return self.pseudo_gt_store_path(name) if self.datasets[name].multiview_2d else self.dataset_store_path(name)

    @property
    def raw_root(self) -> Path:
        """Common parent of the raw folders (where the demo world is generated)."""
        return Path(os.path.commonpath([d.raw.parent for d in self.datasets.values()]))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys silently; a repeated section would undo the first one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        return _parse(raw, path)
    except _Invalid as exc:
        raise exc.error(path) from None


# Reading: each rule takes a value from the YAML and returns it parsed or raises _Invalid. Sections apply their
# settings' rules and prefix the key path, so a message names the full path however deep the mistake is.

class _Invalid(Exception):
    """A value's problem, with the key path from the value that was checked down to the culprit."""

    def __init__(self, problem: str, key: tuple = ()):
        super().__init__(problem)
        self.problem, self.key = problem, tuple(str(k) for k in key)

    def under(self, name) -> "_Invalid":
        return _Invalid(self.problem, (name, *self.key))

    def error(self, file: Path) -> ConfigError:
        where = f"field '{'.'.join(self.key)}'" if self.key else "the file"
        return ConfigError(f"{file}: {where} {self.problem}")


def _under(name, rule, value):
    try:
        return rule(value)
    except _Invalid as exc:
        raise exc.under(name) from None


def _did_you_mean(word, known) -> str:
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _integer(minimum: int, even: bool = False):
    expected = f"{'an even' if even else 'an'} integer >= {minimum}"

    def check(value) -> int:
        # bool is an int to Python, but `workers: yes` is a mistake, not 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (even and value % 2):
            raise _Invalid(f"must be {expected}, got {value!r}")
        return value
    return check


def _artifact_root(base: Path):
    """A local folder (as ``_path``) or an object-store URL with a prefix under its bucket."""
    local = _path(base)

    def check(value) -> Location:
        text = _text(value)
        if not is_url(text):
            return local(text)
        scheme, _, rest = text.partition("://")
        bucket, _, prefix = rest.strip("/").partition("/")
        if not bucket or not prefix:
            raise _Invalid(f"is {value!r}; an object-store root needs a prefix under its bucket "
                           f"(e.g. {scheme}://{bucket or 'bucket'}/dozens/stores): models and benchmarks go beside it")
        try:
            return location(text)
        except (ImportError, ValueError) as exc:
            raise _Invalid(f"is {value!r}, which fsspec cannot open ({type(exc).__name__}: {exc}); for s3:// "
                           "install s3fs (a dependency of dozens), for other stores their fsspec package") from None
    return check


def _boolean(value) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {value!r}")
    return value


def _number(low: float, high: float = math.inf, low_included: bool = False):
    """Finite numbers above ``low`` (or from it, with ``low_included``) and below ``high``."""
    expected = f"a number {'>=' if low_included else '>'} {low:g}" + (f" and < {high:g}" if high < math.inf else "")

    def check(value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"must be {expected}, got {value!r}{_yaml_float_hint(value)}")
        if not (math.isfinite(value) and (value >= low if low_included else value > low) and value < high):
            raise _Invalid(f"must be {expected}, got {value!r}")
        return float(value)
    return check


def _yaml_float_hint(value) -> str:
    try:
        float(value)
    except (TypeError, ValueError):
        return ""
    # PyYAML follows YAML 1.1, where 1e-3 (no '.') is a string: the commonest way to get text for a number
    return " (YAML reads exponent notation without a '.' as text: write 1.0e-3, not 1e-3)"


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string, got {value!r}")
    return value


def _choice(choices, what: str):
    def check(value) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Invalid(f"is {value!r}{_did_you_mean(value, choices)}; expected one of the known {what}: "
                           f"{', '.join(choices)}")
        return value
    return check


def _optional(rule):
    return lambda value: None if value is None else rule(value)


def _cron(value) -> str:
    # Dagster's own test, so the config accepts exactly what dg.schedule will; imported here as it takes a second
    from dagster._utils.schedules import is_valid_cron_schedule

    if not is_valid_cron_schedule(_text(value)):
        raise _Invalid(f"is {value!r}, not a valid cron schedule: expected five fields "
                       "'minute hour day-of-month month day-of-week', e.g. '0 3 * * *'")
    return value


def _dataset_name(value) -> str:
    if not (isinstance(value, str) and len(value) <= DATASET_NAME_MAX and DATASET_NAME.fullmatch(value)):
        raise _Invalid(f"names dataset {value!r}, which is not usable as a file name: {DATASET_NAME_RULE}")
    return value


def _path(base: Path):
    def check(value) -> Path:
        path = Path(_text(value))
        if path.is_absolute():
            return path
        # normpath, not resolve: a symlinked folder inside the config's folder is fine wherever it points
        resolved = Path(os.path.normpath(base / path))
        # a relative path climbing out is most likely a config copied elsewhere; an absolute one is meant
        if not resolved.is_relative_to(base):
            raise _Invalid(f"is {value!r}, which leads out of the config's folder {base} (to {resolved}); "
                           "relative paths must stay inside it: write an absolute path to use a folder elsewhere")
        return resolved
    return check


def _section(rules: dict, required=()):
    """A mapping whose settings all have a rule in ``rules``; the ``required`` ones must be present."""
    def check(value) -> dict:
        value = {} if value is None else value  # a section left empty (`demo:`)
        if not isinstance(value, dict):
            raise _Invalid(f"must be a mapping of settings, got {value!r}")
        for name in value:
            if name not in rules:
                raise _Invalid(f"is not a known setting{_did_you_mean(name, rules)}; known settings here: "
                               f"{', '.join(sorted(rules))}", (name,))
        for name in required:
            if name not in value:
                raise _Invalid("is missing", (name,))
        return {name: _under(name, rules[name], item) for name, item in value.items()}
    return check


def _settings(cls, rules: dict):
    """A section read into dataclass ``cls``: its fields without a default are required."""
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    section = _section(rules, required)
    return lambda value: cls(**section(value))


def _by_dataset(rule):
    """A mapping from dataset names to values read by ``rule``."""
    def check(value) -> dict:
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise _Invalid(f"must map dataset names to settings, got {value!r}")
        return {_under(name, _dataset_name, name): _under(name, rule, item) for name, item in value.items()}
    return check


def _dataset_entry(read_path):
    """A dataset entry: its converter, its raw folder, and options for the converter (checked against it)."""
    fixed = _section({"converter": _choice(sorted(CONVERTERS), "converters"), "raw": read_path}, ("converter", "raw"))

    def check(value) -> dict:
        if not isinstance(value, dict):
            raise _Invalid(f"must be a mapping with 'converter' and 'raw', got {value!r}")
        entry = fixed({k: v for k, v in value.items() if k in ("converter", "raw")})
        converter = get_converter(entry["converter"])
        given = {k: v for k, v in value.items() if k not in ("converter", "raw")}
        known = known_options(converter)
        for name in given:
            if name not in known:
                raise _Invalid(f"is not a known setting{_did_you_mean(name, ['converter', 'raw', *known])}; known "
                               f"settings here: converter, raw, and the options of converter "
                               f"{entry['converter']!r}: {', '.join(known)}", (name,))
        try:
            entry["options"] = resolve_options(converter, given)
        except OptionError as exc:
            raise _Invalid(exc.problem, (exc.option,)) from None
        return entry
    return check


def _dataset_list(value) -> tuple:
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of dataset names, got {value!r}")
    names = tuple(_dataset_name(name) for name in value)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _Invalid(f"lists {repeated} more than once")
    return names


def _only_configured(names, datasets: dict, key: tuple) -> None:
    unknown = sorted(set(names) - set(datasets))
    if unknown:
        raise _Invalid(f"names {unknown}, which are not under 'datasets' (configured: {', '.join(datasets)})", key)


_PSEUDO_GT_RULES = {"threshold_fraction": _number(0, 1), "min_views": _integer(2)}
_RUN_RULES = {"steps": _integer(1), "learning_rate": _number(0), "mode": _choice(TRAINING_MODES, "training modes"),
              "consistency_examples": _optional(_integer(1))}
_TRAINING_RULES = {
    "batch_3d": _by_dataset(_integer(1)), "batch_2d": _by_dataset(_integer(1)),
    "initial": _settings(RunSettings, _RUN_RULES), "final": _settings(RunSettings, _RUN_RULES),
    "backbone": _text, "image_size": _optional(_integer(1)), "stride": _integer(1), "workers": _integer(0),
    "image_cache_mb": _integer(0), "checkpoint_every": _integer(1), "nproc": _integer(1),
    "request_gpus": _boolean,
}
_ACAE_FIT_RULES = {
    # the fit is chiral: sided latents split evenly into left and right
    "n_latent_sided": _integer(0, even=True), "n_latent_center": _integer(0),
    "sparsity": _number(0, low_included=True), "steps": _integer(1),
}
_ACAE_RULES = {**_ACAE_FIT_RULES, "pseudo_gt_examples_per_dataset": _integer(1)}
_BENCHMARK_RULES = {"datasets": _dataset_list, "schedule": _cron}


def _training(value) -> TrainingSettings | None:
    if not value:  # no training section: the pipeline stops at the stores
        return None
    return TrainingSettings(**{"batch_2d": {}, **_section(_TRAINING_RULES, ("batch_3d", "initial", "final"))(value)})


def _acae(value) -> AcaeSettings:
    """The acae section: the fit's settings and, beside them, how many poses the fit gets per dataset."""
    settings = _section(_ACAE_RULES)(value)
    fit = AcaeFitSettings(**{name: v for name, v in settings.items() if name in _ACAE_FIT_RULES})
    return AcaeSettings(fit, **{name: v for name, v in settings.items() if name not in _ACAE_FIT_RULES})


def _parse(raw, path: Path) -> PipelineConfig:
    read_path = _path(path.parent)
    top = _section({
        "demo": _section({"size": _choice(DEMO_SIZES, "demo sizes"), "seed": _integer(0)}),
        "store": _section({"root": _artifact_root(path.parent), "image_size": _integer(1), "workers": _integer(0)},
                          ("root", "image_size")),
        "pseudo_gt": _section({**_PSEUDO_GT_RULES, "datasets": _by_dataset(_section(_PSEUDO_GT_RULES))}),
        "datasets": _by_dataset(_dataset_entry(read_path)),
        "training": _training,
        "acae": _acae,
        "benchmark": _settings(BenchmarkSettings, _BENCHMARK_RULES),
        "jobs": _integer(1),
        "executor": _text,
    }, ("store", "datasets"))(raw)

    if not top["datasets"]:
        raise _Invalid("lists no dataset", ("datasets",))
    pseudo_gt = top.get("pseudo_gt", {})
    multiview = pseudo_gt.get("datasets", {})
    _only_configured(multiview, top["datasets"], ("pseudo_gt", "datasets"))
    defaults = PseudoGTConfig(**{k: v for k, v in pseudo_gt.items() if k != "datasets"})
    datasets = {name: DatasetConfig(name=name, converter=entry["converter"], raw=entry["raw"],
                                    pseudo_gt=dataclasses.replace(defaults, **multiview[name])
                                    if name in multiview else None, options=entry["options"])
                for name, entry in top["datasets"].items()}
    store, demo = top["store"], top.get("demo", {})
    acae, benchmark = top.get("acae", AcaeSettings()), top.get("benchmark", BenchmarkSettings())
    if acae.fit.n_latent_sided + acae.fit.n_latent_center == 0:
        raise _Invalid("and acae.n_latent_center are both 0: the autoencoder needs at least one latent point",
                       ("acae", "n_latent_sided"))
    _only_configured(benchmark.datasets, datasets, ("benchmark", "datasets"))
    training = top.get("training")
    if training is not None:
        _check_training(training, datasets, store["image_size"])
    return PipelineConfig(
        path=path, datasets=datasets, store_root=store["root"], image_size=store["image_size"],
        demo_size=demo.get("size", "demo"), demo_seed=demo.get("seed", 0),
        conversion_workers=store.get("workers", 0), jobs=top.get("jobs", 1),
        executor=top.get("executor", "in_process"),
        training=training, acae=acae, benchmark=benchmark)


def _check_training(training: TrainingSettings, datasets: dict, store_image_size: int) -> None:
    for part in ("batch_3d", "batch_2d"):
        _only_configured(getattr(training, part), datasets, ("training", part))
    if not training.batch_3d:
        raise _Invalid("lists no dataset with 3D labels", ("training", "batch_3d"))
    # each training process takes an equal part of every dataset's share; failing here, not in the training run
    for part in ("batch_3d", "batch_2d"):
        for name, count in getattr(training, part).items():
            if count % training.nproc:
                raise _Invalid(f"is {count}, not divisible by training.nproc ({training.nproc}): each training "
                               "process takes an equal part of every dataset's share of the batch; use a multiple "
                               f"of {training.nproc}", ("training", part, name))
    # the network needs this (model.network.MetrabsConfig); failing here saves converting every dataset first
    size, size_key = ((training.image_size, "training.image_size") if training.image_size
                      else (store_image_size, "store.image_size"))
    if size % training.stride or size < 2 * training.stride:
        raise _Invalid(f"is {training.stride}, but the network input ({size_key}: {size}) must be a multiple "
                       "of the stride and at least two strides", ("training", "stride"))
