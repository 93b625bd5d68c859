"""The autoencoder experiment: does an ACAE fitted on all-skeleton pseudo-GT capture the relations between
skeleton formats? The synthetic world knows every format's TRUE joints, so this measures it against truth.

For every point of a sweep over the number of latents L and the sparsity weight λ, an affine-combining
autoencoder (``model.acae.fit_acae``) is fitted on the training poses (in the pipeline: the initial model's
all-skeleton pseudo-GT, camera frame) and scored by reconstructing complete poses (encode → decode) of

  truth               true poses of held-out subjects in every format (``held_out_true_poses``)
  pseudo_gt_held_out  every ``pseudo_gt_held_out_every``-th training pose, left out of every fit: the
                      training data's own distribution, errors and all
  pseudo_gt_fit       the complete poses the fits saw (where the closed forms below are optimal)

A small gap between the two held-out sets with a large truth error says the autoencoder reproduces the
pseudo-GT's own errors (they are baked in); the truth error is what it knows about the real relations.

Next to the ACAEs, for each L, three references fitted on the same complete training poses:

  affine_optimum  the closed-form best ACAE of the same shape without sparsity (``model/acae_init.py``):
                  the least-squares optimum over affine (and, when chiral, mirror-symmetric) encoder/decoder
                  pairs, so no fitted ACAE of that shape has a smaller squared error on the training poses.
  linear_optimum  the least-squares best rank-L linear joint-mixing map shared by x, y and z
                  (``RankLimitedJointMixing``): a bound without the affine, chirality and sparsity
                  constraints, which no L-latent ACAE can beat on the training poses.
  pca             PCA with 3·L coordinates (``evaluation.pose_pca.CentredPCA``): as many numbers per pose
                  as L latent points, but free per axis.

Errors (mm) per reconstructed joint: ``3d`` the Euclidean distance to the reference joint; ``perpendicular``
its component perpendicular to the viewing ray from the camera centre through the reference joint, the
part an image shows (depth errors excluded). Unlike the "projected" error of ``model.acae`` (image-plane
distance scaled by the pose's mean depth), it is never larger than the 3D error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from assets.joint_names import split_union_joint_name
from assets.locations import Location
from assets.skeletons import get_skeleton
from assets.synthetic import sample_all_formats
from assets.synthetic.rigs import look_at
from evaluation.acae_report import skeleton_masks, sparsity
from evaluation.experiment_files import json_text, write_files
from evaluation.plots import figure_png, plt
from evaluation.pose_pca import CentredPCA
from model.acae import fit_acae
from model.settings import DEFAULT_STEPS, AcaeFitSettings

EVALUATION_SETS = ("truth", "pseudo_gt_held_out", "pseudo_gt_fit")
METHOD_LABELS = {
    "acae": "ACAE (fitted)",
    "affine_optimum": "closed form: ACAE without sparsity",
    "linear_optimum": "closed form: best rank-L linear map",
    "pca": "PCA, 3·L coordinates",
}
REPORT_FILE, DATA_FILE = "autoencoder.md", "autoencoder.json"
LATENTS_PLOT_FILE, SPARSITY_PLOT_FILE = "autoencoder_error_vs_latents.png", "autoencoder_error_vs_sparsity.png"
_LENS = np.array([[1000.0, 0.0, 500.0], [0.0, 1000.0, 500.0], [0.0, 0.0, 1.0]])  # only the pose of the camera matters


@dataclass(frozen=True)
class AutoencoderExperimentSettings:
    """What the experiment fits. ``fit`` is the pipeline's autoencoder setting: its latent count
    (n_latent_sided + n_latent_center) and sparsity weight are the default point, which the sweeps always
    include; its steps, batch size, learning rate, loss and chirality apply to every fit. Other latent
    counts keep its sided/centre proportion (sided rounded to an even number, split left/right)."""

    latent_counts: tuple[int, ...] = (16, 32, 48, 64)
    sparsity_weights: tuple[float, ...] = (0.0, 0.1, 0.3, 0.6, 1.0)
    full_grid: bool = True  # every (latents, sparsity) pair; False: each sweep only through the default point
    fit: AcaeFitSettings = AcaeFitSettings(steps=2000)
    pseudo_gt_held_out_every: int = 10  # as the acae asset holds out its pseudo-GT
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "latent_counts", tuple(int(n) for n in self.latent_counts))
        object.__setattr__(self, "sparsity_weights", tuple(float(w) for w in self.sparsity_weights))
        if not isinstance(self.fit, AcaeFitSettings):
            raise TypeError(f"fit: expected an AcaeFitSettings, got {type(self.fit).__name__}")
        if any(n < 1 for n in self.latent_counts) or any(not w >= 0 for w in self.sparsity_weights):
            raise ValueError(f"need latent counts >= 1 and sparsity weights >= 0, got {self.latent_counts} and "
                             f"{self.sparsity_weights}")
        if self.pseudo_gt_held_out_every < 2:
            raise ValueError(f"pseudo_gt_held_out_every must be >= 2 (1 would hold out everything), "
                             f"got {self.pseudo_gt_held_out_every}")

    @property
    def default_latents(self) -> int:
        return self.fit.n_latent_sided + self.fit.n_latent_center

    @property
    def default_sparsity(self) -> float:
        return self.fit.sparsity

    def latent_split(self, latents: int) -> tuple[int, int]:
        """(sided, centre) latents for a total of ``latents``."""
        if latents == self.default_latents:
            return self.fit.n_latent_sided, self.fit.n_latent_center
        sided_share = self.fit.n_latent_sided / self.default_latents
        sided = min(2 * math.floor(latents * sided_share / 2 + 0.5), latents - latents % 2)
        return sided, latents - sided

    def latent_sweep(self) -> list[int]:
        return sorted(set(self.latent_counts) | {self.default_latents})

    def fit_points(self) -> list[tuple[int, float]]:
        """(latents, sparsity weight) of every ACAE to fit, sorted."""
        weights = sorted(set(self.sparsity_weights) | {self.default_sparsity})
        if self.full_grid:
            return [(latents, weight) for latents in self.latent_sweep() for weight in weights]
        return sorted({(latents, self.default_sparsity) for latents in self.latent_sweep()}
                      | {(self.default_latents, weight) for weight in weights})


# ~700 joints (every built-in format) x ~10k poses: 20 fits of 2000 steps, 33-45 s each; 939 s in all, with
# one torch thread on a shared 2-core machine under load (2 threads there stalled; unloaded, 2 threads
# ran 48 latents at ~14 ms a step, ~30 s a fit)
SMALL = AutoencoderExperimentSettings()
# seconds, for tests: three latent counts around a 10+2 default, two sparsity weights
TINY = AutoencoderExperimentSettings(latent_counts=(6, 18), sparsity_weights=(0.0,),
                                     fit=AcaeFitSettings(n_latent_sided=10, n_latent_center=2, sparsity=0.6,
                                                         steps=60, batch_size=64))


# ---------------------------------------------------------------------------------------------------
# Held-out truth from the synthetic world
# ---------------------------------------------------------------------------------------------------
def held_out_true_poses(
    joint_names: Sequence[str],
    count: int,
    seed: int = 0,
    *,
    poses_per_subject: int = 50,
    distance_mm: tuple[float, float] = (3000.0, 6000.0),
    camera_height_mm: tuple[float, float] = (500.0, 2500.0),
) -> np.ndarray:
    """TRUE poses [count, J, 3] (camera-frame mm) of the demo body, every joint of ``joint_names``
    ('<joint>_<format>', formats of ``assets.skeletons``), row n the same body and pose in every format.

    Poses come from ``assets.synthetic.sample_all_formats`` (a new random subject every
    ``poses_per_subject`` poses, a random motion each). Its subjects are drawn from streams keyed
    ("sample_all_formats", ...), the demo datasets' from their dataset and subject names, so none of these
    people is in a demo dataset, whatever the seed. Each pose gets its own camera, at a random azimuth
    around the person (whose heading is random too), ``distance_mm`` away horizontally and
    ``camera_height_mm`` above the ground, aimed near the body with a slight roll.
    """
    parts = [split_union_joint_name(name) for name in joint_names]
    formats = tuple(dict.fromkeys(skeleton for _, skeleton in parts))
    world_by_format = sample_all_formats(count, seed=seed, formats=formats, poses_per_subject=poses_per_subject)
    world = np.stack([world_by_format[skeleton][:, get_skeleton(skeleton).joint_names.index(joint)]
                      for joint, skeleton in parts], axis=1)
    rng = np.random.default_rng(seed)
    camera_frame = np.empty_like(world, dtype=np.float64)
    for n, pose in enumerate(world):
        centroid = pose.mean(0)
        azimuth, distance = rng.uniform(0, 2 * np.pi), rng.uniform(*distance_mm)
        position = np.array([centroid[0] + distance * np.cos(azimuth), centroid[1] + distance * np.sin(azimuth),
                             rng.uniform(*camera_height_mm)])
        camera = look_at(_LENS, np.zeros(5), position, centroid + rng.normal(0, 150, 3), roll=rng.normal(0, 0.05))
        camera_frame[n] = camera.world_to_camera(pose)
    return camera_frame


# ---------------------------------------------------------------------------------------------------
# The unconstrained closed form and the errors
# ---------------------------------------------------------------------------------------------------
class RankLimitedJointMixing:
    """The least-squares best rank-L linear map of joints to joints, shared by x, y and z.

    Write the training poses as rows a ∈ ℝ^J, one per pose and axis (camera frame, not centred). Over all
    J×J matrices R of rank ≤ L, the sum of ‖a − a·R‖² is smallest for R = V_L·V_Lᵀ, the projection onto the
    top L right-singular vectors of the row matrix (Eckart–Young). An L-latent ACAE maps a complete pose by
    a·W_e·W_d, a linear map of rank ≤ L shared by the axes, so on the training poses none of them has a
    smaller squared error: this is that bound without the affine (weights sum to 1), chirality and
    sparsity constraints. It is a bound in squared error (RMS), and is not translation-equivariant; on other
    poses it is only a reference. The subspaces are nested, so more latents never reconstruct any pose-axis
    row worse.
    """

    def __init__(self, poses: np.ndarray):
        poses = np.asarray(poses, dtype=np.float64)
        if poses.ndim != 3 or poses.shape[-1] != 3 or not np.isfinite(poses).all():
            raise ValueError(f"need complete poses [N, J, 3] without NaN, got an array of shape {poses.shape}")
        rows = poses.transpose(0, 2, 1).reshape(-1, poses.shape[1])
        _, vectors = np.linalg.eigh(rows.T @ rows)  # ascending eigenvalues
        self.directions = vectors[:, ::-1]
        self.max_rank = min(rows.shape)

    def check_rank(self, rank: int) -> None:
        if not 1 <= rank <= self.max_rank:
            raise ValueError(f"rank must be in 1..{self.max_rank} (the training rows' rank bound), got {rank}")

    def reconstruct(self, poses: np.ndarray, rank: int) -> np.ndarray:
        self.check_rank(rank)
        basis = self.directions[:, :rank]
        axis_rows = np.asarray(poses, dtype=np.float64).transpose(0, 2, 1)
        return (axis_rows @ basis @ basis.T).transpose(0, 2, 1)


def ray_errors(reference: np.ndarray, reconstructed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([N, J] 3D error, [N, J] error perpendicular to the viewing ray) in mm, for camera-frame poses: the
    ray runs from the camera centre (the origin) through the reference joint."""
    difference = np.asarray(reconstructed, dtype=np.float64) - reference
    ray = reference / np.linalg.norm(reference, axis=-1, keepdims=True)
    along_ray = np.sum(difference * ray, axis=-1, keepdims=True)
    return np.linalg.norm(difference, axis=-1), np.linalg.norm(difference - along_ray * ray, axis=-1)


def _scores(reference: np.ndarray, reconstructed: np.ndarray, masks: dict[str, np.ndarray]) -> dict:
    error_3d, error_perpendicular = ray_errors(reference, reconstructed)
    return {
        "poses": len(reference),
        "error_3d_mm": float(error_3d.mean()),
        "error_perpendicular_mm": float(error_perpendicular.mean()),
        "rms_3d_mm": float(np.sqrt(np.mean(error_3d ** 2))),
        "per_format": {skeleton: {"joints": int(mask.sum()), "error_3d_mm": float(error_3d[:, mask].mean()),
                                  "error_perpendicular_mm": float(error_perpendicular[:, mask].mean())}
                       for skeleton, mask in masks.items()},
    }


def _complete(poses: np.ndarray) -> np.ndarray:
    return poses[np.isfinite(poses).all(axis=(1, 2))]


# ---------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------
@dataclass
class ExperimentResult:
    """``rows``: one per (method, latents, sparsity weight, evaluation set) with keys method (a
    ``METHOD_LABELS`` key), latents, n_latent_sided, n_latent_center, sparsity_weight (None where the
    method has none), evaluated_on (an ``EVALUATION_SETS`` entry), poses, error_3d_mm,
    error_perpendicular_mm, rms_3d_mm, per_format ({format: {joints, error_3d_mm, error_perpendicular_mm}}),
    encoder_sparsity and decoder_sparsity (share of |weight| < 1e-3; None without weights), fit_seconds,
    and ``note`` instead of errors where the data cannot support a reference."""

    rows: list[dict]
    settings: AutoencoderExperimentSettings
    counts: dict  # joints, formats and poses per evaluation set
    seconds: float

    def find(self, method: str, latents: int, evaluated_on: str = "truth", sparsity_weight: float | None = None) -> dict | None:
        for row in self.rows:
            if (row["method"], row["latents"], row["evaluated_on"], row["sparsity_weight"]) == \
                    (method, latents, evaluated_on, sparsity_weight):
                return row
        return None

    def markdown(self) -> str:
        settings, counts = self.settings, self.counts
        fit = settings.fit
        lines = [
            "# Autoencoder experiment: ACAE on pseudo-GT, measured against the truth", "",
            f"{counts['joints']} joints of {counts['formats']} formats. Every ACAE is fitted on "
            f"{counts['pseudo_gt_fit']} pseudo-GT poses ({_length(fit)}, batch {fit.batch_size}, {fit.loss} loss, "
            f"{'chiral' if fit.chiral else 'non-chiral'}); the references on the {counts['pseudo_gt_fit_complete']} "
            f"complete ones. Errors in mm on {counts['truth']} TRUE poses of held-out subjects (\"truth\") and on "
            f"{counts['pseudo_gt_held_out']} held-out pseudo-GT poses (every {settings.pseudo_gt_held_out_every}th, "
            "\"pseudo-GT\").", "",
            "- 3D: mean per-joint Euclidean error of the reconstruction (encode → decode of the complete pose).",
            "- ⊥ ray: its component perpendicular to the ray from the camera centre through the reference joint "
            "(what an image shows; depth errors excluded).",
            "- encoder sparsity: share of encoder weights with |w| < 1e-3.",
            "- closed form: ACAE without sparsity: the least-squares best affine ACAE of the same shape; no fitted "
            "ACAE of that shape has a smaller squared error on the training poses.",
            "- closed form: best rank-L linear map: the least-squares best rank-L joint-mixing map shared by x, y, z "
            "(SVD of the training poses), without the affine, chirality and sparsity constraints: a bound for every "
            "L-latent ACAE on the training poses.",
            "- PCA, 3·L coordinates: as many numbers per pose as L latent points, free per axis.",
            f"- **bold**: the pipeline's setting ({settings.default_latents} latents, sparsity weight "
            f"{settings.default_sparsity:g}).", "",
            "| method | latents (sided+centre) | sparsity weight | 3D, truth | ⊥ ray, truth | 3D, pseudo-GT | "
            "⊥ ray, pseudo-GT | encoder sparsity |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            if row["evaluated_on"] != "truth":
                continue
            own = self.find(row["method"], row["latents"], "pseudo_gt_held_out", row["sparsity_weight"])
            method = METHOD_LABELS[row["method"]]
            if row["method"] == "acae" and (row["latents"], row["sparsity_weight"]) == \
                    (settings.default_latents, settings.default_sparsity):
                method = f"**{method}**"
            weight = "" if row["sparsity_weight"] is None else f"{row['sparsity_weight']:g}"
            share = "" if row["encoder_sparsity"] is None else f"{row['encoder_sparsity']:.0%}"
            lines.append(f"| {method} | {row['latents']} ({row['n_latent_sided']}+{row['n_latent_center']}) | "
                         f"{weight} | {_cell(row, 'error_3d_mm')} | {_cell(row, 'error_perpendicular_mm')} | "
                         f"{_cell(own, 'error_3d_mm')} | {_cell(own, 'error_perpendicular_mm')} | {share} |")
        lines += ["", *self._per_format_markdown()]
        return "\n".join(lines) + "\n"

    def _per_format_markdown(self) -> list[str]:
        latents, weight = self.settings.default_latents, self.settings.default_sparsity
        columns = [("acae", weight), ("affine_optimum", 0.0), ("linear_optimum", None), ("pca", None)]
        rows = [self.find(method, latents, "truth", sparsity_weight) for method, sparsity_weight in columns]
        lines = [f"## Per format, {latents} latents, on the truth", "",
                 f"Each cell: 3D / ⊥ ray error (mm); the ACAE with sparsity weight {weight:g}.", "",
                 "| format | joints | " + " | ".join(METHOD_LABELS[m] for m, _ in columns) + " |",
                 "|---|---|" + "---|" * len(columns)]
        formats = next((row["per_format"] for row in rows if row is not None and "per_format" in row), {})
        for skeleton, entry in formats.items():
            cells = [_pair(row["per_format"][skeleton]) if row is not None and "per_format" in row else "—"
                     for row in rows]
            lines.append(f"| {skeleton} | {entry['joints']} | " + " | ".join(cells) + " |")
        lines.append(f"| all | {self.counts['joints']} | "
                     + " | ".join(_pair(row) if row is not None and "note" not in row else "—" for row in rows) + " |")
        return lines

    def plots_png(self) -> dict[str, bytes]:
        """{file name: PNG}: error on the truth against the number of latents (ACAE per sparsity weight and
        the references) and against the sparsity weight (ACAE per latent count, truth and held-out pseudo-GT)."""
        return {LATENTS_PLOT_FILE: self._latents_plot(), SPARSITY_PLOT_FILE: self._sparsity_plot()}

    def _series(self, method: str, evaluated_on: str, sparsity_weight=None, latents=None) -> list[dict]:
        return [row for row in self.rows if row["method"] == method and row["evaluated_on"] == evaluated_on
                and "note" not in row and (sparsity_weight is None or row["sparsity_weight"] == sparsity_weight)
                and (latents is None or row["latents"] == latents)]

    def _latents_plot(self) -> bytes:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
        weights = sorted({row["sparsity_weight"] for row in self._series("acae", "truth")})
        colours = plt.cm.viridis(np.linspace(0, 0.85, max(len(weights), 1)))
        for panel, key, title in ((axes[0], "error_3d_mm", "3D error"), (axes[1], "error_perpendicular_mm", "⊥ ray error")):
            for weight, colour in zip(weights, colours):
                rows = self._series("acae", "truth", sparsity_weight=weight)
                panel.plot([r["latents"] for r in rows], [r[key] for r in rows], "o-", color=colour,
                           label=f"ACAE, sparsity weight {weight:g}")
            for method, style in (("affine_optimum", "--s"), ("linear_optimum", "--^"), ("pca", "-.D")):
                rows = self._series(method, "truth")
                panel.plot([r["latents"] for r in rows], [r[key] for r in rows], style,
                           color="k" if method == "affine_optimum" else None, label=METHOD_LABELS[method])
            _finish(panel, f"{title} on held-out true poses", "latents L", "mm")
        axes[1].legend(fontsize=7)
        return figure_png(figure)

    def _sparsity_plot(self) -> bytes:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
        latent_counts = sorted({row["latents"] for row in self._series("acae", "truth")})
        colours = plt.cm.plasma(np.linspace(0, 0.85, max(len(latent_counts), 1)))
        for panel, key, title in ((axes[0], "error_3d_mm", "3D error"), (axes[1], "error_perpendicular_mm", "⊥ ray error")):
            for latents, colour in zip(latent_counts, colours):
                for evaluated_on, style, what in (("truth", "o-", "truth"), ("pseudo_gt_held_out", "x--", "pseudo-GT")):
                    rows = self._series("acae", evaluated_on, latents=latents)
                    panel.plot([r["sparsity_weight"] for r in rows], [r[key] for r in rows], style, color=colour,
                               label=f"L={latents}, {what}")
                for optimum in self._series("affine_optimum", "truth", latents=latents):
                    panel.axhline(optimum[key], color=colour, linestyle=":", linewidth=1)
            _finish(panel, f"ACAE {title}", "sparsity weight λ", "mm")
        figure.suptitle("solid: held-out truth · dashed: held-out pseudo-GT · dotted: closed form without "
                        "sparsity, on the truth", fontsize=9)
        axes[1].legend(fontsize=7, ncol=2)
        return figure_png(figure)

    def to_json(self) -> str:
        document = {"settings": asdict(self.settings), "counts": self.counts, "seconds": self.seconds,
                    "rows": self.rows}
        return json_text(document)

    def write(self, folder) -> list[Location]:
        """``autoencoder.md``, ``autoencoder.json`` and the plots in ``folder``, each file written atomically."""
        return write_files(folder, {REPORT_FILE: self.markdown().encode(), DATA_FILE: self.to_json().encode(),
                                    **self.plots_png()})


def _length(fit: AcaeFitSettings) -> str:
    if fit.epochs is not None:
        return f"{fit.epochs:g} epochs"
    return f"{DEFAULT_STEPS if fit.steps is None else fit.steps} steps"


def _cell(row: dict | None, key: str) -> str:
    if row is None:
        return "—"
    return "not computed" if "note" in row else f"{row[key]:.2f}"


def _pair(entry: dict) -> str:
    return f"{entry['error_3d_mm']:.2f} / {entry['error_perpendicular_mm']:.2f}"


def _finish(panel, title: str, xlabel: str, ylabel: str) -> None:
    panel.set(title=title, xlabel=xlabel, ylabel=ylabel)
    values = [y for line in panel.get_lines() for y in line.get_ydata()]
    if values and min(values) > 0 and max(values) > 10 * min(values):  # methods orders of magnitude apart
        panel.set_yscale("log")
        panel.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        panel.yaxis.set_major_formatter(ScalarFormatter())
        panel.yaxis.set_minor_formatter(NullFormatter())
    panel.grid(alpha=0.3)
    panel.title.set_fontsize(9)


def run_autoencoder_experiment(
    train_poses: np.ndarray,
    joint_names: Sequence[str],
    held_out_poses: np.ndarray,
    settings: AutoencoderExperimentSettings = SMALL,
    progress: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Fit the sweep's ACAEs and the references and score them (module docstring).

    ``train_poses`` [N, J, 3] camera-frame mm, NaN = missing joint (the ACAEs use incomplete poses, the
    references and all scores complete ones); every ``settings.pseudo_gt_held_out_every``-th pose is held
    out of all fits. ``joint_names``: '<joint>_<format>' per joint. ``held_out_poses`` [M, J, 3]: complete
    true poses in the same joint order and frame (``held_out_true_poses``). ``progress`` gets one line per
    fit and the fits' own progress reports.
    """
    started = time.perf_counter()
    joint_names = [str(name) for name in joint_names]
    train_poses = np.asarray(train_poses, dtype=np.float64)
    truth = np.asarray(held_out_poses, dtype=np.float64)
    for what, poses in (("train_poses", train_poses), ("held_out_poses", truth)):
        if poses.ndim != 3 or poses.shape[1:] != (len(joint_names), 3):
            raise ValueError(f"{what}: expected [N, {len(joint_names)}, 3] for {len(joint_names)} joint names, "
                             f"got {poses.shape}")
    if len(truth) == 0 or not np.isfinite(truth).all():
        raise ValueError("held_out_poses must be at least one complete pose (true poses have every joint)")
    report = progress or (lambda message: None)
    held_out = np.arange(len(train_poses)) % settings.pseudo_gt_held_out_every == 0
    fit_poses = train_poses[~held_out]
    complete_fit = _complete(fit_poses)
    evaluation_sets = {"truth": truth, "pseudo_gt_held_out": _complete(train_poses[held_out]),
                       "pseudo_gt_fit": complete_fit}
    masks = skeleton_masks(joint_names)

    rows: list[dict] = []

    def add_rows(method: str, latents: int, sparsity_weight, reconstruct, model=None, fit_seconds=None,
                 note=None) -> list[dict]:
        """One row per evaluation set (truth first); returns them."""
        sided, centre = settings.latent_split(latents)
        shares = sparsity(model) if model is not None else {"encoder": None, "decoder": None}
        added = [{"method": method, "latents": latents, "n_latent_sided": sided, "n_latent_center": centre,
                  "sparsity_weight": sparsity_weight, "evaluated_on": evaluated_on,
                  "encoder_sparsity": shares["encoder"], "decoder_sparsity": shares["decoder"],
                  "fit_seconds": fit_seconds}
                 | ({"poses": len(poses), "note": note} if note else _scores(poses, reconstruct(poses), masks))
                 for evaluated_on, poses in evaluation_sets.items() if len(poses)]
        rows.extend(added)
        return added

    def add_reference(method: str, latents: int, sparsity_weight, fit_reference) -> None:
        """A reference the data cannot support (too few complete poses) gets rows with a note, not a failure."""
        fit_started = time.perf_counter()
        try:
            reconstruct, model = fit_reference(latents)
        except ValueError as error:
            add_rows(method, latents, sparsity_weight, None, note=f"not computed: {error}")
        else:
            add_rows(method, latents, sparsity_weight, reconstruct, model, time.perf_counter() - fit_started)

    def fit_settings(latents: int, sparsity_weight: float, **overrides) -> AcaeFitSettings:
        sided, centre = settings.latent_split(latents)
        return replace(settings.fit, n_latent_sided=sided, n_latent_center=centre, sparsity=sparsity_weight, **overrides)

    def affine_optimum(latents: int):
        model = fit_acae(complete_fit, joint_names, fit_settings(latents, 0.0, init="principal", steps=0, epochs=None),
                         seed=settings.seed)
        return model.reconstruct, model

    linear = RankLimitedJointMixing(complete_fit) if len(complete_fit) else None

    def linear_optimum(latents: int):
        if linear is None:
            raise ValueError("no complete training pose")
        linear.check_rank(latents)  # here, so that an unsupported rank becomes a note
        return (lambda poses: linear.reconstruct(poses, latents)), None

    def pca(latents: int):
        return CentredPCA(complete_fit, 3 * latents).reconstruct, None

    points = settings.fit_points()
    for latents in settings.latent_sweep():
        for weight in (w for n, w in points if n == latents):
            label = f"ACAE {latents} latents, sparsity weight {weight:g}"
            fit_started = time.perf_counter()
            model = fit_acae(fit_poses, joint_names, fit_settings(latents, weight), seed=settings.seed,
                             progress=(lambda p, label=label: report(f"{label}: {p}")) if progress else None)
            on_truth = add_rows("acae", latents, weight, model.reconstruct, model, time.perf_counter() - fit_started)[0]
            report(f"{label}: {on_truth['error_3d_mm']:.2f} mm 3D, {on_truth['error_perpendicular_mm']:.2f} mm "
                   f"⊥ ray on the truth ({time.perf_counter() - started:.0f} s so far)")
        add_reference("affine_optimum", latents, 0.0, affine_optimum)
        add_reference("linear_optimum", latents, None, linear_optimum)
        add_reference("pca", latents, None, pca)
    counts = {"joints": len(joint_names), "formats": len(masks), "pseudo_gt_fit": len(fit_poses),
              "pseudo_gt_fit_complete": len(complete_fit), "pseudo_gt_held_out": len(evaluation_sets["pseudo_gt_held_out"]),
              "truth": len(truth)}
    return ExperimentResult(rows=rows, settings=settings, counts=counts, seconds=time.perf_counter() - started)

