"""The user-facing pose estimator: a trained network plus how its outputs become each skeleton's joints.

Training modes differ in what the network's head predicts (method.md §7):
- ``separate`` / ``consistency``: every skeleton's joints directly (the union of all formats);
- ``latent``: the autoencoder's latent keypoints, decoded into all joints by its decoder;
- ``hybrid``: latents and joints; inference uses the decoded latents.

``load(path).predict(crops, intrinsics, skeleton="smpl_24")`` gives camera-frame millimetres for person
crops; ``load(path).detect_poses(image, skeleton="smpl_24")`` finds and estimates everyone in a whole image.
"""

import json

import numpy as np
import torch
from torch import Tensor

from assets.joint_names import skeleton_joint_indices, split_union_joint_name
from assets.locations import Location, location
from model.checkpoints import load_checked, model_file_kind, reading_contents
from model.network import MetrabsConfig, MetrabsModel
from model.persistence import save_torch_atomic

MODES = ("separate", "consistency", "latent", "hybrid")
_FORMAT_TAG = "dozens.pose_estimator"
_FORMAT_VERSION = 1
ESTIMATOR_FILE = model_file_kind("a dozens pose estimator file", _FORMAT_TAG, _FORMAT_VERSION)


def latent_point_names(latent_sides) -> tuple[str, ...]:
    """Head output names for ACAE latents; the l/r prefix makes flip augmentation mirror them correctly."""
    prefix = {"left": "l", "right": "r"}
    counters: dict[str, int] = {}
    names = []
    for side in latent_sides:
        k = counters.get(side, 0)
        counters[side] = k + 1
        names.append(f"{prefix.get(side, 'c')}latent{k:02d}")
    return tuple(names)


class PoseEstimator(torch.nn.Module):
    def __init__(self, network: MetrabsModel, mode: str, joint_names, decoder_weights: np.ndarray | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if mode in ("latent", "hybrid") and decoder_weights is None:
            raise ValueError(f"mode {mode!r} needs the autoencoder's decoder_weights [L, J]")
        self.network = network
        self.mode = mode
        self.joint_names = tuple(joint_names)
        decoder = torch.zeros(0, len(self.joint_names)) if decoder_weights is None else \
            torch.as_tensor(np.asarray(decoder_weights), dtype=torch.float32)
        if decoder_weights is not None and decoder.shape[1] != len(self.joint_names):
            raise ValueError(f"decoder_weights: expected shape [L, {len(self.joint_names)}], got {tuple(decoder.shape)}")
        self.register_buffer("decoder", decoder)

    @property
    def num_latents(self) -> int:
        return int(self.decoder.shape[0])

    def joints_from_outputs(self, points: Tensor) -> dict[str, Tensor]:
        """Network output points [B, P, D] → {"joints": the mode's joint estimate [B, J, D], and for the
        hybrid mode also "direct": the head's own joint outputs}."""
        if self.mode in ("separate", "consistency"):
            return {"joints": points}
        latents = points[:, :self.num_latents]
        decoded = torch.einsum("lj,bld->bjd", self.decoder.to(points.dtype), latents)
        if self.mode == "latent":
            return {"joints": decoded, "latents": latents}
        return {"joints": decoded, "latents": latents, "direct": points[:, self.num_latents:]}

    def forward(self, images, intrinsics, **kwargs) -> dict[str, Tensor]:
        out = self.network(images, intrinsics, **kwargs)
        return {**out, **self.joints_from_outputs(out["coords3d_abs"])}

    def predict(self, crops, intrinsics, skeleton: str | None = None, *, flip_test: bool = True) -> np.ndarray:
        """Camera-frame poses in mm [B, J, 3] for ``skeleton`` (None: all joints of all formats).

        crops: uint8 [B, S', S', 3]; intrinsics: [B, 3, 3] of the crops (undistorted pinhole). Crops of
        another size than the network's input are resized (and their intrinsics scaled to match).
        """
        crops, intrinsics = fit_crops(crops, intrinsics, self.network.config.image_size)
        out = self.network.predict(crops, intrinsics, flip_test=flip_test)
        joints = self.joints_from_outputs(out["coords3d_abs"])["joints"]
        if skeleton is not None:
            joints = joints[:, skeleton_joint_indices(self.joint_names, skeleton)]
        return joints.float().cpu().numpy()

    def detect_poses(self, image, skeleton: str | None = None, **options) -> dict[str, np.ndarray]:
        """Everyone's pose in a whole image of any size; see ``model.detection.detect_poses``."""
        from model.detection import detect_poses

        return detect_poses(self, image, skeleton, **options)

    def detect_poses_batched(self, images, skeleton: str | None = None, **options) -> list[dict[str, np.ndarray]]:
        """``detect_poses`` for a sequence of images (video frames) in shared network batches."""
        from model.detection import detect_poses_batched

        return detect_poses_batched(self, images, skeleton, **options)

    def skeletons(self) -> list[str]:
        return list(dict.fromkeys(split_union_joint_name(name)[1] for name in self.joint_names))

    def save(self, path) -> Location:
        path = location(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT_TAG, "version": _FORMAT_VERSION, "mode": self.mode,
            "joint_names": json.dumps(list(self.joint_names)),
            "network_config": json.dumps(self.network.config.to_dict()),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        return save_torch_atomic(payload, path)

    @classmethod
    def load(cls, path, map_location: str | torch.device = "cpu") -> "PoseEstimator":
        """Raises ``CheckpointError`` (a ``ValueError``) for a damaged file, one of another kind, or
        non-finite weights."""
        payload = load_checked(path, ESTIMATOR_FILE, map_location)
        with reading_contents(path, ESTIMATOR_FILE):
            network = MetrabsModel(MetrabsConfig.from_dict(json.loads(payload["network_config"])))
            state = payload["state_dict"]
            decoder = state.get("decoder")
            estimator = cls(network, payload["mode"], json.loads(payload["joint_names"]),
                            decoder.cpu().numpy() if decoder is not None and decoder.numel() else None)
            estimator.load_state_dict(state)
        return estimator.to(map_location)


def fit_crops(crops, intrinsics, size: int) -> tuple[Tensor, Tensor]:
    """Square uint8 crops [B, S', S', 3] resized to ``size`` with their intrinsics scaled to match
    (pixel centres stay on integer coordinates)."""
    crops = torch.as_tensor(np.asarray(crops)) if not isinstance(crops, Tensor) else crops
    intrinsics = torch.as_tensor(np.asarray(intrinsics), dtype=torch.float32) \
        if not isinstance(intrinsics, Tensor) else intrinsics.float()
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
        raise ValueError(f"crops: expected square uint8 images [B, S, S, 3], got shape {tuple(crops.shape)}")
    source = crops.shape[1]
    if source == size:
        return crops, intrinsics
    scale = size / source
    pixels = crops.permute(0, 3, 1, 2).float()
    # shrinking averages the source pixels each output pixel covers; enlarging interpolates
    resized = torch.nn.functional.interpolate(pixels, size=(size, size), mode="area") if scale < 1 else \
        torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    resized = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    scaled = intrinsics.clone()
    scaled[..., :2, :] *= scale
    scaled[..., :2, 2] += (scale - 1) / 2
    return resized, scaled


def load(path, map_location: str | torch.device = "cpu") -> PoseEstimator:
    return PoseEstimator.load(path, map_location)
