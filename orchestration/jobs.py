"""The Dagster jobs: one per stage group, so a deployment can launch a conversion, a triangulation, the
training chain or a benchmark on its own (the runner and the automation conditions need none of them)."""

import dagster as dg

from orchestration.asset_graph import partitions_definition
from orchestration.stages import pipeline_steps

JOB_DESCRIPTIONS = {
    "convert_datasets": ("dataset", "Convert one dataset (partition) into its canonical store and run its checks."),
    "triangulate_pseudo_gt": ("pseudo_gt", "Triangulate one multi-view 2D dataset (partition) into its pseudo-GT store."),
    "train_models": (None, "Training pool, initial model, all-skeleton pseudo-GT, autoencoder, final model."),
    "benchmark_models": ("benchmark", "Score the final and initial models on one test set (partition); append to "
                                      "the history."),
}
TRAINING_ASSETS = ("training_pool", "initial_model", "all_skeleton_pseudo_gt", "acae", "final_model")


def build_jobs(config, executor: dg.ExecutorDefinition) -> dict:
    """The jobs whose assets this configuration defines, by name."""
    defined = {name for name, _ in pipeline_steps(config)}
    jobs = {}
    for name, (asset, description) in JOB_DESCRIPTIONS.items():
        selected = [asset] if asset is not None else list(TRAINING_ASSETS)
        if defined.issuperset(selected):
            jobs[name] = dg.define_asset_job(name, selection=dg.AssetSelection.assets(*selected),
                                             partitions_def=partitions_definition(config, selected[0]),
                                             description=description, executor_def=executor)
    return jobs
