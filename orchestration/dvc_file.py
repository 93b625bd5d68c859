"""dvc.yaml, written from the stage table (orchestration/stages.py) so that DVC and dozens agree.

Each stage runs the same Dagster materialisation as the UI and ``dozens demo`` (``dozens materialize``);
its dependencies are the files of the code it runs (the same files its code version hashes), the outputs
of the stages it reads, and the params.yaml keys of its settings. Its outputs are what is published (a
store's versions and pointer, a file and its stamp: assets.versions), cached by DVC; the benchmark's
scores are DVC metrics, and loss and PCK curves DVC plots. Regenerate after changing the table:

    .venv/bin/python -m orchestration.dvc_file          # rewrites dvc.yaml
    .venv/bin/python -m orchestration.dvc_file --check  # exit 1 if dvc.yaml is out of date
"""

import argparse
import sys
from pathlib import Path

import yaml

from assets.locations import is_remote
from assets.versions import stamp_path
from orchestration.config import ConfigError, load_config
from orchestration.stages import (BENCHMARKS, DATASETS, DEMO_WORLD_CODE, DEMO_WORLD_STAGE, MULTIVIEW, STAGES,
                                  code_files, converter_file, generated_datasets, partitions)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DVC_FILE = PROJECT_ROOT / "dvc.yaml"
HEADER = """\
# Written by orchestration/dvc_file.py from the stage table (orchestration/stages.py): do not edit by hand.
# `dvc repro` (make repro) runs the same Dagster materialisations as the UI and `dozens demo`, one stage
# per dataset, and re-runs a stage when its code (the files its code version hashes), its inputs or its
# parameters change. Outputs are cached (`dvc checkout`, `dvc push`/`pull`); each carries its data version
# (a pointer or a stamp), which Dagster records before anything reads what DVC restored.
# Needs the project's `python` on PATH (the Makefile puts .venv/bin first).
"""
# `python -m`: the code in the stage's folder runs (an experiment's temporary copy runs its own)
DOZENS = ("mkdir -p .dagster_home && env DAGSTER_HOME=$PWD/.dagster_home GX_ANALYTICS_ENABLED=false "
          "python -m orchestration.cli")
# how each partitioning is iterated in params.yaml, and the name of the loop variable
_LOOPS = {DATASETS: ("${datasets}", "${key}"), MULTIVIEW: ("${pseudo_gt.datasets}", "${key}"),
          BENCHMARKS: ("${benchmark.datasets}", "${item}")}


def dvc_stages(config) -> dict:
    if is_remote(config.store_root):
        raise ConfigError(f"store.root is {config.store_root}: dvc.yaml tracks artifacts in the project's folder, so "
                          "it is written from a config with a local store.root (Dagster alone runs the pipeline "
                          "on an object store: `dozens demo`)")
    base = config.path.parent

    def relative(path) -> str:
        return Path(path).relative_to(base).as_posix()

    stages = {}
    generated = [name for names in generated_datasets(config) for name in names]
    if generated:
        # the demo world's raw folders are data too: `dvc pull` brings back what the stores were converted from
        stages[DEMO_WORLD_STAGE] = {"cmd": "${DOZENS} generate --force", "deps": list(DEMO_WORLD_CODE),
                                "params": ["demo"], "outs": [relative(config.datasets[n].raw) for n in generated]}
    for name, stage in STAGES.items():
        loop, variable = _LOOPS.get(stage.partitioned_by, (None, None))
        deps = []
        if name == "dataset":
            deps.append("${item.raw}")
        deps += [relative(path) for path in _input_paths(config, name)]
        deps = list(dict.fromkeys(deps))  # in order, once each
        deps += code_files(name) + ([converter_file("${item.converter}")] if name == "dataset" else [])
        tracked = relative((stage.dvc_output or stage.output)(config, variable))
        outs = [{tracked: {"persist": True}} if stage.resumable else tracked]
        if not stage.published and stage.dvc_output is None:
            outs.append(relative(stamp_path(stage.output(config, variable))))  # a model folder holds its stamp
        entry = {"cmd": f"${{DOZENS}} materialize {name}" + (f" --partition {variable}" if variable else ""),
                 "deps": deps}
        if stage.dvc_params:
            entry["params"] = list(stage.dvc_params)
        if stage.dvc_metrics is not None:
            entry["metrics"] = [relative(stage.dvc_metrics(config, variable))]
        if stage.dvc_plot is not None and not _inside(plot := relative(stage.dvc_plot[0](config, variable)), tracked):
            outs.append(plot)
        entry["outs"] = outs
        stages[name] = {"foreach": loop, "do": entry} if loop else entry
    return {"vars": [{"DOZENS": DOZENS}], "stages": stages, "plots": _plots(config, relative)}


def _plots(config, relative) -> list[dict]:
    """Top-level plot definitions: a file, or the folder of a partitioned stage's plot files (one plot each)."""
    plots = []
    for stage in STAGES.values():
        if stage.dvc_plot is None or not partitions(config, stage):
            continue
        where, fields = stage.dvc_plot
        path = where(config, "any") if stage.partitioned_by else where(config, None)
        plots.append({relative(path.parent if stage.partitioned_by else path): dict(fields)})
    return plots


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _input_paths(config, name: str) -> list[Path]:
    """What a stage reads, as DVC paths: an input of the stage's own partition is that partition's output
    where every partition reads the same stage (``${key}``), else the folder of all outputs of that stage."""
    stage = STAGES[name]
    loop_variable = _LOOPS.get(stage.partitioned_by, (None, None))[1]
    concrete = partitions(config, stage) if stage.partitioned_by else [None]
    inputs = [(upstream, q, q is not None and q == p) for p in concrete for upstream, q in stage.inputs(config, p)]
    own_kinds = {upstream for upstream, _, own in inputs if own}
    paths = []
    for upstream, q, own in inputs:
        produced = STAGES[upstream].dvc_output or STAGES[upstream].output
        if own and len(own_kinds) == 1:
            paths.append(produced(config, loop_variable))
        elif q is not None:
            paths.append(produced(config, q).parent)
        else:
            paths.append(produced(config, None))
    return list(dict.fromkeys(paths))


def dvc_yaml_text(config) -> str:
    return HEADER + yaml.safe_dump(dvc_stages(config), sort_keys=False, width=1000)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs from the stage table")
    args = parser.parse_args(argv)
    text = dvc_yaml_text(load_config(PROJECT_ROOT / "params.yaml"))
    if args.check:
        if DVC_FILE.read_text() != text:
            print(f"{DVC_FILE} is out of date: run python -m orchestration.dvc_file", file=sys.stderr)
            return 1
        return 0
    DVC_FILE.write_text(text)
    print(f"wrote {DVC_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
