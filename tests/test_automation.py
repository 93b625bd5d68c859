"""Dagster's own view of staleness agrees with the runner's: after an edit, the assets the automation
conditions request, tick after tick as a daemon would, are exactly the steps `dozens demo` plans."""

import shutil

import dagster as dg
import yaml

from orchestration.asset_graph import observe_sources
from orchestration.config import load_config
from orchestration.definitions import build_definitions
from orchestration.runner import failure_message, plan_pipeline, run_pipeline
from pipeline_config import DEMO_DATASETS, TINY_ACAE, TINY_TRAINING, write_config


def requested_steps(defs, result) -> set:
    return {(key.to_user_string(), partition) for key in defs.resolve_asset_graph().materializable_asset_keys
            for partition in result.get_requested_partitions(key)}


def run_like_a_daemon(config, instance, cursor, max_ticks=8):
    """Evaluate the automation conditions and materialise what they request, as the daemon would (one run
    per partition key), until they request nothing; returns every (asset, partition) requested."""
    requested = set()
    for _ in range(max_ticks):
        defs = build_definitions(config)
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        tick = requested_steps(defs, result)
        if not tick:
            return requested, cursor
        assert not tick & requested, f"requested twice: {tick & requested}"
        requested |= tick
        for partition in sorted({p for _, p in tick}, key=lambda p: p or ""):
            assets = [dg.AssetKey(a) for a, p in tick if p == partition]
            job = defs.resolve_implicit_job_def_def_for_assets(assets)
            run = job.execute_in_process(asset_selection=assets, partition_key=partition, instance=instance,
                                         raise_on_error=False)
            assert run.success, (assets, partition, failure_message(run))
    raise AssertionError(f"still requesting after {max_ticks} ticks")


def edit_config(path, change):
    settings = yaml.safe_load(path.read_text())
    change(settings)
    path.write_text(yaml.safe_dump(settings))


EDITS = {  # what changes -> the first step it makes stale
    "raw file": ("dataset", "demo_3dhp"),
    "pseudo-GT setting": ("pseudo_gt", "demo_multiview2d"),
    "initial training steps": ("initial_model", None),
}


def make_edit(edit, raw, config_path):
    if edit == "raw file":
        (raw / "demo_3dhp" / "README.txt").write_text("a file added to one raw folder")
    elif edit == "pseudo-GT setting":
        edit_config(config_path, lambda s: s["pseudo_gt"]["datasets"]["demo_multiview2d"].update(threshold_fraction=0.03))
    else:
        edit_config(config_path, lambda s: s["training"]["initial"].update(steps=5))


def test_automation_conditions_request_exactly_what_the_runner_plans(tiny_world, tmp_path):
    raw = tmp_path / "raw"
    for name in DEMO_DATASETS:
        shutil.copytree(tiny_world / name, raw / name)
    path = write_config(tmp_path, raw, list(DEMO_DATASETS), training=TINY_TRAINING,
                        benchmark=["demo_h36m", "demo_smpl"], acae=TINY_ACAE)
    with dg.DagsterInstance.ephemeral() as instance:
        built = run_pipeline(load_config(path), instance, report=lambda _: None)
        assert [o.label for o in built if o.status != "ran"] == [], [o.error for o in built if o.error]
        nothing, cursor = run_like_a_daemon(load_config(path), instance, None)
        assert nothing == set(), "a built pipeline is stale for the automation conditions"

        for edit, first_stale in EDITS.items():  # one after another, as a deployment's daemon sees them
            make_edit(edit, raw, path)
            config = load_config(path)
            observe_sources(config, instance)  # what the runner and the deployment's sensor do first
            planned = plan_pipeline(config, instance)
            requested, cursor = run_like_a_daemon(config, instance, cursor)

            assert requested == set(planned), edit
            assert plan_pipeline(config, instance) == [], edit  # and the runner finds nothing left to do
            assert planned[0] == first_stale, edit
            if edit == "raw file":  # demo_3dhp is neither trained on nor benchmarked here
                assert planned == [("dataset", "demo_3dhp")]
            else:
                assert ("benchmark", "demo_smpl") in planned and ("dataset", "demo_multiview2d") not in planned
