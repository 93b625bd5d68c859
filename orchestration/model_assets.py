"""Dagster wiring for the paper's 3-step workflow (method.md §5-§7):

training_pool → initial_model (separate heads) → all_skeleton_pseudo_gt → acae → final_model (consistency)

Thin: the training loop (model.training), the autoencoder (model.acae), the pseudo labels
(model.pseudo_labels) and the reports (evaluation.*) are plain Python. They are imported inside the
assets: torch and matplotlib then load only in a process that trains, and every other process that loads
the definitions (a DVC conversion stage, a conversion worker, the UI's code server) starts seconds sooner.
"""

import dagster as dg
import numpy as np

from assets.artifacts import read_zarr_group, write_zarr_group
from assets.atomic_files import write_atomically
from assets.versions import local_published, stamp
from orchestration.config import PipelineConfig, RunSettings
from orchestration.console import step_progress
from orchestration.metadata import png_markdown
from orchestration.asset_graph import asset_code_version, asset_deps, current_signature
from orchestration.automation import STALE_CONDITION
from orchestration.stages import output

# Dagster concurrency pool of the training steps: a deployment's instance limits how many run at once
# (configs/deployment/dagster.yaml)
TRAINING_POOL = "training"
K8S_CONFIG_TAG = "dagster-k8s/config"  # read by dagster-k8s's executor and run launcher, ignored elsewhere
HELD_OUT_EVERY = 10  # every 10th all-skeleton pose is held out of the autoencoder fit, for its report


def training_sources(config: PipelineConfig, progress=None) -> list:
    """The batch composition's datasets, each with a store path the loader reads examples from at random
    (stores on an object store are copied to the local cache first: assets.locations)."""
    from model.data import Source

    settings = config.training
    parts = [(name, count, "3d") for name, count in settings.batch_3d.items()]
    parts += [(name, count, "2d") for name, count in settings.batch_2d.items()]
    return [Source(name, local_published(config.training_store_path(name), progress), count, part)
            for name, count, part in parts]


def training_config(config: PipelineConfig, run: RunSettings):
    """The ``model.training.TrainingConfig`` of a training run (``RunSettings``: the pipeline's initial or
    final run, or an experiment's) with the pipeline's network, loader and checkpoint settings."""
    from model.training import TrainingConfig

    settings = config.training
    return TrainingConfig(mode=run.mode, steps=run.steps, learning_rate=run.learning_rate,
                          consistency_examples=run.consistency_examples, backbone=settings.backbone,
                          workers=settings.workers, image_cache_mb=settings.image_cache_mb,
                          checkpoint_every=settings.checkpoint_every,
                          image_size=settings.image_size or config.image_size, stride=settings.stride,
                          abs_loss_start_step=max(1, run.steps // 6),
                          weak_perspective_steps=max(1, run.steps // 20))


def training_metadata(result, config) -> dict:
    from evaluation.plots import line_plot_png

    steps = [h["step"] for h in result.history]
    curves = {k: (steps, [h[k] for h in result.history]) for k in result.history[0]
              if k not in ("step", "lr", "images_per_second") and not k.endswith("_abs")} if result.history else {}
    return {
        "mode": dg.MetadataValue.text(config.mode),
        "steps": dg.MetadataValue.int(result.steps),
        "resumed_from_step": dg.MetadataValue.int(result.resumed_from),
        "final_loss": dg.MetadataValue.float(result.history[-1]["total"] if result.history else float("nan")),
        "images_per_second": dg.MetadataValue.float(round(result.images_per_second, 1)),
        "device": dg.MetadataValue.text(result.device),
        "train_seconds": dg.MetadataValue.float(round(result.seconds, 1)),
        "model_path": dg.MetadataValue.path(str(result.model_path)),
        "loss_curves": png_markdown(line_plot_png(curves, title=f"{config.mode} training", xlabel="step",
                                                   ylabel="loss (m)", logy=True), "loss curves"),
    }


def training_op_tags(settings) -> dict:
    """The training steps' op tags: with ``request_gpus``, a Kubernetes GPU request, one per process."""
    if not settings.request_gpus:
        return {}
    gpus = str(settings.nproc)
    return {K8S_CONFIG_TAG: {"container_config": {"resources": {"requests": {"nvidia.com/gpu": gpus},
                                                                "limits": {"nvidia.com/gpu": gpus}}}}}


def build_model_assets(config: PipelineConfig) -> list:
    if config.training is None:
        return []
    settings = config.training
    pool_path = output(config, "training_pool")
    all_skeleton_path = output(config, "all_skeleton_pseudo_gt")
    acae_path = output(config, "acae")
    initial_path, final_path = output(config, "initial_model"), output(config, "final_model")

    @dg.asset(deps=asset_deps(config, "training_pool"), code_version=asset_code_version(config, "training_pool"),
              automation_condition=STALE_CONDITION, group_name="training", kinds={"parquet"},
              description="Index of every example the training runs draw from, with its store and batch part.")
    def training_pool(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from model.pool import build_training_pool

        version = current_signature(config, context.instance, "training_pool")
        pool = build_training_pool(training_sources(config, step_progress(context)))
        write_atomically(pool_path, pool.write_parquet)
        stamp(pool_path, version)
        counts = pool.group_by(["dataset", "part", "split"]).len().sort(["dataset", "split"])
        table = "| dataset | part | split | examples |\n|---|---|---|---|\n" + "\n".join(
            f"| {r['dataset']} | {r['part']} | {r['split']} | {r['len']} |" for r in counts.iter_rows(named=True))
        return dg.MaterializeResult(
            metadata={"examples": dg.MetadataValue.int(pool.height), "composition": dg.MetadataValue.md(table),
                      "path": dg.MetadataValue.path(str(pool_path))},
            data_version=dg.DataVersion(version))

    @dg.asset(deps=asset_deps(config, "initial_model"), code_version=asset_code_version(config, "initial_model"),
              automation_condition=STALE_CONDITION, group_name="training", kinds={"pytorch"}, pool=TRAINING_POOL,
              op_tags=training_op_tags(settings),
              description="Step 1: one output head per skeleton format, trained on all datasets.")
    def initial_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from model.distributed import launch_training

        run = training_config(config, settings.initial)
        version = current_signature(config, context.instance, "initial_model")
        result = launch_training(run, training_sources(config, step_progress(context)), initial_path.parent,
                                 nproc=settings.nproc, progress=step_progress(context), data_fingerprint=version)
        stamp(result.model_path, version)
        return dg.MaterializeResult(metadata=training_metadata(result, run), data_version=dg.DataVersion(version))

    @dg.asset(deps=asset_deps(config, "all_skeleton_pseudo_gt"), code_version=asset_code_version(config, "all_skeleton_pseudo_gt"),
              automation_condition=STALE_CONDITION, group_name="training", kinds={"zarr"},
              description="Step 2a: the initial model's predictions of every skeleton's joints (flip TTA) on "
                          "training crops: dense poses in all formats for the autoencoder.")
    def all_skeleton_pseudo_gt(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from model.estimator import PoseEstimator
        from model.pseudo_labels import predict_all_skeletons

        version = current_signature(config, context.instance, "all_skeleton_pseudo_gt")
        estimator = PoseEstimator.load(initial_path)
        stores = [local_published(config.training_store_path(name), step_progress(context))
                  for name in settings.batch_3d]
        labels = predict_all_skeletons(estimator, stores, examples_per_store=config.acae.pseudo_gt_examples_per_dataset,
                                       progress=step_progress(context))
        write_zarr_group(all_skeleton_path, {"poses": labels["poses"], "dataset": labels["dataset"],
                                             "example": labels["example"]},
                         {"joint_names": labels["joint_names"], "datasets": labels["datasets"], "units": "mm",
                          "frame": "camera"}, data_version=version)
        return dg.MaterializeResult(
            metadata={"poses": dg.MetadataValue.int(len(labels["poses"])),
                      "joints_behind_camera_share": dg.MetadataValue.float(labels["behind_camera"]),
                      "joints": dg.MetadataValue.int(len(labels["joint_names"])),
                      "path": dg.MetadataValue.path(str(all_skeleton_path))},
            data_version=dg.DataVersion(version))

    @dg.asset(deps=asset_deps(config, "acae"), code_version=asset_code_version(config, "acae"),
              automation_condition=STALE_CONDITION, group_name="training", kinds={"pytorch"},
              description="Step 2b: the affine-combining autoencoder fit on the all-skeleton pseudo-GT.")
    def acae(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from evaluation.acae_report import (baseline_markdown, baseline_rows, errors_per_skeleton, latent_plot_png,
                                            markdown_table, sparsity)
        from model.acae import fit_acae

        version = current_signature(config, context.instance, "acae")
        arrays, attrs = read_zarr_group(all_skeleton_path)
        poses = arrays["poses"].astype(np.float64)
        held_out = np.arange(len(poses)) % HELD_OUT_EVERY == 0
        model = fit_acae(poses[~held_out], attrs["joint_names"], config.acae.fit, seed=0,
                         progress=step_progress(context))
        model.save(acae_path)
        stamp(acae_path, version)
        rows = errors_per_skeleton(model, poses[held_out])
        share_sparse = sparsity(model)
        references = baseline_rows(model, poses[~held_out], poses[held_out])
        return dg.MaterializeResult(
            metadata={"held_out_errors": dg.MetadataValue.md(markdown_table(rows)),
                      "held_out_errors_vs_references": dg.MetadataValue.md(baseline_markdown(references)),
                      "held_out_error_3d_mm": dg.MetadataValue.float(rows[-1]["error_3d_mm"]),
                      "held_out_error_projected_mm": dg.MetadataValue.float(rows[-1]["error_projected_mm"]),
                      "encoder_sparsity": dg.MetadataValue.float(share_sparse["encoder"]),
                      "decoder_sparsity": dg.MetadataValue.float(share_sparse["decoder"]),
                      "latents": dg.MetadataValue.int(model.num_latents),
                      "latent_plot": png_markdown(latent_plot_png(model, poses[held_out]), "latent keypoints"),
                      "path": dg.MetadataValue.path(str(acae_path))},
            data_version=dg.DataVersion(version))

    @dg.asset(deps=asset_deps(config, "final_model"), code_version=asset_code_version(config, "final_model"),
              automation_condition=STALE_CONDITION, group_name="training", kinds={"pytorch"}, pool=TRAINING_POOL,
              op_tags=training_op_tags(settings),
              description="Step 3: fine-tuned from the initial model with the frozen autoencoder "
                          "(mode from training.final.mode; consistency regularisation by default).")
    def final_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from model.acae import ACAE
        from model.distributed import launch_training

        run = training_config(config, settings.final)
        version = current_signature(config, context.instance, "final_model")
        result = launch_training(run, training_sources(config, step_progress(context)), final_path.parent,
                                 nproc=settings.nproc, acae=ACAE.load(acae_path), init_from=initial_path,
                                 progress=step_progress(context), data_fingerprint=version)
        stamp(result.model_path, version)
        return dg.MaterializeResult(metadata=training_metadata(result, run), data_version=dg.DataVersion(version))

    return [training_pool, initial_model, all_skeleton_pseudo_gt, acae, final_model]

