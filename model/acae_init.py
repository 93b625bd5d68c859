"""Closed-form starting point for the affine-combining autoencoder: the best one without sparsity, in L2.

With the sparsity weight at 0 and a squared 3D loss the ACAE problem has a closed-form optimum. Write the
poses as rows a ∈ ℝ^J (one row per pose and axis, since x, y and z share the weights); the autoencoder
maps a ↦ a·E·D. For a decoder D [L, J] of full row rank whose columns sum to 1, the best encoder is
E = D⁺ (its columns then sum to 1 as well: 1ᵀD⁺ = 1ᵀD·D⁺ = 1ᵀ), and E·D is the orthogonal projection onto
the row space of D, which must contain the constant vector (1ᵀD = 1ᵀ). The best row space is therefore
the constant plus the top L-1 principal directions of the centred rows: PCA in joint space. Poses built
from rigid parts are almost exactly reproduced this way, while gradient descent from a random start
gets stuck far from it (benchmarks/acae.py); fitting starts here and then optimises the real objective
(L1, projected loss, sparsity).

With chiral weight sharing the row space must also be mirror-symmetric: its basis is taken from the
mirror-symmetric and the mirror-antisymmetric parts of the data separately (k antisymmetric directions
for k latent pairs), and each latent pair is (s + a, s - a), so mirroring swaps the pair exactly.

Everything here is in the internal joint order [left pairs (n), right pairs (n), centre (m)] and latent
order [left (k), right (k), centre (c)] of ``model/acae.py``.
"""

import numpy as np

MAX_ROWS = 200_000  # pose-axis rows used for the covariance; more add nothing to a J x J estimate


def principal_affine_weights(
    rows: np.ndarray, n_pairs: int, n_center: int, k: int, c: int, chiral: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """(encoder [J, L], decoder [L, J]) of the L2-optimal affine autoencoder for ``rows`` [R, J] (complete
    joints, internal order), or None when the data cannot support it (too few rows, rank deficiency)."""
    joints = 2 * n_pairs + n_center
    latents = 2 * k + c
    if rows.ndim != 2 or rows.shape[1] != joints or len(rows) < latents or latents < 1:
        return None
    if len(rows) > MAX_ROWS:
        rows = rows[np.linspace(0, len(rows) - 1, MAX_ROWS).astype(np.int64)]
    centred = rows.astype(np.float64) - rows.mean(axis=1, keepdims=True)
    constant = np.full(joints, 1.0 / np.sqrt(joints))
    if chiral:
        basis = _chiral_basis(centred, n_pairs, n_center, k, c, constant)
    else:
        directions = _top_directions(centred, latents - 1)
        basis = np.concatenate([constant[None], directions]) if directions is not None else None
    if basis is None:
        return None
    decoder = _with_unit_column_sums(basis)
    if np.linalg.matrix_rank(decoder) < latents:
        return None
    encoder = np.linalg.pinv(decoder)
    if chiral:  # remove rounding asymmetry, so the chiral blocks read off below are exact
        encoder = _symmetrise(encoder, n_pairs, k)
    return encoder, decoder


def _top_directions(centred: np.ndarray, count: int) -> np.ndarray | None:
    """Top ``count`` right-singular vectors [count, D] of ``centred`` [R, D] (None if not enough)."""
    if count == 0:
        return np.zeros((0, centred.shape[1]))
    if count > min(centred.shape):
        return None
    covariance = centred.T @ centred
    values, vectors = np.linalg.eigh(covariance)
    return vectors[:, ::-1][:, :count].T


def _chiral_basis(centred, n_pairs, n_center, k, c, constant) -> np.ndarray | None:
    """Rows [left k, right k, centre c] spanning the constant, k + c - 1 symmetric and k antisymmetric
    principal directions, with right = mirror(left)."""
    left, right, center = centred[:, :n_pairs], centred[:, n_pairs:2 * n_pairs], centred[:, 2 * n_pairs:]
    # orthonormal coordinates of the symmetric (u, u, w) and antisymmetric (u, -u, 0) subspaces
    symmetric = np.concatenate([(left + right) / np.sqrt(2), center], axis=1)
    antisymmetric = (left - right) / np.sqrt(2)
    sym_constant = np.concatenate([np.sqrt(2) * constant[:n_pairs], constant[2 * n_pairs:]])
    # the rows are centred, so the constant has no variance and is not among the top directions
    sym_dirs = _top_directions(symmetric, k + c - 1)
    anti_dirs = _top_directions(antisymmetric, k)
    if sym_dirs is None or anti_dirs is None:
        return None
    sym_dirs = np.concatenate([sym_constant[None], sym_dirs])  # [k + c, n + m]

    def from_symmetric(v):
        return np.concatenate([v[:n_pairs] / np.sqrt(2), v[:n_pairs] / np.sqrt(2), v[n_pairs:]])

    def from_antisymmetric(v):
        return np.concatenate([v / np.sqrt(2), -v / np.sqrt(2), np.zeros(n_center)])

    sym = np.array([from_symmetric(v) for v in sym_dirs])
    anti = np.array([from_antisymmetric(v) for v in anti_dirs]).reshape(k, len(constant))
    pairs_left = sym[:k] + anti
    pairs_right = sym[:k] - anti
    return np.concatenate([pairs_left, pairs_right, sym[k:]])


def _with_unit_column_sums(basis: np.ndarray) -> np.ndarray:
    """Rows with the same span whose columns sum to 1: add (1 - column sums) / L to every row.

    This is D = M·B with M = I + 1·(α - 1)ᵀ / L, where α are the coefficients of the constant vector in the
    basis; M is invertible because Σα ≠ 0, and it commutes with swapping mirrored latents, so the span and
    the mirror symmetry are kept. (Adding the whole amount to one row would cancel that row.)
    """
    return basis + (1.0 - basis.sum(axis=0)) / len(basis)


def _symmetrise(encoder: np.ndarray, n_pairs: int, k: int) -> np.ndarray:
    """Average ``encoder`` [J, L] with its mirror image (swap left/right joints and latents)."""
    joints = np.r_[n_pairs:2 * n_pairs, 0:n_pairs, 2 * n_pairs:encoder.shape[0]]
    latents = np.r_[k:2 * k, 0:k, 2 * k:encoder.shape[1]]
    return (encoder + encoder[joints][:, latents]) / 2


def chiral_blocks(matrix: np.ndarray, n_pairs: int, k: int) -> dict[str, np.ndarray]:
    """The raw-parameter blocks S, Q, X, C, Z of a chiral [J, L] matrix (see ``_RawCombination``)."""
    return {
        "same_side": matrix[:n_pairs, :k], "opposite_side": matrix[:n_pairs, k:2 * k],
        "sided_to_center": matrix[:n_pairs, 2 * k:], "center_to_sided": matrix[2 * n_pairs:, :k],
        "center_to_center": matrix[2 * n_pairs:, 2 * k:],
    }
