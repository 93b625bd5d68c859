"""Settings of the model's fits as plain records, free of torch: the pipeline config
(``orchestration/config.py``) reads params.yaml straight into them without loading the model code.

``AcaeFitSettings``: how ``model.acae.fit_acae`` fits an affine-combining autoencoder (its docstring
says what each setting does; it also checks them against the data).
"""

from dataclasses import dataclass

# Defaults for CPU budgets, from a sweep on 100k poses x 165 joints (benchmarks/acae.py, 2 threads): on a
# CPU, small batches buy more Adam updates per second, and the number of updates is what the fit needs.
# batch 256 x 16000 steps: ~45 s, 3.9 mm held-out error; 1024 x 4000: 6.9 mm; 1024 x 16000: 4.2 mm;
# 256 x 24000: 3.8 mm. Decaying late beat decaying early at both lengths tried. The reference trains 30
# epochs at batch 32 with the same learning rates (3e-2, then two 10x decays).
DEFAULT_STEPS = 16000  # the length of a fit that gives neither steps nor epochs
# Decode-fill-encode rounds for poses with missing joints; on a known structure with 20% missing joints,
# 3 rounds left 1% of the joint spread as error, 5 rounds 0.3%, 10 rounds none measurable.
DEFAULT_IMPUTATION_ROUNDS = 8


@dataclass(frozen=True)
class AcaeFitSettings:
    """How ``model.acae.fit_acae`` fits an autoencoder; batch size and learning rates: the sweep above."""

    n_latent_sided: int = 40  # split evenly into left and right when chiral
    n_latent_center: int = 8
    chiral: bool = True
    sides: tuple[str, ...] | None = None  # 'left'/'right'/'center' per joint; None: from the joint names
    loss: str = "projected"  # or '3d'
    sparsity: float = 0.6
    steps: int | None = None  # at most one of steps and epochs; neither: DEFAULT_STEPS steps
    epochs: float | None = None
    batch_size: int = 256
    lr: float = 3e-2
    lr_decay_at: tuple[float, ...] = (0.8, 0.95)  # fractions of the run after which the learning rate drops 10x
    imputation_rounds: int = DEFAULT_IMPUTATION_ROUNDS
    init: str = "random"  # or 'principal'

    def __post_init__(self):
        # tuples, so that settings given as lists stay immutable and hashable
        if self.sides is not None:
            object.__setattr__(self, "sides", tuple(self.sides))
        object.__setattr__(self, "lr_decay_at", tuple(self.lr_decay_at))
