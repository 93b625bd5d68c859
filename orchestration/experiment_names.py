"""The experiments `dozens experiments` runs and their sizes, apart from their Dagster assets
(``experiment_assets``) so that the command line lists them without importing Dagster."""

EXPERIMENTS = ("autoencoder_experiment",)
SIZES = ("small", "tiny")  # small: the README's tables (about 15 min on 2 cores); tiny: seconds, for tests
