"""Convolutional backbones of the MeTRAbs network (``model/network.py``), built by name.

``build_backbone(name, stride=..., weights=...)``: ``small_cnn`` (default; 1.4 M parameters at
stride 16, trains on a CPU), ``small_cnn_pyramid`` (the same levels, the coarser ones merged back into
the output grid for whole-crop context; ~25 % slower), ``resnet18``/``resnet34``/``resnet50`` (written here with torchvision's parameter
names, so a torchvision checkpoint loads into them), and ``efficientnetv2_s`` through ``timm`` when that
is installed. Weights are never downloaded: pass a local checkpoint path to start from pretrained ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from model.checkpoints import FileKind, load_checked

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_WEIGHTS_FILE = FileKind("a state dict of backbone weights", None, None,
                                 "Download the weights again or pass another file.")


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
        # channels-last convolutions and BatchNorm: a training step of small_cnn ran ~10 % faster on CPU
        return self.body(((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last))


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
