"""PCA of whole poses: the linear baseline the affine-combining autoencoder is measured against."""

import numpy as np


class CentredPCA:
    """PCA of flattened [J, 3] poses after removing each pose's centroid over the joints.

    The centroid is restored exactly on reconstruction, so, like the ACAE with its affine weights, PCA
    gets translation for free; it must still model global rotation, which the ACAE is equivariant to.
    Fit on complete poses only (no NaN).
    """

    def __init__(self, poses: np.ndarray, n_components: int):
        poses = np.asarray(poses)
        if poses.ndim != 3 or poses.shape[-1] != 3:
            raise ValueError(f"poses must have shape [N, J, 3], got {poses.shape}")
        if not np.isfinite(poses).all():
            raise ValueError("PCA needs complete poses: drop the ones with missing (NaN) joints first")
        if not 1 <= n_components <= min(len(poses) - 1, poses.shape[1] * 3):
            raise ValueError(f"n_components must be in 1..{min(len(poses) - 1, poses.shape[1] * 3)} for "
                             f"{len(poses)} poses of {poses.shape[1]} joints, got {n_components}")
        flat = self._centre(poses)[0].reshape(len(poses), -1)
        self.mean = flat.mean(0)
        covariance = np.cov(flat - self.mean, rowvar=False)
        _, vectors = np.linalg.eigh(covariance)  # ascending eigenvalues
        self.components = vectors[:, ::-1][:, :n_components]

    @staticmethod
    def _centre(poses: np.ndarray):
        poses = poses.astype(np.float64)
        centroid = poses.mean(1, keepdims=True)
        return poses - centroid, centroid

    def reconstruct(self, poses: np.ndarray) -> np.ndarray:
        centred, centroid = self._centre(np.asarray(poses))
        flat = centred.reshape(len(centred), -1) - self.mean
        restored = (flat @ self.components) @ self.components.T + self.mean
        return restored.reshape(centred.shape) + centroid
