"""The training pool: one row per example the training runs draw from, with its store and batch part."""

from collections.abc import Sequence

import polars as pl

from assets.store import open_store
from model.data import Source


def build_training_pool(sources: Sequence[Source]) -> pl.DataFrame:
    frames = []
    for source in sources:
        store = open_store(source.store_path)
        frames.append(store.index().with_columns(pl.lit(str(source.store_path)).alias("store"),
                                                 pl.lit(source.part).alias("part"),
                                                 pl.lit(store.attrs["skeleton"]).alias("skeleton")))
    return pl.concat(frames, how="vertical_relaxed")
