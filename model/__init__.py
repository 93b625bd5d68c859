"""Torch models: the MeTRAbs-style pose estimator and the affine-combining autoencoder.

``model.load(path).predict(crops, intrinsics, skeleton="smpl_24")`` runs a trained estimator.
"""


def load(path, map_location="cpu"):
    from model.estimator import PoseEstimator  # torch is imported only when a model is used

    return PoseEstimator.load(path, map_location)
