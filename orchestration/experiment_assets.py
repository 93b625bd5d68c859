"""The paper's experiments as Dagster assets of their own group, outside the default pipeline: `dozens
experiments` (or the UI) materialises them; `dozens demo` and the automation conditions never do.

    autoencoder_experiment   all-skeleton pseudo-GT -> ACAE sweeps against the closed forms and PCA,
                             scored on the demo world's TRUE poses of held-out subjects

Each writes its tables and plots under ``data/experiments/<name>/`` and into its metadata. The work is
plain Python (``evaluation.autoencoder_experiment``); a run's ``size`` (``small`` or ``tiny``) picks its preset.
"""

import dagster as dg

from assets.artifacts import read_zarr_group
from orchestration.config import PipelineConfig
from orchestration.console import step_progress
from orchestration.experiment_names import SIZES
from orchestration.metadata import png_markdown

EXPERIMENTS_GROUP = "experiments"
HELD_OUT_TRUE_POSES = {"small": 2000, "tiny": 64}  # true poses of held-out subjects the autoencoders are scored on
TRUE_POSES_SEED = 7


class ExperimentRun(dg.Config):
    size: str = "small"  # one of experiment_names.SIZES


def experiments_root(config: PipelineConfig):
    return config.store_root.parent / "experiments"


def _preset(size: str):
    from evaluation.autoencoder_experiment import SMALL, TINY

    if size not in SIZES:
        raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    return {"small": SMALL, "tiny": TINY}[size]


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

        from evaluation.autoencoder_experiment import held_out_true_poses, run_autoencoder_experiment

        arrays, attrs = read_zarr_group(pipeline.all_skeleton_pseudo_gt_path)
        joint_names = list(attrs["joint_names"])
        # the pipeline's own autoencoder is the sweep's default point; the preset sets the sweep and the length
        preset = _preset(config.size)
        fit = replace(pipeline.acae.fit, steps=preset.fit.steps, batch_size=preset.fit.batch_size)
        settings = replace(preset, fit=fit)
        if config.size == "tiny":  # a tiny pipeline has a few dozen poses: no more latents than its autoencoder's
            default = fit.n_latent_sided + fit.n_latent_center
            settings = replace(settings, latent_counts=(max(2, default // 2), default))
        truth = held_out_true_poses(joint_names, HELD_OUT_TRUE_POSES[config.size], seed=TRUE_POSES_SEED)
        result = run_autoencoder_experiment(arrays["poses"], joint_names, truth, settings,
                                            progress=step_progress(context))
        folder = experiments_root(pipeline) / "autoencoder"
        written = result.write(folder)
        plots = {f"plot_{name}": png_markdown(png, name) for name, png in result.plots_png().items()}
        return dg.MaterializeResult(metadata={
            "size": dg.MetadataValue.text(config.size), "tables": dg.MetadataValue.md(result.markdown()),
            "folder": dg.MetadataValue.path(str(folder)),
            "files": dg.MetadataValue.text(", ".join(str(path) for path in written)), **plots})

    return [autoencoder_experiment]
