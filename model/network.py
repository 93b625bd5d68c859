"""The MeTRAbs network: a convolutional backbone, a 1×1-conv heatmap head and absolute pose reconstruction.

``MetrabsModel(config)`` maps person crops and their intrinsics to, per output joint, crop pixels,
metric offsets from an unknown reference point, and the absolute camera-frame pose (see ``heads.py``
for the decoding and ``reconstruction.py`` for the absolute pose).

Output joints of a model trained on several skeleton formats ("separate heads per skeleton"): the union
of every format's joints, each suffixed with its format (``assets.joint_names.union_joint_names``).
Backbones are built by name (``model.backbones.build_backbone``).

Modules are device-agnostic: inputs are moved to the device of the model's parameters, and mixed
precision is the caller's (``torch.autocast``); decoding and reconstruction run in float32 regardless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from assets.joint_names import mirror_permutation, skeleton_joint_indices, union_joint_names
from assets.locations import Location, location
from model.backbones import available_backbones, build_backbone
from model.checkpoints import load_checked, model_file_kind, reading_contents
from model.heads import MetrabsHead
from model.persistence import save_torch_atomic
from model.reconstruction import (
    check_intrinsics,
    is_within_fov,
    mirror_pose_2d,
    mirror_pose_3d,
    reconstruct_absolute,
)

_FORMAT_TAG = "dozens.metrabs"
_FORMAT_VERSION = 1
METRABS_FILE = model_file_kind("a MeTRAbs model file", _FORMAT_TAG, _FORMAT_VERSION)


@dataclass(frozen=True)
class MetrabsConfig:
    """What defines a model's architecture and outputs; saved with its weights."""

    joint_names: tuple[str, ...]
    backbone: str = "small_cnn"
    image_size: int = 128  # crop side S in pixels
    stride: int = 16  # backbone output stride s; heatmaps have S/s cells per side
    depth: int = 8  # slices D of the 3D heatmap
    box_size_mm: float = 2200.0  # side B of the metric cube the 3D heatmap spans

    def __post_init__(self):
        names = tuple(self.joint_names)
        object.__setattr__(self, "joint_names", names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"joint_names: expected a non-empty list of distinct names, got {len(names)} names with duplicates or none")
        if self.backbone not in available_backbones():
            raise ValueError(f"backbone: unknown name {self.backbone!r}; available: {', '.join(available_backbones())}")
        if self.stride <= 0 or self.image_size % self.stride or self.image_size // self.stride < 2:
            raise ValueError(
                f"image_size: expected a multiple of stride ({self.stride}) of at least two strides, got {self.image_size}"
            )
        if self.depth < 2:
            raise ValueError(f"depth: expected at least 2 heatmap slices, got {self.depth}")
        if not self.box_size_mm > 0:
            raise ValueError(f"box_size_mm: expected a positive size, got {self.box_size_mm}")

    @classmethod
    def for_skeletons(cls, skeleton_names: Sequence[str], **settings) -> MetrabsConfig:
        return cls(joint_names=union_joint_names(skeleton_names), **settings)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["joint_names"] = list(self.joint_names)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> MetrabsConfig:
        return cls(**data)


class MetrabsModel(nn.Module):
    def __init__(self, config: MetrabsConfig, *, backbone_weights: str | os.PathLike | None = None):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, stride=config.stride, weights=backbone_weights)
        self.head = MetrabsHead(
            self.backbone.out_channels,
            len(config.joint_names),
            depth=config.depth,
            image_size=config.image_size,
            stride=config.stride,
            box_size_mm=config.box_size_mm,
        )
        self.register_buffer(
            "mirror_indices", torch.as_tensor(mirror_permutation(config.joint_names)), persistent=False
        )

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.config.joint_names

    def joint_indices(self, skeleton_name: str) -> list[int]:
        """Indices of ``skeleton_name``'s joints in this model's outputs."""
        return skeleton_joint_indices(self.config.joint_names, skeleton_name)

    # -- inputs ------------------------------------------------------------------------------------
    def prepare_images(self, images: Tensor | np.ndarray) -> Tensor:
        """uint8 [B, S, S, 3] (as stored) or float [B, 3, S, S] in [0, 1] → float [B, 3, S, S] on the model's device."""
        size = self.config.image_size
        expected = f"uint8 [B, {size}, {size}, 3] or float [B, 3, {size}, {size}] in [0, 1]"
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ValueError(f"images: expected {expected}, got {shape}")
        if images.shape[1:] == (3, size, size):
            nchw = images
        elif images.shape[1:] == (size, size, 3):
            nchw = images.permute(0, 3, 1, 2)
        else:
            raise ValueError(f"images: expected {expected}, got shape {tuple(images.shape)}")
        device = self.head.conv.weight.device
        if nchw.dtype == torch.uint8:
            return nchw.to(device, non_blocking=True).float().div_(255)
        if nchw.is_floating_point():
            return nchw.to(device=device, dtype=torch.float32, non_blocking=True)
        raise ValueError(f"images: expected {expected}, got dtype {nchw.dtype}")

    def prepare_intrinsics(self, intrinsics: Tensor | np.ndarray, batch_size: int) -> Tensor:
        if isinstance(intrinsics, np.ndarray):
            intrinsics = torch.from_numpy(intrinsics)
        check_intrinsics(intrinsics, batch_size)
        return intrinsics.to(device=self.head.conv.weight.device, dtype=torch.float32)

    # -- inference ---------------------------------------------------------------------------------
    def heatmap_outputs(self, images01: Tensor) -> tuple[Tensor, Tensor]:
        """Prepared images [B, 3, S, S] → (coords2d [B, J, 2] px, coords3d_rel [B, J, 3] mm)."""
        return self.head(self.backbone(images01))

    def forward(
        self,
        images: Tensor | np.ndarray,
        intrinsics: Tensor | np.ndarray,
        *,
        mix_3d_inside_fov: float | Tensor | None = None,
        weak_perspective: bool = False,
        own_joints: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Crops and their intrinsics → dict(coords2d [B, J, 2] px, coords3d_rel [B, J, 3] mm,
        coords3d_abs [B, J, 3] camera-frame mm).

        ``mix_3d_inside_fov`` None means U(0, 1) per example in training mode and 0.5 in eval mode
        (see ``reconstruct_absolute``). ``weak_perspective`` is for the first training steps, while the 2D
        and 3D heads still disagree wildly (the reference uses it for the first 500 steps).

        ``own_joints``: (indices [B, K], present [B, K], everything [B]) from ``own_format_joints``: each
        example computes only those of its joints that are present, and its absolute pose is reconstructed
        from them alone, except the examples marked ``everything``, which compute all joints. The joints an
        example does not compute are 0, which is where training has no label for them.
        """
        x = self.prepare_images(images)
        K = self.prepare_intrinsics(intrinsics, len(x))
        if mix_3d_inside_fov is None:
            mix_3d_inside_fov = torch.rand(len(x), device=x.device) if self.training else 0.5
        if own_joints is None:
            coords2d, coords3d_rel = self.heatmap_outputs(x)
            coords3d_abs = self._reconstruct(coords2d, coords3d_rel, K, mix_3d_inside_fov, weak_perspective)
            return {"coords2d": coords2d, "coords3d_rel": coords3d_rel, "coords3d_abs": coords3d_abs}
        indices, present, everything = own_joints
        features = self.backbone(x)
        mix = torch.as_tensor(mix_3d_inside_fov, dtype=torch.float32, device=x.device).expand(len(x))
        keys = ("coords2d", "coords3d_rel", "coords3d_abs")
        outputs = {key: features.new_zeros(len(x), len(self.joint_names), 2 if key == "coords2d" else 3,
                                           dtype=torch.float32) for key in keys}
        rows = torch.arange(len(x), device=x.device)
        own_rows, all_rows = rows[~everything], rows[everything]
        if len(own_rows):
            own_indices, own_present = indices[own_rows], present[own_rows]
            coords2d, coords3d_rel = self.head(features[own_rows], own_indices)
            coords3d_abs = self._reconstruct(coords2d, coords3d_rel, K[own_rows], mix[own_rows], weak_perspective,
                                             own_present)
            where = (own_rows[:, None].expand_as(own_indices)[own_present], own_indices[own_present])
            for key, value in zip(keys, (coords2d, coords3d_rel, coords3d_abs)):
                outputs[key] = outputs[key].index_put(where, value[own_present].float())
        if len(all_rows):
            coords2d, coords3d_rel = self.head(features[all_rows])
            coords3d_abs = self._reconstruct(coords2d, coords3d_rel, K[all_rows], mix[all_rows], weak_perspective)
            for key, value in zip(keys, (coords2d, coords3d_rel, coords3d_abs)):
                outputs[key] = outputs[key].index_put((all_rows,), value.float())
        return outputs

    def own_format_joints(self, skeletons: Sequence[str], everything: Tensor | None = None
                          ) -> tuple[Tensor, Tensor, Tensor]:
        """``own_joints`` for a batch whose example i is labelled in format ``skeletons[i]``: (indices
        [B, K] of its format's joints, padded to the largest format with its first joint; present [B, K];
        ``everything`` [B], the examples that compute all joints, default none)."""
        device = self.head.conv.weight.device
        formats = {name: self.joint_indices(name) for name in dict.fromkeys(skeletons)}
        width = max(len(joints) for joints in formats.values())
        indices = torch.zeros(len(skeletons), width, dtype=torch.long)
        present = torch.zeros(len(skeletons), width, dtype=torch.bool)
        for row, name in enumerate(skeletons):
            joints = formats[name]
            indices[row] = torch.as_tensor(joints + [joints[0]] * (width - len(joints)))
            present[row, :len(joints)] = True
        if everything is None:
            everything = torch.zeros(len(skeletons), dtype=torch.bool)
        return indices.to(device), present.to(device), everything.to(device)

    def _reconstruct(self, coords2d: Tensor, coords3d_rel: Tensor, K: Tensor, mix, weak_perspective: bool,
                     present: Tensor | None = None) -> Tensor:
        in_fov = is_within_fov(coords2d, self.config.image_size, self.config.stride)
        return reconstruct_absolute(coords2d, coords3d_rel, K, is_in_fov=in_fov, mix_3d_inside_fov=mix,
                                    weak_perspective=weak_perspective, joint_present=present)

    def predict(self, images: Tensor | np.ndarray, intrinsics: Tensor | np.ndarray, *, flip_test: bool = False) -> dict[str, Tensor]:
        """Inference outputs as ``forward`` (BatchNorm in eval mode, no autograd, mix 0.5).

        ``flip_test`` also runs the mirrored crops, mirrors their 2D and relative 3D predictions back
        (u ↦ S - 1 - u, x ↦ -x, left ↔ right joints), averages them with the plain predictions and only
        then reconstructs the absolute pose. Mirroring is an involution, so the result is exactly
        flip-equivariant: mirrored crops (with ``flip_intrinsics``) give the mirrored prediction.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                x = self.prepare_images(images)
                K = self.prepare_intrinsics(intrinsics, len(x))
                if flip_test:
                    coords2d, coords3d_rel = self.heatmap_outputs(torch.cat([x, x.flip(-1)]))
                    batch = len(x)
                    size = self.config.image_size
                    coords2d = (coords2d[:batch] + mirror_pose_2d(coords2d[batch:], size, self.mirror_indices)) / 2
                    coords3d_rel = (coords3d_rel[:batch] + mirror_pose_3d(coords3d_rel[batch:], self.mirror_indices)) / 2
                else:
                    coords2d, coords3d_rel = self.heatmap_outputs(x)
                coords3d_abs = self._reconstruct(coords2d, coords3d_rel, K, 0.5, False)
        finally:
            self.train(was_training)
        return {"coords2d": coords2d, "coords3d_rel": coords3d_rel, "coords3d_abs": coords3d_abs}

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Location:
        """Config and weights in one file, written atomically (temp file in the same folder, then rename)."""
        path = location(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT_TAG,
            "version": _FORMAT_VERSION,
            "config": json.dumps(self.config.to_dict()),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        return save_torch_atomic(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> MetrabsModel:
        """Raises ``CheckpointError`` (a ``ValueError``) for a damaged file, one of another kind, or
        non-finite weights."""
        payload = load_checked(path, METRABS_FILE, map_location)
        with reading_contents(path, METRABS_FILE):
            model = cls(MetrabsConfig.from_dict(json.loads(payload["config"])))
            model.load_state_dict(payload["state_dict"])
        return model.to(map_location)
