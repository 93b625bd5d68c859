"""The paper's experiments as Dagster assets of their own group, outside the default pipeline: `dozens
experiments` (or the UI) materialises them; `dozens demo` and the automation conditions never do.

    autoencoder_experiment   all-skeleton pseudo-GT -> ACAE sweeps against the closed forms and PCA,
                             scored on the demo world's TRUE poses of held-out subjects
    consistency_experiment   initial model + autoencoder -> the four final modes fine-tuned alike, scored
                             for accuracy and cross-format consistency on the benchmark test sets, and
                             in every output format against the demo world's TRUE joints
    scaling_experiment       training stores -> models trained from scratch on 1, 4, 12 and all 3D
                             datasets, scored in one format against the demo world's TRUE joints of
                             test sets seen and unseen in training

Each writes its tables and plots under ``data/experiments/<name>/`` (and the training runs it needs, in
``runs/`` there) and into its metadata. The work is plain Python (``evaluation.<name>``); a run's ``size``
(``small`` or ``tiny``) picks its preset.
"""

import hashlib

import dagster as dg

from assets.artifacts import read_zarr_group
from assets.versions import local_published, published_data_version
from orchestration.code_versions import hash_files
from orchestration.config import PipelineConfig, RunSettings
from orchestration.console import step_progress
from orchestration.experiment_names import SIZES
from orchestration.metadata import png_markdown
from orchestration.model_assets import training_config, training_sources
from orchestration.stages import code_files, output, store_input

EXPERIMENTS_GROUP = "experiments"
HELD_OUT_TRUE_POSES = {"small": 2000, "tiny": 64}  # true poses of held-out subjects the autoencoders are scored on
TRUE_POSES_SEED = 7


class ExperimentRun(dg.Config):
    size: str = "small"  # one of experiment_names.SIZES


def experiments_root(config: PipelineConfig):
    return config.store_root.parent / "experiments"


def _preset(size: str, small, tiny):
    if size not in SIZES:
        raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    return {"small": small, "tiny": tiny}[size]


def experiment_test_sets(config: PipelineConfig) -> list[str]:
    """The test sets the experiments score on: the benchmark's, or else the 3D training datasets."""
    return list(config.benchmark.datasets or config.training.batch_3d)


def evaluation_sets(config: PipelineConfig, progress, *, truth_only: bool = False) -> list:
    """The ``experiment_test_sets`` as ``evaluation.truth_scores.EvaluationSet``s, their stores local, each with
    the demo world dataset it was generated as where the world regenerates its truth (else None; left out
    with ``truth_only``)."""
    from assets.synthetic.truth import has_truth
    from evaluation.truth_scores import EvaluationSet
    from orchestration.stages import generated_datasets

    synthetic = set(generated_datasets(config)[0])
    test_sets = []
    for name in experiment_test_sets(config):
        world = config.datasets[name].raw.name
        world = world if name in synthetic and has_truth(world) else None
        if world is not None or not truth_only:
            test_sets.append(EvaluationSet(name, local_published(config.training_store_path(name), progress), world))
    return test_sets


def runs_fingerprint(config: PipelineConfig, files=()) -> str:
    """What an experiment's training runs learn from besides their settings and sources (which training
    compares itself before resuming a run): the training code, the published versions of the training
    stores and the content of ``files`` (a model to start from, an autoencoder)."""
    from orchestration.benchmark_assets import file_fingerprint

    names = sorted({*config.training.batch_3d, *config.training.batch_2d})
    parts = [hash_files(code_files("initial_model"))]
    parts += [f"{name}={published_data_version(config.training_store_path(name))}" for name in names]
    parts += [file_fingerprint(path) for path in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _store_deps(config: PipelineConfig, names) -> list[dg.AssetDep]:
    """Dependencies on the stores of datasets ``names`` (conversions, or pseudo-GT of multi-view 2D sets)."""
    stages: dict[str, list[str]] = {}
    for name in names:
        stage, partition = store_input(config, name)
        stages.setdefault(stage, []).append(partition)
    return [dg.AssetDep(stage, partition_mapping=dg.SpecificPartitionsPartitionMapping(sorted(partitions)))
            for stage, partitions in stages.items()]


def _metadata(size: str, result, folder, written) -> dict:
    plots = {f"plot_{name}": png_markdown(png, name) for name, png in result.plots_png().items()}
    return {"size": dg.MetadataValue.text(size), "tables": dg.MetadataValue.md(result.markdown()),
            "folder": dg.MetadataValue.path(str(folder)),
            "files": dg.MetadataValue.text(", ".join(str(path) for path in written)), **plots}


def build_experiment_assets(config: PipelineConfig) -> list:
    if config.training is None:  # the experiments start from the trained pipeline's artifacts
        return []
    pipeline = config  # the assets' own `config` parameter is their run's (Dagster's naming)

    @dg.asset(deps=[dg.AssetKey("all_skeleton_pseudo_gt")], group_name=EXPERIMENTS_GROUP, kinds={"markdown"},
              description="The autoencoder experiment: ACAEs fitted on the initial model's all-skeleton pseudo-GT "
                          "for a sweep of latents and sparsity, next to the closed-form optima and PCA, scored on "
                          "the demo world's true poses of held-out subjects (3D and perpendicular to the ray).")
    def autoencoder_experiment(context: dg.AssetExecutionContext, config: ExperimentRun) -> dg.MaterializeResult:
        from dataclasses import replace

        from evaluation.autoencoder_experiment import SMALL, TINY, held_out_true_poses, run_autoencoder_experiment

        arrays, attrs = read_zarr_group(pipeline.all_skeleton_pseudo_gt_path)
        joint_names = list(attrs["joint_names"])
        # the pipeline's own autoencoder is the sweep's default point; the preset sets the sweep and the length
        preset = _preset(config.size, SMALL, TINY)
        fit = replace(pipeline.acae.fit, steps=preset.fit.steps, batch_size=preset.fit.batch_size)
        settings = replace(preset, fit=fit)
        if config.size == "tiny":  # a tiny pipeline has a few dozen poses: no more latents than its autoencoder's
            default = fit.n_latent_sided + fit.n_latent_center
            settings = replace(settings, latent_counts=(max(2, default // 2), default))
        truth = held_out_true_poses(joint_names, HELD_OUT_TRUE_POSES[config.size], seed=TRUE_POSES_SEED)
        result = run_autoencoder_experiment(arrays["poses"], joint_names, truth, settings,
                                            progress=step_progress(context))
        folder = experiments_root(pipeline) / "autoencoder"
        return dg.MaterializeResult(metadata=_metadata(config.size, result, folder, result.write(folder)))

    initial_path, acae_path = output(pipeline, "initial_model"), output(pipeline, "acae")

    @dg.asset(deps=[dg.AssetKey("initial_model"), dg.AssetKey("acae"), *_store_deps(pipeline, experiment_test_sets(pipeline))],
              group_name=EXPERIMENTS_GROUP, kinds={"markdown", "pytorch"},
              description="The consistency experiment: the initial model fine-tuned alike in each final mode "
                          "(separate, consistency, latent, hybrid), scored with the initial model for MPJPE, "
                          "PA-MPJPE and consistency with the autoencoder on the benchmark test sets, and for the "
                          "MPJPE of all its output formats against the demo world's true joints.")
    def consistency_experiment(context: dg.AssetExecutionContext, config: ExperimentRun) -> dg.MaterializeResult:
        from evaluation.consistency_experiment import SMALL, TINY, run_consistency_experiment
        from evaluation.experiment_files import RUNS_FOLDER
        from model.acae import ACAE

        settings = _preset(config.size, SMALL, TINY)
        progress = step_progress(context)
        final = pipeline.training.final  # every mode learns as the pipeline's final run does, for as long as the others
        runs = {mode: training_config(pipeline, RunSettings(steps=settings.steps, learning_rate=final.learning_rate,
                                                            mode=mode, consistency_examples=final.consistency_examples))
                for mode in settings.modes}
        folder = experiments_root(pipeline) / "consistency"
        result = run_consistency_experiment(
            runs, training_sources(pipeline, progress), initial_path, ACAE.load(acae_path),
            evaluation_sets(pipeline, progress), folder / RUNS_FOLDER, world_seed=pipeline.demo_seed,
            nproc=pipeline.training.nproc, data_fingerprint=runs_fingerprint(pipeline, (initial_path, acae_path)),
            progress=progress)
        return dg.MaterializeResult(metadata=_metadata(config.size, result, folder, result.write(folder)))

    @dg.asset(deps=[dg.AssetKey("training_pool"), *_store_deps(pipeline, experiment_test_sets(pipeline))],
              group_name=EXPERIMENTS_GROUP, kinds={"markdown", "pytorch"},
              description="The data-scaling experiment: models trained from scratch on 1, 4, 12 and all 3D "
                          "datasets (the same steps and crops per step), scored in the first dataset's format "
                          "against the demo world's true joints on test sets seen and unseen in training.")
    def scaling_experiment(context: dg.AssetExecutionContext, config: ExperimentRun) -> dg.MaterializeResult:
        from evaluation.experiment_files import RUNS_FOLDER
        from evaluation.scaling_experiment import SMALL, TINY, run_scaling_experiment

        settings = _preset(config.size, SMALL, TINY)
        progress = step_progress(context)
        initial = pipeline.training.initial  # every run learns from scratch as the pipeline's initial run does
        run = training_config(pipeline, RunSettings(steps=settings.steps, learning_rate=initial.learning_rate,
                                                    mode="separate"))
        folder = experiments_root(pipeline) / "scaling"
        result = run_scaling_experiment(settings, run, training_sources(pipeline, progress),
                                        evaluation_sets(pipeline, progress, truth_only=True),
                                        folder / RUNS_FOLDER, world_seed=pipeline.demo_seed,
                                        nproc=pipeline.training.nproc, data_fingerprint=runs_fingerprint(pipeline),
                                        progress=progress)
        return dg.MaterializeResult(metadata=_metadata(config.size, result, folder, result.write(folder)))

    return [autoencoder_experiment, consistency_experiment, scaling_experiment]
