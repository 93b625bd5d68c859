"""`dozens` command line: generate the demo world, run the pipeline through Dagster, print results."""

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from assets.locations import tree_size
from orchestration.experiment_names import EXPERIMENTS
from orchestration.experiment_names import SIZES as EXPERIMENT_SIZES
from orchestration.stages import STAGES

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class InstanceError(RuntimeError):
    """The Dagster instance (run and event history) cannot be opened."""


def _dagster_instance():
    import dagster as dg

    # An absolute DAGSTER_HOME makes CLI runs visible in `dagster dev` (same instance, same history)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists() or not settings.read_text().strip():
        # a config file silences the "no instance config" warning; telemetry off silences its banner
        settings.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # the SQLite databases are opened lazily: touch them now
        instance.fetch_materializations(dg.AssetKey("dataset"), limit=1)
    except Exception as exc:
        raise InstanceError(
            f"the Dagster instance at {home} (DAGSTER_HOME) cannot be opened: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}\n"
            f"It holds the run history and the recorded data versions. To start a fresh one, move it aside "
            f"(mv {home} {home}.broken) and re-run; the next run then recomputes every stage once.") from exc
    return instance


def generate(config, force: bool = False) -> bool:
    """Write the raw folders of the configured demo datasets that are missing (all with ``force``); True
    when something was written."""
    from orchestration.stages import generated_datasets

    def wanted(names):
        return [n for n in names if force or not config.datasets[n].raw.exists()]

    synthetic, real = (wanted(names) for names in generated_datasets(config))
    if not synthetic and not real:
        print("demo data: all raw folders exist, nothing to generate")
        return False
    from assets.synthetic.world import READERS

    world_only = {converter for converter in READERS.values() if converter.startswith("demo_")}
    for name, entry in config.datasets.items():
        if entry.converter in world_only and name not in synthetic:
            folders = sorted(folder for folder, converter in READERS.items() if converter == entry.converter)
            raise SystemExit(f"{config.path}: dataset {name!r}: converter {entry.converter!r} reads the demo world's "
                             f"{', '.join(folders)}, so 'raw' must be a folder of that name, but it is {entry.raw}")
    started = time.perf_counter()
    # the real recording's build mostly waits (a download, a pip install, MediaPipe subprocesses) and each
    # synthetic dataset is generated on its own: all of them run at once
    with ThreadPoolExecutor(max_workers=len(real) or 1) as threads, \
            ProcessPoolExecutor(max_workers=min(len(synthetic), os.cpu_count() or 1) or 1,
                                mp_context=multiprocessing.get_context("spawn")) as processes:  # no fork beside a thread
        builds = [threads.submit(_build_real_recording, config.datasets[name].raw, name,
                                 config.datasets[name].converter, force) for name in real]
        if synthetic:
            from assets.synthetic import generate_world

            print(f"demo world: generating {', '.join(synthetic)} (size={config.demo_size}, seed={config.demo_seed})")
            worlds = [processes.submit(generate_world, config.datasets[name].raw.parent, size=config.demo_size,
                                       seed=config.demo_seed, datasets=[config.datasets[name].raw.name])
                      for name in synthetic]
            for future in worlds:
                future.result()
            print(f"demo world: done in {time.perf_counter() - started:.1f} s")
        for future in builds:
            future.result()
    return True


def _build_real_recording(raw, name: str, converter: str, force: bool) -> None:
    import importlib

    from orchestration.stages import REAL_RECORDINGS

    started = time.perf_counter()
    print(f"{name}: acquiring the Pose2Sim demo videos and running BlazePose (cached under data/cache)")
    importlib.import_module(REAL_RECORDINGS[converter]).build(raw, force=force, report=lambda m: print(f"{name}: {m}"))
    print(f"{name}: done in {time.perf_counter() - started:.1f} s")


def print_store_table(title: str, names: list[str], store_path, outcomes: dict) -> None:
    from assets.store import open_store

    header = f"{'dataset':<18} {'skeleton':<16} {'train':>6} {'val':>6} {'test':>6} {'MB':>7}  this run"
    print(f"\n{title}\n" + header + "\n" + "-" * len(header))
    for name in names:
        outcome = outcomes.get(name)
        if outcome is not None and outcome.status in ("failed", "skipped"):
            print(f"{name:<18} {outcome.status.upper()}" + (f": {_indented(outcome.error)}" if outcome.error else ""))
            continue
        try:
            store = open_store(store_path(name))
        except FileNotFoundError:
            print(f"{name:<18} MISSING: nothing published at {store_path(name)}")
            continue
        except Exception as exc:
            print(f"{name:<18} UNREADABLE: {exc}")
            continue
        counts = store.attrs["counts"]
        megabytes = tree_size(store.path) / 2**20
        print(f"{name:<18} {store.attrs['skeleton']:<16} {counts['train']:>6} {counts['val']:>6} "
              f"{counts['test']:>6} {megabytes:>7.1f}  {_describe(outcome)}")


def _indented(text: str) -> str:
    return text.replace("\n", "\n    ")


def _describe(outcome) -> str:
    if outcome is None:
        return "not selected"
    if outcome.status == "fresh":
        return "up to date (skipped)"
    if outcome.failed_checks:
        checks = f", failed checks: {', '.join(outcome.failed_checks)}"
    else:
        checks = f", {outcome.checks} checks passed" if outcome.checks else ""
    return f"{outcome.status} in {outcome.seconds:.1f} s{checks}"


def print_benchmark_table(config) -> None:
    import polars as pl

    from evaluation.benchmark import read_history

    history = read_history(config.benchmark_history_path)
    if history.is_empty():
        return
    latest = history.group_by(["model", "dataset", "metric"], maintain_order=True).agg(pl.col("value").last())
    wanted = ["mpjpe_mm", "pa_mpjpe_mm", "absolute_mpjpe_mm", "pck150", "auc", "cps200", "consistency_mm"]
    table = latest.filter(pl.col("metric").is_in(wanted)).pivot("metric", index=["dataset", "model"], values="value")
    print("\nbenchmark (latest scores; mm, PCK/AUC/CPS in %)")
    print(f"{'dataset':<16} {'model':<8} " + " ".join(f"{m.replace('_mm', ''):>14}" for m in wanted))
    rows = list(table.sort(["dataset", "model"]).iter_rows(named=True))
    notes = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        latest_file = config.benchmark_latest_path(dataset)
        if latest_file.exists():  # the floor every model must beat: always the mean training pose
            latest_scores = json.loads(latest_file.read_text())
            baseline = latest_scores.get("baseline", {})
            rows.append({"dataset": dataset, "model": "meanpose", **baseline})
            notes.append(f"{dataset}: root {latest_scores.get('root', '?')}, mean pose in the "
                         f"{baseline.get('frame') or '?'} frame")
    for row in sorted(rows, key=lambda r: (r["dataset"], r["model"])):
        print(f"{row['dataset']:<16} {row['model']:<8} "
              + " ".join(f"{row[m]:>14.1f}" if isinstance(row.get(m), (int, float)) else f"{'–':>14}"
                         for m in wanted))
    for note in notes:
        print(f"  {note}")


def show_plan(config, *, only=None, partitions=None, force=False) -> int:
    """What a run would materialise now, in order (after recording the sources' observations)."""
    from orchestration.runner import observe_and_plan

    planned = observe_and_plan(config, _dagster_instance(), only=only, partitions=partitions, force=force)
    for asset, partition in planned:
        print(f"would run {asset}[{partition}]" if partition else f"would run {asset}")
    print(f"{len(planned)} steps would run" if planned else "nothing to do, everything is up to date")
    return 0


def run(config, *, only=None, partitions=None, force=False, jobs=None, dry_run=False, generated=False) -> int:
    """Run the stale steps (``generated``: the demo world was just written, which DVC records too)."""
    from orchestration.dvc_record import commit_to_dvc
    from orchestration.runner import run_pipeline
    from orchestration.stages import DEMO_WORLD_STAGE

    if dry_run:
        return show_plan(config, only=only, partitions=partitions, force=force)

    started = time.perf_counter()
    outcomes = run_pipeline(config, _dagster_instance(), only=only, partitions=partitions, force=force,
                            jobs=jobs or config.jobs)
    by_asset: dict[str, dict] = {}
    for outcome in outcomes:
        by_asset.setdefault(outcome.asset, {})[outcome.partition] = outcome
    names = sorted(partitions & set(config.datasets)) if partitions else sorted(config.datasets)
    print_store_table("dataset stores", names, config.dataset_store_path, by_asset.get("dataset", {}))
    multiview = [n for n in config.multiview_datasets if n in names]
    if multiview and (only is None or "pseudo_gt" in only):
        print_store_table("pseudo-GT stores (triangulated multi-view datasets)", multiview,
                          config.pseudo_gt_store_path, by_asset.get("pseudo_gt", {}))
    model_steps = [o for o in outcomes if o.partition is None]
    if model_steps:
        print("\ntraining stages")
        for outcome in model_steps:
            print(f"  {outcome.label:<24} {_describe(outcome)}" + (f": {_indented(outcome.error)}" if outcome.error else ""))
    if "benchmark" in by_asset:
        print_benchmark_table(config)
    ran = [o.label for o in outcomes if o.status == "ran"]
    ran_steps = [(o.asset, o.partition) for o in outcomes if o.status == "ran"]
    commit_to_dvc(config, [(DEMO_WORLD_STAGE, None)] * generated + ran_steps)
    failed = [o.label for o in outcomes if o.status in ("failed", "skipped")]
    print(f"\n{len(ran)} steps ran, {sum(o.status == 'fresh' for o in outcomes)} were up to date"
          + (f"; FAILED or skipped: {', '.join(failed)}" if failed else "")
          + (" - nothing to do, everything is up to date" if not ran and not failed else ""))
    print(f"total {time.perf_counter() - started:.1f} s; artifacts under {config.store_root.parent}; "
          f"browse with: DAGSTER_HOME={os.environ.get('DAGSTER_HOME')} dagster dev")
    return 1 if failed else 0


def materialize(config, stage: str, partition: str | None) -> int:
    """Materialise one step (after recording what DVC restored upstream of it: runner.materialize_step)."""
    from orchestration.runner import materialize_step
    from orchestration.stages import partitions

    known = partitions(config, STAGES[stage])
    if (partition is None) != (known == [None]) or (partition is not None and partition not in known):
        raise ValueError(f"{stage}: expected " + (f"--partition, one of {known}" if known != [None]
                                                  else "no --partition") + f" (config {config.path})")
    outcome = materialize_step(config, _dagster_instance(), stage, partition)
    print(f"{outcome.label}: {outcome.status} in {outcome.seconds:.1f} s"
          + (f"\n{outcome.error}" if outcome.error else ""))
    return 0 if outcome.status == "ran" else 1


def experiments(config, names: list[str], size: str, instance=None) -> int:
    """Materialise the experiments (``names``: all of them), each in a Dagster run of the given size
    (``instance``: the project's Dagster instance unless given)."""
    import dagster as dg

    from orchestration.console import PROGRESS
    from orchestration.definitions import build_definitions
    from orchestration.experiment_assets import experiments_root
    from orchestration.runner import console_logging, failure_message

    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}; the experiments: {', '.join(EXPERIMENTS)}")
    if config.training is None:
        raise ValueError(f"the experiments start from the trained pipeline: {config.path} has no training section")
    if not config.all_skeleton_pseudo_gt_path.exists():
        raise ValueError(f"{config.all_skeleton_pseudo_gt_path} does not exist: run `dozens demo` first (the "
                         f"experiments start from its initial model's all-skeleton pseudo-GT)")
    failed = 0
    for name in names or EXPERIMENTS:
        started = time.perf_counter()
        result = dg.materialize(list(build_definitions(config).assets), selection=[name],
                                instance=instance or _dagster_instance(), raise_on_error=False,
                                run_config={"ops": {name: {"config": {"size": size}}}, **console_logging()})
        PROGRESS.clear()
        if result.success:
            print(f"{name}: ran in {time.perf_counter() - started:.1f} s; tables and plots in "
                  f"{experiments_root(config) / name.removesuffix('_experiment')}")
        else:
            failed += 1
            print(f"{name}: failed: {failure_message(result)}")
    return 1 if failed else 0


def _fov_argument(text: str) -> float:
    from model.inference import check_fov  # light: torch is only imported when a model is loaded

    try:
        return check_fov(text)
    except ValueError as exc:  # argparse then prints usage and the message instead of a traceback
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--fov: ")) from None  # argparse names it


def predict(args) -> int:
    from assets.skeletons import get_skeleton
    from model.inference import load_estimator, predict_folder

    estimator = load_estimator(args.model)
    skeleton = None if args.skeleton == "all" else args.skeleton
    poses = predict_folder(estimator, args.images, skeleton=skeleton, fov_degrees=args.fov,
                           intrinsics_file=args.intrinsics)
    text = json.dumps({"units": "mm", "frame": "camera", "skeleton": args.skeleton,
                       "joint_names": list(estimator.joint_names if skeleton is None
                                           else get_skeleton(skeleton).joint_names),
                       "poses": {name: pose.round(1).tolist() for name, pose in poses.items()}})
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {len(poses)} poses ({args.skeleton}) to {args.out}")
    return 0


def _threshold_argument(text: str) -> float:
    from model.detect_files import check_threshold

    try:
        return check_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--threshold: ")) from None


def _batch_size_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of frames, got {text!r}")
    return value


def detect(args) -> int:
    from model.detect_files import detect_path, read_camera
    from model.inference import load_estimator
    from model.media import open_media
    from orchestration.console import PROGRESS

    media = open_media(args.path)  # the cheap checks first: a wrong path fails before the model loads
    read_camera(args.intrinsics, args.fov)
    estimator = load_estimator(args.model)
    try:
        summary = detect_path(estimator, media, skeleton=None if args.skeleton == "all" else args.skeleton,
                              out=args.out, render_dir=args.render, fov_degrees=args.fov,
                              intrinsics_file=args.intrinsics, threshold=args.threshold,
                              flip_test=not args.no_flip, batch_size=args.batch_size, progress=PROGRESS.show,
                              tracking=not args.no_tracking)
    finally:
        PROGRESS.clear()
    print(summary.describe(), file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


def _skeleton_argument(text: str) -> str:
    from assets.skeletons import UnknownSkeletonError, get_skeleton

    try:
        return get_skeleton(text).name
    except UnknownSkeletonError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def published_acae_path(config_path=None):
    """Where the pipeline's acae stage writes the fitted autoencoder (config ``config_path``, default as
    ``load_config``); FileNotFoundError saying how to get one when nothing is there."""
    from assets.locations import location
    from orchestration.config import load_config
    from orchestration.stages import output

    config = load_config(config_path)
    path = location(output(config, "acae"))
    if not path.is_file():
        raise FileNotFoundError(f"no fitted autoencoder at {path} (the acae stage's output for config "
                                f"{config.path}); run `dozens demo` to fit one, or pass --acae PATH")
    return path


def read_poses_file(path: Path):
    """The poses of a .npy array, or of a .json object's "poses" list (null for a missing coordinate)."""
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file, expected poses as .npy or .json")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:  # not an .npy file, or one holding Python objects
            raise ValueError(f"{path}: not a readable .npy array of numbers ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            poses = json.loads(path.read_text()).get("poses")
        except (ValueError, AttributeError):  # invalid JSON, or JSON that is not an object
            poses = None
        if not isinstance(poses, list):
            raise ValueError(f'{path}: expected a JSON object with a "poses" list of [J, 3] poses (mm)')
        try:
            return np.asarray(poses, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'{path}: "poses" must be nested lists of numbers or null, all poses of the same '
                             f"shape [J, 3] ({exc})") from None
    raise ValueError(f"{path}: expected a .npy or .json file of poses, got {path.suffix or 'no extension'!r}")


def bridge(args) -> int:
    import numpy as np

    from assets.atomic_files import write_atomically
    from model.bridge import bridge_poses, load_acae

    source = Path(args.poses)
    poses = read_poses_file(source)  # the cheap checks first: a wrong file fails before the model loads
    acae_path = args.acae if args.acae is not None else published_acae_path(args.config)
    acae = load_acae(acae_path)
    bridged = bridge_poses(acae, poses, args.from_skeleton, args.to_skeleton, what=str(source))
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}_{args.to_skeleton}.npy")
    write_atomically(out, lambda handle: np.save(handle, bridged))
    given = np.isfinite(poses).all(axis=-1)
    missing = f", {given.size - given.sum()} of {given.size} missing" if not given.all() else ""
    print(f"bridged {given.size // poses.shape[-2]} poses {args.from_skeleton} ({poses.shape[-2]} joints{missing}) -> "
          f"{args.to_skeleton} ({bridged.shape[-2]} joints) through {acae_path}; wrote {out} {list(bridged.shape)}")
    return 0


def main(argv=None) -> int:
    from model.detection import DEFAULT_DETECTION_THRESHOLD
    from orchestration.config import load_config

    parser = argparse.ArgumentParser(prog="dozens", description=__doc__)
    parser.add_argument("--config", help="pipeline config (default: $DOZENS_CONFIG or params.yaml)")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks and Dagster's event log")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the synthetic demo world's raw datasets")
    gen.add_argument("--force", action="store_true", help="regenerate even if the raw folders exist")
    conv = sub.add_parser("convert", help="convert datasets into canonical stores and triangulate the "
                                          "multi-view ones (Dagster runs)")
    conv.add_argument("datasets", nargs="*", help="dataset names (default: all configured)")
    conv.add_argument("--force", action="store_true", help="re-run even the steps that are up to date")
    conv.add_argument("--jobs", type=int, help="Dagster runs at once per stage (default: 'jobs' in params.yaml, 1)")
    conv.add_argument("--dry-run", action="store_true", help="only list the steps that would run")
    demo = sub.add_parser("demo", help="generate the demo world if needed, then run every stale pipeline step")
    demo.add_argument("--force", action="store_true", help="re-run even the steps that are up to date")
    demo.add_argument("--jobs", type=int, help="Dagster runs at once per stage (default: 'jobs' in params.yaml, 1)")
    demo.add_argument("--dry-run", action="store_true", help="only list the steps that would run (and generate "
                                                             "the demo world if it is missing)")
    step = sub.add_parser("materialize", help="one Dagster run of one pipeline step, whatever its state "
                                              "(dvc.yaml's stage command)")
    step.add_argument("stage", choices=list(STAGES), help="the asset")
    step.add_argument("--partition", help="the partition (a dataset or benchmark name) of a partitioned asset")
    experiment = sub.add_parser("experiments", help="the paper's experiments on the trained demo pipeline's "
                                                    "artifacts (not part of `dozens demo`)")
    experiment.add_argument("names", nargs="*", metavar="NAME",
                            help=f"experiments to run (default: all): {', '.join(EXPERIMENTS)}")
    experiment.add_argument("--size", choices=EXPERIMENT_SIZES, default="small",
                            help="small: the README's tables (about 15 min on 2 cores); tiny: seconds")
    pred = sub.add_parser("predict", help="3D poses for a folder of square person crops")
    pred.add_argument("images", help="folder of crops (jpg/png), square and person-centred")
    pred.add_argument("--model", default="data/models/final/model.pt", help="trained estimator file")
    pred.add_argument("--skeleton", default="smpl_24", help="output skeleton format ('all' for every joint)")
    camera = pred.add_mutually_exclusive_group()
    camera.add_argument("--fov", type=_fov_argument, default=None, help="field of view of the crops in "
                        "degrees, strictly between 0 and 180 (default 55) when --intrinsics is not given")
    camera.add_argument("--intrinsics", help="JSON file: crop file name -> 3x3 intrinsic matrix of the crop "
                        "as stored")
    pred.add_argument("--out", default="-", help="output JSON file (default: stdout)")
    det = sub.add_parser("detect", help="3D poses of everyone in an image, a folder of images or a video "
                                        "(built-in person detector)")
    det.add_argument("path", help="an image file, a folder of images (sorted by name) or a video")
    det.add_argument("--model", default="data/models/final/model.pt", help="trained estimator file")
    det.add_argument("--skeleton", default="smpl_24", help="output skeleton format ('all' for every joint)")
    det_camera = det.add_mutually_exclusive_group()
    det_camera.add_argument("--fov", type=_fov_argument, default=None, help="field of view across the larger "
                            "side of the images in degrees, strictly between 0 and 180 (default 55)")
    det_camera.add_argument("--intrinsics", help='JSON file {"K": 3x3 matrix, "dist": [k1, k2, p1, p2, k3]} '
                            "(dist optional): the camera of every image/frame at its stored resolution")
    det.add_argument("--out", default="poses.json", help="output JSON file, '-' for stdout (default poses.json)")
    det.add_argument("--render", metavar="DIR", help="also write every image/frame with the poses drawn on it "
                                                     "to DIR (<name>.jpg)")
    det.add_argument("--threshold", type=_threshold_argument, default=DEFAULT_DETECTION_THRESHOLD,
                     help="person detector confidence from which a person counts, 0 to 1 (default %(default)s)")
    det.add_argument("--no-flip", action="store_true", help="skip averaging with the mirrored crop (faster, a "
                                                            "little less accurate)")
    det.add_argument("--batch-size", type=_batch_size_argument, default=8,
                     help="frames per model call (default 8)")
    det.add_argument("--no-tracking", action="store_true", help="in a video, detect people in every frame on its "
                                                                "own instead of following them from frame to frame")
    brid = sub.add_parser("bridge", help="convert 3D poses between skeleton formats through the fitted "
                                         "autoencoder (missing joints as NaN allowed)")
    brid.add_argument("poses", help=".npy array [..., J, 3] in mm, or .json with a \"poses\" list, joints in the "
                                    "--from format's order")
    brid.add_argument("--from", dest="from_skeleton", required=True, type=_skeleton_argument, metavar="FORMAT",
                      help="skeleton format of the given poses, e.g. h36m_17")
    brid.add_argument("--to", dest="to_skeleton", required=True, type=_skeleton_argument, metavar="FORMAT",
                      help="skeleton format wanted, e.g. smpl_24")
    brid.add_argument("--out", help="output .npy file (default: POSES's name with _<to format>.npy, beside it)")
    brid.add_argument("--acae", help="fitted autoencoder file (default: the pipeline's, data/models/acae.pt "
                                     "for the default config)")
    verify = sub.add_parser("verify", help="read every chunk of the published stores and check it (checksums, "
                                           "missing files, schema)")
    verify.add_argument("datasets", nargs="*", help="dataset names (default: all configured)")
    sub.add_parser("datasets", help="list the converters, and check that each configured raw folder looks like "
                                    "what its converter expects (a few examples parsed, their images read)")
    collect = sub.add_parser("gc", help="remove artifact versions that no pointer references")
    collect.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    args = parser.parse_args(argv)
    try:
        return dispatch(args, load_config)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        print("(run with --verbose for the traceback)", file=sys.stderr)
        return 2


def dispatch(args, load_config) -> int:
    os.environ["DOZENS_VERBOSE"] = "1" if args.verbose else ""
    if args.command == "predict":
        return predict(args)
    if args.command == "detect":
        return detect(args)
    if args.command == "bridge":
        return bridge(args)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    config = load_config(args.config)
    if args.command == "verify":
        return verify_stores(config, _selected(config, args.datasets))
    if args.command == "gc":
        return collect_garbage_command(config, dry_run=args.dry_run)
    if args.command == "datasets":
        return diagnose_datasets(config)

    if args.command == "generate":
        generate(config, force=args.force)
        return 0
    if args.command == "materialize":
        return materialize(config, args.stage, args.partition)
    if args.command == "experiments":
        return experiments(config, args.names, args.size)
    if args.command == "demo":
        generated = generate(config)
        return run(config, force=args.force, jobs=args.jobs, dry_run=args.dry_run, generated=generated)
    names = _selected(config, args.datasets)
    return run(config, only={"dataset", "pseudo_gt"}, partitions=set(names) if args.datasets else None,
               force=args.force, jobs=args.jobs, dry_run=args.dry_run)


def _selected(config, names: list[str]) -> list[str]:
    unknown = sorted(set(names) - set(config.datasets))
    if unknown:
        raise ValueError(f"unknown datasets {unknown}; configured in {config.path}: {sorted(config.datasets)}")
    return sorted(names) if names else sorted(config.datasets)


def verify_stores(config, names: list[str]) -> int:
    """Read every published store of ``names`` end to end; exit 1 if any is damaged or missing."""
    from assets.store import open_store

    locations = [(name, config.dataset_store_path(name)) for name in names]
    locations += [(f"{name} (pseudo-GT)", config.pseudo_gt_store_path(name))
                  for name in config.multiview_datasets if name in names]
    bad = 0
    for label, location in locations:
        started = time.perf_counter()
        try:
            store = open_store(location)
            megabytes = store.verify() / 2**20
        except Exception as exc:
            bad += 1
            print(f"{label:<28} DAMAGED: {exc}")
            continue
        print(f"{label:<28} ok: {len(store)} examples, {megabytes:.1f} MB decoded and checksummed "
              f"in {time.perf_counter() - started:.1f} s ({store.path.name})")
    print(f"\n{len(locations) - bad} of {len(locations)} stores verified"
          + (f"; {bad} damaged or missing: re-convert them with `dozens convert --force NAME`" if bad else ""))
    return 1 if bad else 0


def diagnose_datasets(config) -> int:
    """The converters, then each configured dataset's raw folder checked by parsing a sample (exit 1: a problem)."""
    from assets.converters import CONVERTERS, get_converter
    from assets.converters.common import sample_examples

    print(f"{'converter':<20} {'skeleton':<18} {'frame_step':>10}  cameras (default)")
    for name in sorted(CONVERTERS):
        converter = get_converter(name)
        cameras = getattr(converter, "DEFAULT_CAMERAS", getattr(converter, "CAMERAS", ()))
        print(f"{name:<20} {converter.SKELETON or 'per dataset':<18} {getattr(converter, 'DEFAULT_FRAME_STEP', 1):>10}  "
              f"{', '.join(cameras) if cameras else '-'}")
    print(f"\nconfigured datasets ({config.path})")
    problems = 0
    for name, entry in sorted(config.datasets.items()):
        started = time.perf_counter()
        try:
            sample = sample_examples(get_converter(entry.converter), entry.raw, entry.options)
        except Exception as exc:
            problems += 1
            print(f"{name:<20} {entry.converter:<18} PROBLEM: {exc}")
            continue
        sizes = sorted({f"{image.shape[1]}x{image.shape[0]}" for _, image in sample})
        print(f"{name:<20} {entry.converter:<18} ok: {len(sample)} examples parsed, images {', '.join(sizes)} "
              f"({time.perf_counter() - started:.1f} s) in {entry.raw}")
    print(f"\n{len(config.datasets) - problems} of {len(config.datasets)} raw folders look convertible"
          + (f"; {problems} with problems (see docs/datasets.md for the layouts)" if problems else ""))
    return 1 if problems else 0


def collect_garbage_command(config, *, dry_run: bool) -> int:
    from assets.versions import collect_garbage, stale_local_copies

    # only where versions are published: a walk through the raw datasets would take long on real data
    found = collect_garbage(config.store_root, dry_run=dry_run)
    for path in found:
        print(("would remove " if dry_run else "removed ") + str(path))
    print(f"{len(found)} unreferenced version(s) {'found' if dry_run else 'removed'} under {config.store_root}")
    copies = stale_local_copies(config.store_root, dry_run=dry_run)
    for path in copies:
        print(("would remove " if dry_run else "removed ") + f"local copy {path}")
    if copies:
        print(f"{len(copies)} local cop{'y' if len(copies) == 1 else 'ies'} of versions no longer current "
              f"{'found' if dry_run else 'removed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
