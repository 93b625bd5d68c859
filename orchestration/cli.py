"""`dozens` command line: generate the demo world, run the pipeline through Dagster, print results."""

import argparse
import os
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _dagster_instance():
    import dagster as dg

    # An absolute DAGSTER_HOME makes CLI runs visible in `dagster dev` (same instance, same history)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()  # an empty file silences Dagster's "no instance config" warning
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def generate(config, force: bool = False) -> None:
    """Write the raw folders of the configured demo datasets that are missing (all with ``force``)."""
    from assets.synthetic import DATASETS as SYNTHETIC

    def wanted(names):
        return [n for n in names if force or not config.datasets[n].raw.exists()]

    synthetic = wanted([n for n, e in config.datasets.items() if e.converter in SYNTHETIC])
    real = wanted([n for n, e in config.datasets.items() if e.converter == "pose2sim_demo"])
    if not synthetic and not real:
        print("demo data: all raw folders exist, nothing to generate")
    if synthetic:
        from assets.synthetic import generate_world

        started = time.perf_counter()
        print(f"demo world: generating {', '.join(synthetic)} (size={config.demo_size}, seed={config.demo_seed})")
        for name in synthetic:
            raw, converter = config.datasets[name].raw, config.datasets[name].converter
            if raw.name != converter:
                raise SystemExit(f"{config.path}: dataset {name!r}: the demo world writes {converter!r} to a folder "
                                 f"named {converter!r}, but 'raw' is {raw}")
            generate_world(raw.parent, size=config.demo_size, seed=config.demo_seed, datasets=[converter])
        print(f"demo world: done in {time.perf_counter() - started:.1f} s")
    for name in real:
        from assets.real.pose2sim import build

        started = time.perf_counter()
        print(f"{name}: acquiring the Pose2Sim demo videos and running BlazePose (cached under data/cache)")
        build(config.datasets[name].raw, force=force)
        print(f"{name}: done in {time.perf_counter() - started:.1f} s")


def run_partitions(config, job_name: str, names: list[str]) -> list[dict]:
    """Run a partitioned job once per partition through Dagster; one summary row per partition."""
    from orchestration.definitions import build_definitions

    unknown = sorted(set(names) - set(config.datasets))
    if unknown:
        raise SystemExit(f"unknown datasets {unknown}; configured in {config.path}: {sorted(config.datasets)}")
    defs = build_definitions(config)
    job = defs.resolve_job_def(job_name)
    instance = _dagster_instance()
    rows = []
    for name in names:
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=name, instance=instance, raise_on_error=False)
        seconds = time.perf_counter() - started
        evaluations = result.get_asset_check_evaluations()
        failed = [ev.check_name for ev in evaluations if not ev.passed]
        rows.append({"dataset": name, "ok": result.success and not failed, "seconds": seconds,
                     "checks": f"{len(evaluations) - len(failed)}/{len(evaluations)} passed",
                     "failed": failed, "error": None if result.success else _first_error(result)})
    return rows


def run_models(config) -> bool:
    """The unpartitioned training stages, in one Dagster run; prints what each produced."""
    from orchestration.definitions import build_definitions

    started = time.perf_counter()
    job = build_definitions(config).resolve_job_def("train_models")
    result = job.execute_in_process(instance=_dagster_instance(), raise_on_error=False)
    print(f"\ntraining stages ({time.perf_counter() - started:.0f} s)")
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        shown = {k: v.value for k, v in materialization.metadata.items()
                 if k in ("examples", "steps", "final_loss", "images_per_second", "device", "train_seconds", "poses",
                          "held_out_error_3d_mm", "held_out_error_projected_mm")}
        print(f"  {materialization.asset_key.to_user_string():<24} {shown}")
    if not result.success:
        print(f"  FAILED: {_first_error(result)}")
    return result.success


def run_benchmarks(config) -> list[dict]:
    """Score the models on every test set through Dagster; print the final benchmark table."""
    import polars as pl

    rows = run_partitions(config, "benchmark_models", list(config.benchmark.datasets))
    history = pl.read_parquet(config.benchmark_history_path)
    latest = history.group_by(["model", "dataset", "metric"]).agg(pl.col("value").last())
    wanted = ["mpjpe_mm", "pa_mpjpe_mm", "absolute_mpjpe_mm", "pck150", "auc", "cps200", "consistency_mm"]
    table = latest.filter(pl.col("metric").is_in(wanted)).pivot("metric", index=["dataset", "model"], values="value")
    print("\nbenchmarks (mm and %; latest scores)")
    print(f"{'dataset':<16} {'model':<8} " + " ".join(f"{m.replace('_mm', ''):>15}" for m in wanted))
    for row in table.sort(["dataset", "model"]).iter_rows(named=True):
        print(f"{row['dataset']:<16} {row['model']:<8} " + " ".join(f"{row.get(m, float('nan')):>15.1f}" for m in wanted))
    return rows


def _first_error(result) -> str:
    for event in result.all_events:
        if event.is_failure and event.step_failure_data is not None:
            return event.step_failure_data.error.message.strip().splitlines()[-1]
    return "run failed"


def print_table(title: str, rows: list[dict], store_path) -> None:
    from assets.store import open_store

    header = f"{'dataset':<18} {'skeleton':<16} {'train':>6} {'val':>6} {'test':>6} {'MB':>7} {'s':>6}  checks"
    print(f"\n{title}\n" + header + "\n" + "-" * len(header))
    for row in rows:
        path = store_path(row["dataset"])
        if row["error"] or not path.exists():
            print(f"{row['dataset']:<18} FAILED: {row['error']}")
            continue
        store = open_store(path)
        counts = store.attrs["counts"]
        megabytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
        checks = row["checks"] + (f" (failed: {', '.join(row['failed'])})" if row["failed"] else "")
        print(f"{row['dataset']:<18} {store.attrs['skeleton']:<16} {counts['train']:>6} {counts['val']:>6} "
              f"{counts['test']:>6} {megabytes:>7.1f} {row['seconds']:>6.1f}  {checks}")


def predict(args) -> int:
    import json

    import model
    from model.inference import predict_folder

    estimator = model.load(args.model)
    skeleton = None if args.skeleton == "all" else args.skeleton
    poses = predict_folder(estimator, args.images, skeleton=skeleton, fov_degrees=args.fov,
                           intrinsics_file=args.intrinsics)
    text = json.dumps({"units": "mm", "frame": "camera", "skeleton": args.skeleton,
                       "joint_names": [n.rsplit("_" + args.skeleton, 1)[0] for n in estimator.joint_names
                                       if skeleton is None or n.endswith("_" + skeleton)],
                       "poses": {name: pose.round(1).tolist() for name, pose in poses.items()}})
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {len(poses)} poses ({args.skeleton}) to {args.out}")
    return 0


def main(argv=None) -> int:
    from orchestration.config import load_config

    parser = argparse.ArgumentParser(prog="dozens", description=__doc__)
    parser.add_argument("--config", help="pipeline config (default: $DOZENS_CONFIG or params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the synthetic demo world's raw datasets")
    gen.add_argument("--force", action="store_true", help="regenerate even if the raw folders exist")
    conv = sub.add_parser("convert", help="convert datasets into canonical stores and triangulate the "
                                          "multi-view ones (Dagster runs)")
    conv.add_argument("datasets", nargs="*", help="dataset names (default: all configured)")
    sub.add_parser("demo", help="generate the demo world if needed, then run the pipeline on it")
    pred = sub.add_parser("predict", help="3D poses for a folder of square person crops")
    pred.add_argument("images", help="folder of crops (jpg/png), square and person-centred")
    pred.add_argument("--model", default="data/models/final/model.pt", help="trained estimator file")
    pred.add_argument("--skeleton", default="smpl_24", help="output skeleton format ('all' for every joint)")
    pred.add_argument("--fov", type=float, default=None, help="field of view of the crops in degrees "
                      "(default 55) when --intrinsics is not given")
    pred.add_argument("--intrinsics", help="JSON file: crop file name -> 3x3 intrinsic matrix")
    pred.add_argument("--out", default="-", help="output JSON file (default: stdout)")
    args = parser.parse_args(argv)
    if args.command == "predict":
        return predict(args)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    config = load_config(args.config)

    if args.command == "generate":
        generate(config, force=args.force)
        return 0
    started = time.perf_counter()
    if args.command == "demo":
        generate(config)
    names = args.datasets if args.command == "convert" and args.datasets else sorted(config.datasets)
    rows = run_partitions(config, "convert_datasets", names)
    print_table("dataset stores", rows, config.dataset_store_path)
    converted = {r["dataset"] for r in rows if r["ok"]}
    multiview = [n for n in config.multiview_datasets if n in converted]
    if multiview:
        pseudo_rows = run_partitions(config, "triangulate_pseudo_gt", multiview)
        print_table("pseudo-GT stores (triangulated multi-view datasets)", pseudo_rows, config.pseudo_gt_store_path)
        rows += pseudo_rows
    if args.command == "demo" and config.training is not None and all(r["ok"] for r in rows):
        ok = run_models(config)
        rows.append({"ok": ok})
        if ok and config.benchmark.datasets:
            rows += run_benchmarks(config)
    print(f"\ntotal {time.perf_counter() - started:.1f} s; stores under {config.store_root}; "
          f"browse with: DAGSTER_HOME={os.environ.get('DAGSTER_HOME')} dagster dev")
    return 0 if all(r["ok"] for r in rows) and len(converted) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
