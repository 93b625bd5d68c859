"""Dagster wiring for benchmarks: one partition per test set, scores appended to the history (the scoring
code, torch and matplotlib are imported inside the asset, as in orchestration/model_assets.py)."""

import hashlib
import json

import dagster as dg

from assets.atomic_files import write_bytes_atomically
from assets.locations import read_bytes
from assets.versions import local_published, stamp
from orchestration.config import PipelineConfig
from orchestration.console import step_progress
from orchestration.metadata import png_markdown
from orchestration.asset_graph import asset_code_version, asset_deps, current_signature, partitions_definition
from orchestration.automation import STALE_CONDITION
from orchestration.stages import output


def file_fingerprint(path) -> str:
    """Digest of a model file's content (wherever it is stored), naming in the history what was scored."""
    return hashlib.sha256(read_bytes(path)).hexdigest()[:16]


def build_benchmark_assets(config: PipelineConfig) -> tuple[dg.PartitionsDefinition | None, list]:
    names = list(config.benchmark.datasets)
    if not names or config.training is None:
        return None, []
    partitions = partitions_definition(config, "benchmark")
    models = {"initial": output(config, "initial_model"), "final": output(config, "final_model")}
    acae_path = output(config, "acae")

    @dg.asset(partitions_def=partitions, deps=asset_deps(config, "benchmark"),
              code_version=asset_code_version(config, "benchmark"), automation_condition=STALE_CONDITION,
              group_name="benchmarks", kinds={"parquet"},
              description="Scores of the final (and initial) model on one test set; appended to the history.")
    def benchmark(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from evaluation.benchmark import (append_history, history_rows, read_history, results_markdown, score,
                                          benchmark_floor)
        from evaluation.plots import bar_plot_png, line_plot_png
        from model.acae import ACAE
        from model.estimator import PoseEstimator

        name = context.partition_key
        version = current_signature(config, context.instance, "benchmark", name)
        store = local_published(config.training_store_path(name), step_progress(context))
        acae = ACAE.load(acae_path)
        results, fingerprints = {}, {}
        for model_name, path in models.items():
            fingerprints[model_name] = file_fingerprint(path)
            results[model_name] = score(PoseEstimator.load(path), store, acae=acae)
            rows = history_rows(results[model_name], model_name, fingerprints[model_name])
            append_history(config.benchmark_history_path, rows)
        # the mean-pose floor: from this test set's training split, else (a test-only set) from a training
        # store of its skeleton format
        floor = benchmark_floor(store, [local_published(config.training_store_path(d))
                                        for d in config.training.batch_3d if d != name])
        final = results["final"]
        latest = output(config, "benchmark", name)
        write_bytes_atomically(latest, json.dumps({"dataset": name, "version": version, "root": final["root"],
                                                   "baseline": floor,
                                                   **{m: r["metrics"] for m, r in results.items()}}, indent=1).encode())
        stamp(latest, version)
        numbers = {"floor": {k: v for k, v in floor.items() if isinstance(v, (int, float))},
                   **{m: r["metrics"] for m, r in results.items()}}
        write_bytes_atomically(config.benchmark_metrics_path(name), json.dumps(numbers, indent=1).encode())
        thresholds = final["pck_curve"][0]
        curves = [{"threshold_mm": float(t), **{m: float(r["pck_curve"][1][i]) for m, r in results.items()}}
                  for i, t in enumerate(thresholds)]
        write_bytes_atomically(config.benchmark_curve_path(name), json.dumps(curves, indent=1).encode())
        thresholds, curve = final["pck_curve"]
        joints = final["per_joint_mm"]
        context.log.info(f"{name}: final MPJPE {final['metrics']['mpjpe_mm']:.1f} mm "
                         f"(initial {results['initial']['metrics']['mpjpe_mm']:.1f}, "
                         f"mean-pose floor {floor.get('mpjpe_mm', float('nan')):.1f}, {floor['frame'] or 'none'}; "
                         f"root {final['root']})")
        return dg.MaterializeResult(
            metadata={
                "results": dg.MetadataValue.md(results_markdown(results, floor)),
                **{f"final_{k}": dg.MetadataValue.float(round(v, 2)) for k, v in final["metrics"].items()},
                "root": dg.MetadataValue.text(final["root"]),
                "floor_frame": dg.MetadataValue.text(floor["frame"] or f"none: {floor.get('unavailable')}"),
                **{f"floor_{k}": dg.MetadataValue.float(round(floor[k], 2))
                   for k in ("mpjpe_mm", "pa_mpjpe_mm", "pck150", "auc") if k in floor},
                "examples": dg.MetadataValue.int(final["examples"]),
                "pck_curve": png_markdown(line_plot_png(
                    {m: r["pck_curve"] for m, r in results.items()}, title=f"PCK on {name}",
                    xlabel="threshold (mm)", ylabel="PCK (%)"), "PCK curve"),
                "per_joint_error": png_markdown(bar_plot_png(
                    list(joints), list(joints.values()), title=f"final model, per-joint error on {name}",
                    ylabel="MPJPE (mm)"), "per-joint error"),
                "history_rows": dg.MetadataValue.int(read_history(config.benchmark_history_path).height),
                "history": dg.MetadataValue.path(str(config.benchmark_history_path)),
                "model_fingerprint": dg.MetadataValue.text(fingerprints["final"]),
            },
            data_version=dg.DataVersion(version))

    return partitions, [benchmark]
