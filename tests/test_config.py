"""params.yaml parsing: every mistake is a ConfigError naming the key path, and valid configs still load."""

import math
from pathlib import Path

import pytest
import yaml

from orchestration.config import DEMO_SIZES, TRAINING_MODES, ConfigError, load_config
from pipeline_config import TINY_ACAE, TINY_TRAINING, write_config

PROJECT = Path(__file__).resolve().parent.parent
DELETE = object()


def _valid() -> dict:
    """A config using every section, with paths relative to its file."""
    return {
        "demo": {"size": "tiny", "seed": 0},
        "store": {"root": "data/stores", "image_size": 64},
        "pseudo_gt": {"threshold_fraction": 0.02, "min_views": 2, "datasets": {"demo_multiview2d": {"min_views": 3}}},
        "datasets": {name: {"converter": name, "raw": f"data/raw/{name}"}
                     for name in ("demo_h36m", "demo_multiview2d", "demo_lsp2d")},
        "training": {"batch_3d": {"demo_h36m": 2, "demo_multiview2d": 2}, "batch_2d": {"demo_lsp2d": 2},
                     "backbone": "small_cnn", "image_size": 64, "stride": 16, "workers": 0, "image_cache_mb": 0,
                     "checkpoint_every": 2, "initial": {"steps": 4, "learning_rate": 0.002},
                     "final": {"steps": 2, "learning_rate": 0.001, "mode": "consistency"}},
        "acae": {"n_latent_sided": 4, "n_latent_center": 2, "sparsity": 0.6, "steps": 30,
                 "pseudo_gt_examples_per_dataset": 8},
        "benchmark": {"datasets": ["demo_h36m"], "schedule": "0 3 * * *"},
    }


def _with(key: str, value) -> dict:
    """The valid config with the dotted ``key`` set to ``value`` (or removed, with DELETE)."""
    config = _valid()
    *parents, last = key.split(".")
    section = config
    for name in parents:
        section = section.setdefault(name, {})
    if value is DELETE:
        del section[last]
    else:
        section[last] = value
    return config


def _write(folder: Path, config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(config) if not isinstance(config, str) else config)
    return path


def _error(folder: Path, config) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(folder, config))
    return str(caught.value)


def test_project_params_yaml_loads():
    config = load_config(PROJECT / "params.yaml")
    assert config.store_root == PROJECT / "data" / "stores"
    assert config.datasets["pose2sim_demo"].pseudo_gt.min_views == 3
    assert config.datasets["demo_multiview2d"].pseudo_gt.threshold_fraction == 0.02
    assert config.training.final.mode == "consistency" and config.training.initial.mode == "separate"
    assert config.benchmark.schedule == "0 3 * * *"


def test_test_helper_configs_load(tmp_path):
    config = load_config(write_config(tmp_path, tmp_path / "raw", training=TINY_TRAINING, acae=TINY_ACAE,
                                      benchmark=["demo_h36m", "demo_smpl"]))
    assert config.training.batch_2d == {"demo_lsp2d": 2}
    assert config.acae.fit.n_latent_center == 2
    assert config.benchmark.datasets == ("demo_h36m", "demo_smpl")


def test_valid_config_reads_paths_from_its_folder(tmp_path):
    folder = tmp_path / "project"
    config = load_config(_write(folder, _valid()))
    assert config.store_root == folder / "data" / "stores"
    assert config.datasets["demo_h36m"].raw == folder / "data" / "raw" / "demo_h36m"
    assert config.datasets["demo_h36m"].pseudo_gt is None
    assert config.datasets["demo_multiview2d"].pseudo_gt.min_views == 3  # the dataset's own setting wins
    assert config.training.batch_2d == {"demo_lsp2d": 2} and config.training.initial.mode == "separate"


def test_sections_may_be_left_out_or_empty(tmp_path):
    config = _valid()
    for section in ("demo", "pseudo_gt", "training", "acae", "benchmark"):
        del config[section]
    config["datasets"]["demo_h36m"] = {"converter": "demo_h36m", "raw": "raw"}
    loaded = load_config(_write(tmp_path, {**config, "demo": None, "acae": {}}))
    assert loaded.training is None and loaded.demo_size == "demo" and loaded.demo_seed == 0
    assert loaded.acae.fit.n_latent_sided == 40 and loaded.benchmark.datasets == ()
    assert all(entry.pseudo_gt is None for entry in loaded.datasets.values())


def test_absolute_and_inner_dotted_paths_are_allowed(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "stores"
    config = _with("store.root", str(elsewhere))
    config["datasets"]["demo_h36m"]["raw"] = "data/../data/raw/h36m"  # climbs, but stays inside
    loaded = load_config(_write(tmp_path / "project", config))
    assert loaded.store_root == elsewhere
    assert loaded.datasets["demo_h36m"].raw == tmp_path / "project" / "data" / "raw" / "h36m"


@pytest.mark.parametrize("key, suggestion", [
    ("trainig", "training"),
    ("demo.sise", "size"),
    ("store.imagesize", "image_size"),
    ("pseudo_gt.min_view", "min_views"),
    ("pseudo_gt.datasets.demo_multiview2d.threshold", "threshold_fraction"),
    ("datasets.demo_h36m.conveter", "converter"),
    ("training.workres", "workers"),
    ("training.initial.stesp", "steps"),
    ("training.final.mod", "mode"),
    ("acae.sparsty", "sparsity"),
    ("benchmark.schedul", "schedule"),
])
def test_unknown_keys_are_named_with_a_suggestion(tmp_path, key, suggestion):
    message = _error(tmp_path, _with(key, 1))
    assert f"field '{key}' is not a known setting" in message
    assert f"did you mean '{suggestion}'?" in message
    assert suggestion in message.split("known settings here:")[1]


def test_unknown_key_without_a_close_match_lists_the_known_ones(tmp_path):
    message = _error(tmp_path, _with("zzz", 1))
    assert "field 'zzz'" in message and "did you mean" not in message
    assert "known settings here: acae, benchmark, datasets, demo, executor, jobs, pseudo_gt, store, training" in message


@pytest.mark.parametrize("key, value, expected", [
    ("store.image_size", "64", "an integer >= 1"),  # a string where an int is expected
    ("store.image_size", 64.0, "an integer >= 1"),
    ("training.workers", True, "an integer >= 0"),  # bool is not an int
    ("training.stride", None, "an integer >= 1"),
    ("training.initial.learning_rate", "fast", "a number > 0"),
    ("training.backbone", 3, "a non-empty string"),
    ("store.root", 5, "a non-empty string"),
    ("datasets.demo_h36m.raw", "", "a non-empty string"),
    ("datasets.demo_h36m.converter", 3, "known converters"),
    ("benchmark.datasets", "demo_h36m", "a list of dataset names"),
    ("training.batch_3d", ["demo_h36m"], "must map dataset names"),
    ("demo", ["tiny"], "a mapping of settings"),
])
def test_wrong_types_name_key_value_and_expectation(tmp_path, key, value, expected):
    message = _error(tmp_path, _with(key, value))
    assert f"field '{key}'" in message
    assert expected in message and repr(value) in message


def test_yaml_exponent_without_dot_gets_a_hint(tmp_path):
    config = _valid()
    text = yaml.safe_dump(config).replace("learning_rate: 0.001", "learning_rate: 1e-3")
    message = _error(tmp_path, text)
    assert "field 'training.final.learning_rate' must be a number > 0, got '1e-3'" in message
    assert "write 1.0e-3" in message


@pytest.mark.parametrize("key, value, expected", [
    ("store.image_size", 0, "an integer >= 1"),  # was a ZeroDivisionError deep in the conversion
    ("store.image_size", -128, "an integer >= 1"),
    ("training.image_size", 0, "an integer >= 1"),
    ("training.stride", 0, "an integer >= 1"),
    ("training.checkpoint_every", 0, "an integer >= 1"),
    ("training.workers", -1, "an integer >= 0"),
    ("training.image_cache_mb", -1, "an integer >= 0"),
    ("training.initial.steps", 0, "an integer >= 1"),
    ("training.batch_3d.demo_h36m", 0, "an integer >= 1"),
    ("training.batch_2d.demo_lsp2d", -2, "an integer >= 1"),
    ("training.initial.learning_rate", 0, "a number > 0"),
    ("training.final.learning_rate", -0.1, "a number > 0"),
    ("training.final.learning_rate", math.inf, "a number > 0"),
    ("training.final.learning_rate", math.nan, "a number > 0"),
    ("pseudo_gt.threshold_fraction", 0, "a number > 0 and < 1"),
    ("pseudo_gt.threshold_fraction", 1, "a number > 0 and < 1"),
    ("pseudo_gt.datasets.demo_multiview2d.threshold_fraction", 1.5, "a number > 0 and < 1"),
    ("pseudo_gt.min_views", 1, "an integer >= 2"),
    ("pseudo_gt.datasets.demo_multiview2d.min_views", 0, "an integer >= 2"),
    ("acae.sparsity", -0.1, "a number >= 0"),
    ("acae.steps", 0, "an integer >= 1"),
    ("acae.n_latent_sided", 3, "an even integer >= 0"),
    ("acae.n_latent_center", -1, "an integer >= 0"),
    ("acae.pseudo_gt_examples_per_dataset", 0, "an integer >= 1"),
    ("demo.seed", -1, "an integer >= 0"),
])
def test_out_of_range_values_name_key_value_and_expectation(tmp_path, key, value, expected):
    message = _error(tmp_path, _with(key, value))
    assert f"field '{key}' must be {expected}, got {value!r}" in message


@pytest.mark.parametrize("key, value, fragment", [
    ("training.final.mode", "consistensy", "(did you mean 'consistency'?)"),
    ("training.initial.mode", "fancy", "known training modes: separate, consistency, latent, hybrid"),
    ("demo.size", "huge", "known demo sizes: demo, tiny"),
])
def test_unknown_choices_list_the_known_ones(tmp_path, key, value, fragment):
    message = _error(tmp_path, _with(key, value))
    assert f"field '{key}' is {value!r}" in message and fragment in message


@pytest.mark.parametrize("schedule", ["61 3 * * *", "0 3 * *", "daily", ""])
def test_bad_schedule(tmp_path, schedule):
    message = _error(tmp_path, _with("benchmark.schedule", schedule))
    assert "field 'benchmark.schedule'" in message
    assert "cron schedule" in message or "non-empty string" in message


def test_other_cron_forms_are_accepted(tmp_path):
    config = load_config(_write(tmp_path, _with("benchmark.schedule", "*/15 6-18 * * MON-FRI")))
    assert config.benchmark.schedule == "*/15 6-18 * * MON-FRI"


@pytest.mark.parametrize("name", ["../../escaped", "../../../../escaped", "a/b", ".hidden", "a.b", "has space",
                                  "-x", "x" * 65, "", 123])
def test_unsafe_dataset_names(tmp_path, name):
    config = _valid()
    config["datasets"][name] = {"converter": "demo_h36m", "raw": "data/raw/x"}
    message = _error(tmp_path, config)
    assert f"field 'datasets.{name}' names dataset {name!r}" in message
    assert "letters, digits, '_' or '-'" in message


def test_longest_dataset_name_is_accepted(tmp_path):
    config = _valid()
    config["datasets"]["x" * 64] = {"converter": "demo_h36m", "raw": "data/raw/x"}
    assert "x" * 64 in load_config(_write(tmp_path, config)).datasets


@pytest.mark.parametrize("key", ["training.batch_3d", "pseudo_gt.datasets"])
def test_unsafe_names_elsewhere(tmp_path, key):
    message = _error(tmp_path, _with(f"{key}", {"../escaped": 2 if "batch" in key else {}}))
    assert f"field '{key}.../escaped' names dataset '../escaped'" in message


def test_unsafe_name_in_benchmark_list(tmp_path):
    message = _error(tmp_path, _with("benchmark.datasets", ["demo_h36m", "a/b"]))
    assert "field 'benchmark.datasets' names dataset 'a/b'" in message


@pytest.mark.parametrize("key, value", [
    ("store.root", "../stores"),
    ("store.root", "data/../../stores"),
    ("datasets.demo_h36m.raw", "../../../../raw"),
])
def test_relative_paths_may_not_leave_the_config_folder(tmp_path, key, value):
    message = _error(tmp_path / "project", _with(key, value))
    assert f"field '{key}' is {value!r}, which leads out of the config's folder" in message
    assert "absolute path" in message


@pytest.mark.parametrize("key, value, field, fragment", [
    ("training.batch_3d.demo_3dhp", 2, "training.batch_3d", "names ['demo_3dhp'], which are not under 'datasets'"),
    ("training.batch_2d.nope", 2, "training.batch_2d", "names ['nope'], which are not under 'datasets'"),
    ("pseudo_gt.datasets.nope", {}, "pseudo_gt.datasets", "names ['nope'], which are not under 'datasets'"),
    ("benchmark.datasets", ["nope"], "benchmark.datasets", "names ['nope'], which are not under 'datasets'"),
    ("benchmark.datasets", ["demo_h36m", "demo_h36m"], "benchmark.datasets", "lists ['demo_h36m'] more than once"),
])
def test_dataset_references_must_be_configured(tmp_path, key, value, field, fragment):
    assert f"field '{field}' {fragment}" in _error(tmp_path, _with(key, value))


@pytest.mark.parametrize("key, missing", [
    ("store", "store"),
    ("datasets", "datasets"),
    ("store.root", "store.root"),
    ("store.image_size", "store.image_size"),
    ("datasets.demo_h36m.raw", "datasets.demo_h36m.raw"),
    ("training.batch_3d", "training.batch_3d"),
    ("training.initial", "training.initial"),
    ("training.final.learning_rate", "training.final.learning_rate"),
])
def test_missing_required_settings(tmp_path, key, missing):
    assert f"field '{missing}' is missing" in _error(tmp_path, _with(key, DELETE))


def test_cross_setting_rules(tmp_path):
    assert "field 'datasets' lists no dataset" in _error(tmp_path, {**_valid(), "datasets": {}})
    no_3d = _with("training.batch_3d", {})
    assert "field 'training.batch_3d' lists no dataset with 3D labels" in _error(tmp_path, no_3d)
    message = _error(tmp_path, _with("training.image_size", 40))
    assert "field 'training.stride' is 16" in message and "training.image_size: 40" in message
    small_store = _with("store.image_size", 16)
    small_store["training"]["image_size"] = None  # the network input is then the stores' crop size
    message = _error(tmp_path, small_store)
    assert "field 'training.stride' is 16" in message and "store.image_size: 16" in message
    both_zero = _with("acae.n_latent_sided", 0)
    both_zero["acae"]["n_latent_center"] = 0
    assert "field 'acae.n_latent_sided' and acae.n_latent_center are both 0" in _error(tmp_path, both_zero)


def test_whole_file_must_be_a_mapping(tmp_path):
    assert "the file must be a mapping of settings" in _error(tmp_path, "- store\n- datasets\n")
    assert "field 'store' is missing" in _error(tmp_path, "")


def test_mirrored_names_match_their_sources():
    from assets.synthetic.world import SIZES
    from model.estimator import MODES

    assert TRAINING_MODES == MODES and DEMO_SIZES == SIZES


def test_a_repeated_key_is_an_error_not_a_silent_override(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("store: {root: s, image_size: 64}\ndatasets:\n  a: {converter: demo_h36m, raw: r}\n"
                    "training: {batch_3d: {a: 2}}\ntraining: {batch_3d: {a: 4}}\n")
    with pytest.raises(ConfigError, match=r"key 'training' appears twice in one mapping \(line 5\)"):
        load_config(path)
