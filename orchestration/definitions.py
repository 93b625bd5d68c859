"""Dagster entry point: `dagster dev -m orchestration.definitions` (or `dagster dev` in the project root)."""

import os

import dagster as dg

from orchestration.config import load_config
from orchestration.dataset_assets import build_dataset_assets

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def build_definitions(config=None) -> dg.Definitions:
    config = config or load_config()
    partitions, dataset_defs = build_dataset_assets(config)
    convert_datasets = dg.define_asset_job(
        "convert_datasets", selection=dg.AssetSelection.assets("dataset"), partitions_def=partitions,
        description="Convert one dataset (partition) into its canonical store and run its checks.",
        executor_def=dg.in_process_executor)
    return dg.Definitions(assets=dataset_defs, jobs=[convert_datasets])


defs = build_definitions()
