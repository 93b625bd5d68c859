"""The MeTRAbs network: a convolutional backbone, a 1×1-conv heatmap head and absolute pose reconstruction.

``MetrabsModel(config)`` maps person crops and their intrinsics to, per output joint, crop pixels,
metric offsets from an unknown reference point, and the absolute camera-frame pose (see ``heads.py``
for the decoding and ``reconstruction.py`` for the absolute pose).

Output joints of a model trained on several skeleton formats ("separate heads per skeleton"): the union
of every format's joints, each name suffixed with its format (``union_joint_names``), so each format has
outputs of its own; ``skeleton_joint_indices`` picks one format's joints out of the union.

Backbones are built by name (``build_backbone``): ``small_cnn`` (default; 1.4 M parameters at
stride 16, trains on a CPU), ``small_cnn_pyramid`` (the same levels, the coarser ones merged back into
the output grid for whole-crop context; ~25 % slower), ``resnet18``/``resnet34``/``resnet50`` (written here with torchvision's parameter
names, so a torchvision checkpoint loads into them), and ``efficientnetv2_s`` through ``timm`` when that
is installed. Weights are never downloaded: pass a local checkpoint path to start from pretrained ones.

Modules are device-agnostic: inputs are moved to the device of the model's parameters, and mixed
precision is the caller's (``torch.autocast``); decoding and reconstruction run in float32 regardless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from assets.skeletons import get_skeleton, known_skeletons, mirror_name
from model.checkpoints import FileKind, load_checked, model_file_kind, reading_contents
from model.heads import MetrabsHead
from model.persistence import save_torch_atomic
from model.reconstruction import (
    check_intrinsics,
    is_within_fov,
    mirror_pose_2d,
    mirror_pose_3d,
    reconstruct_absolute,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FORMAT_TAG = "dozens.metrabs"
_FORMAT_VERSION = 1
METRABS_FILE = model_file_kind("a MeTRAbs model file", _FORMAT_TAG, _FORMAT_VERSION)
BACKBONE_WEIGHTS_FILE = FileKind("a state dict of backbone weights", None, None,
                                 "Download the weights again or pass another file.")


# ---------------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------------
class Backbone(nn.Module):
    """Images in [0, 1], [B, 3, S, S] → features [B, out_channels, S/stride, S/stride]."""

    def __init__(self, body: nn.Module, out_channels: int, stride: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.stride = stride
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.body((images - self.mean) / self.std)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - stride) // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        # each block starts as the identity, so the untrained net is a shallow stack that trains quickly
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.bn2(self.conv2(self.conv1(x))))


# (channels, residual blocks) per resolution level: a 4×4/4 patch stem, then a 2×2/2 downsampling per
# level, so a stride-s net uses the first log2(s) - 1 levels. Non-overlapping downsampling keeps every
# feature cell exactly over the pixels s·i … s·i + s - 1, the grid the heatmap decoding assumes, and
# skips the costly full-resolution layers (BatchNorm at 64×64 dominated a 3×3-stem variant on CPU).
# Plain 3×3 convolutions: depthwise ones save FLOPs but run slower on CPU in PyTorch.
_SMALL_CNN_LEVELS = ((48, 1), (96, 2), (160, 2), (256, 1))


_SMALL_CNN_STRIDES = [4 * 2**i for i in range(len(_SMALL_CNN_LEVELS))]


def _small_cnn_output_level(stride: int, name: str) -> int:
    if stride not in _SMALL_CNN_STRIDES:
        raise ValueError(f"stride: {name} supports strides {_SMALL_CNN_STRIDES}, got {stride}")
    return _SMALL_CNN_STRIDES.index(stride)


def _small_cnn_levels(count: int) -> list[nn.Sequential]:
    """The first ``count`` resolution levels: a patch convolution, then the level's residual blocks."""
    modules, channels = [], 3
    for level, (width, blocks) in enumerate(_SMALL_CNN_LEVELS[:count]):
        patch = 4 if level == 0 else 2
        modules.append(nn.Sequential(_conv_bn_relu(channels, width, kernel_size=patch, stride=patch),
                                     *(_ResidualBlock(width) for _ in range(blocks))))
        channels = width
    return modules


def _small_cnn(stride: int) -> tuple[nn.Module, int]:
    output_level = _small_cnn_output_level(stride, "small_cnn")
    # flattened: the parameter names of saved models stay those of one plain sequence of layers
    body = nn.Sequential(*(layer for level in _small_cnn_levels(output_level + 1) for layer in level))
    return body, _SMALL_CNN_LEVELS[output_level][0]


class _SmallCnnPyramid(nn.Module):
    """All four small-CNN levels, the coarser ones upsampled and added into the output level.

    The plain stride-8 net sees ~90 px around each cell but has no view of the whole figure, and
    telling a person's front from their back (hence the sign of x and z) needs it; the coarse levels
    cost little at these resolutions (2x2 cells at 64 px for stride 32).
    """

    def __init__(self, stride: int):
        super().__init__()
        self.output_level = _small_cnn_output_level(stride, "small_cnn_pyramid")
        self.levels = nn.ModuleList(_small_cnn_levels(len(_SMALL_CNN_LEVELS)))
        self.out_channels = _SMALL_CNN_LEVELS[self.output_level][0]
        self.lateral = nn.ModuleList(
            nn.Conv2d(width, self.out_channels, 1) for width, _ in _SMALL_CNN_LEVELS[self.output_level + 1:])
        self.merge = _conv_bn_relu(self.out_channels, self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        out = features[self.output_level]
        size = out.shape[-2:]
        for lateral, coarse in zip(self.lateral, features[self.output_level + 1:]):
            out = out + nn.functional.interpolate(lateral(coarse), size=size, mode="nearest")
        return self.merge(out)


def _small_cnn_pyramid(stride: int) -> tuple[nn.Module, int]:
    body = _SmallCnnPyramid(stride)
    return body, body.out_channels


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, dilation: int, first_dilation: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, dilation: int, first_dilation: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class _ResNetBody(nn.Module):
    """ResNet without its classifier; attribute names follow torchvision so its checkpoints load.

    Stride 16 replaces the last stage's downsampling by dilation, as torchvision's
    ``replace_stride_with_dilation`` does (same parameter shapes, so the same checkpoints apply).
    """

    def __init__(self, block: type, layers: Sequence[int], stride: int):
        super().__init__()
        if stride not in (16, 32):
            raise ValueError(f"stride: ResNet backbones support stride 16 or 32, got {stride}")
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, dilate=False)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, dilate=False)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, dilate=False)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, dilate=stride == 16)
        self.out_channels = 512 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.dilation, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes, 1, None, self.dilation, self.dilation) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


def _timm_body(model_name: str, backbone_name: str, stride: int) -> tuple[nn.Module, int]:
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            f"backbone {backbone_name!r} needs the 'timm' package, which is not installed; install timm "
            f"(without letting it replace the pinned torch) or choose another backbone"
        ) from error
    model = timm.create_model(model_name, pretrained=False, num_classes=0, global_pool="", output_stride=stride)
    return _TimmFeatures(model), model.num_features


# name -> (builder(stride) -> (body, channels), input mean, input std, checkpoint keys to drop)
_BACKBONES: dict[str, tuple[Callable[[int], tuple[nn.Module, int]], tuple, tuple, tuple[str, ...]]] = {
    # mean = std = 0.5 maps [0, 1] to [-1, 1]
    "small_cnn": (_small_cnn, (0.5,) * 3, (0.5,) * 3, ()),
    "small_cnn_pyramid": (_small_cnn_pyramid, (0.5,) * 3, (0.5,) * 3, ()),
}


def _register_resnet(name: str, block: type, layers: tuple[int, ...]) -> None:
    def build(stride: int) -> tuple[nn.Module, int]:
        body = _ResNetBody(block, layers, stride)
        return body, body.out_channels

    _BACKBONES[name] = (build, IMAGENET_MEAN, IMAGENET_STD, ("fc.",))


_register_resnet("resnet18", _BasicBlock, (2, 2, 2, 2))
_register_resnet("resnet34", _BasicBlock, (3, 4, 6, 3))
_register_resnet("resnet50", _Bottleneck, (3, 4, 6, 3))
_BACKBONES["efficientnetv2_s"] = (
    lambda stride: _timm_body("tf_efficientnetv2_s", "efficientnetv2_s", stride),
    IMAGENET_MEAN,
    IMAGENET_STD,
    ("classifier.",),
)


def available_backbones() -> list[str]:
    return sorted(_BACKBONES)


def build_backbone(name: str = "small_cnn", *, stride: int = 16, weights: str | os.PathLike | None = None) -> Backbone:
    """Backbone ``name`` at output ``stride``, randomly initialised or from a local checkpoint file.

    ``weights`` is a ``torch.save``d state dict of the bare network (torchvision's for ResNets, timm's
    for EfficientNetV2); classifier parameters in it are ignored, any other mismatch is an error.
    """
    if name not in _BACKBONES:
        raise ValueError(f"backbone: unknown name {name!r}; available: {', '.join(available_backbones())}")
    build, mean, std, ignored_prefixes = _BACKBONES[name]
    body, channels = build(stride)
    if weights is not None:
        _load_checkpoint(body.model if isinstance(body, _TimmFeatures) else body, weights, ignored_prefixes)
    return Backbone(body, channels, stride, mean, std)


def _load_checkpoint(module: nn.Module, path: str | os.PathLike, ignored_prefixes: tuple[str, ...]) -> None:
    state = load_checked(path, BACKBONE_WEIGHTS_FILE)
    state = {k: v for k, v in state.items() if not k.startswith(ignored_prefixes)}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights {path}: do not match the backbone (missing {len(missing)} parameters, e.g. "
            f"{missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
        )


# ---------------------------------------------------------------------------------------------------
# Output joints
# ---------------------------------------------------------------------------------------------------
def union_joint_names(skeleton_names: Sequence[str]) -> tuple[str, ...]:
    """Output joints of a model trained on these skeleton formats: every format's joints in order, each
    suffixed with its format (``lsho`` of ``h36m_17`` → ``lsho_h36m_17``)."""
    if isinstance(skeleton_names, str):
        raise ValueError(f"skeleton_names: expected a sequence of format names, got the string {skeleton_names!r}")
    duplicates = sorted({n for n in skeleton_names if list(skeleton_names).count(n) > 1})
    if duplicates:
        raise ValueError(f"skeleton_names: {duplicates} listed more than once")
    return tuple(f"{joint}_{name}" for name in skeleton_names for joint in get_skeleton(name).joint_names)


def split_union_joint_name(union_name: str) -> tuple[str, str]:
    """Inverse of ``union_joint_names`` for one name: ``leye_inner_blazepose_33`` → (``leye_inner``,
    ``blazepose_33``). Joint and format names may both contain underscores, so the split is the one
    whose format is registered and has that joint."""
    parts, registered = union_name.split("_"), set(known_skeletons())
    for cut in range(1, len(parts)):
        joint, skeleton = "_".join(parts[:cut]), "_".join(parts[cut:])
        if skeleton in registered and joint in get_skeleton(skeleton).joint_names:
            return joint, skeleton
    raise ValueError(f"joint name {union_name!r} is not '<joint>_<format>' for any registered skeleton format")


def skeleton_joint_indices(joint_names: Sequence[str], skeleton_name: str) -> list[int]:
    """Indices into ``joint_names`` (a union from ``union_joint_names``) of the joints of ``skeleton_name``,
    in that format's joint order."""
    index = {name: i for i, name in enumerate(joint_names)}
    wanted = [f"{joint}_{skeleton_name}" for joint in get_skeleton(skeleton_name).joint_names]
    missing = [name for name in wanted if name not in index]
    if missing:
        raise ValueError(
            f"skeleton {skeleton_name!r}: the model has no output for joints {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''} (was it trained on this format?)"
        )
    return [index[name] for name in wanted]


def mirror_permutation(joint_names: Sequence[str]) -> np.ndarray:
    """Permutation relabelling a mirrored pose left ↔ right; the l/r prefix rule of ``assets.skeletons``
    applied to the suffixed names pairs joints within each format."""
    index = {name: i for i, name in enumerate(joint_names)}
    return np.array([index.get(mirror_name(name), i) for i, name in enumerate(joint_names)])


# ---------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------
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
        if self.backbone not in _BACKBONES:
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
    ) -> dict[str, Tensor]:
        """Crops and their intrinsics → dict(coords2d [B, J, 2] px, coords3d_rel [B, J, 3] mm,
        coords3d_abs [B, J, 3] camera-frame mm).

        ``mix_3d_inside_fov`` None means U(0, 1) per example in training mode and 0.5 in eval mode
        (see ``reconstruct_absolute``). ``weak_perspective`` is for the first training steps, while the 2D
        and 3D heads still disagree wildly (the reference uses it for the first 500 steps).
        """
        x = self.prepare_images(images)
        K = self.prepare_intrinsics(intrinsics, len(x))
        coords2d, coords3d_rel = self.heatmap_outputs(x)
        if mix_3d_inside_fov is None:
            mix_3d_inside_fov = torch.rand(len(x), device=x.device) if self.training else 0.5
        coords3d_abs = self._reconstruct(coords2d, coords3d_rel, K, mix_3d_inside_fov, weak_perspective)
        return {"coords2d": coords2d, "coords3d_rel": coords3d_rel, "coords3d_abs": coords3d_abs}

    def _reconstruct(self, coords2d: Tensor, coords3d_rel: Tensor, K: Tensor, mix, weak_perspective: bool) -> Tensor:
        in_fov = is_within_fov(coords2d, self.config.image_size, self.config.stride)
        return reconstruct_absolute(
            coords2d, coords3d_rel, K, is_in_fov=in_fov, mix_3d_inside_fov=mix, weak_perspective=weak_perspective
        )

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
    def save(self, path: str | os.PathLike) -> Path:
        """Config and weights in one file, written atomically (temp file in the same folder, then rename)."""
        path = Path(path)
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
