"""The experiments `dozens experiments` runs and their sizes, apart from their Dagster assets
(``experiment_assets``) so that the command line lists them without importing Dagster."""

EXPERIMENTS = ("autoencoder_experiment", "consistency_experiment", "scaling_experiment")
# small: the README's tables (on 2 cores: the autoencoder about 15 min, the consistency and scaling
# experiments under an hour each); tiny: seconds, for tests
SIZES = ("small", "tiny")
