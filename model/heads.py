"""MeTRAbs output layer: one 1×1 convolution to per-joint heatmaps, decoded by soft-argmax.

Channel layout of the head's output (J joints, D depth slices), as in the reference implementation:

    channels [0, J)           2D heatmap logits of joint j at channel j
    channels [J, J + D·J)     3D heatmap logits of joint j, depth slice d at channel J + d·J + j

Softmax runs over the H×W cells for 2D and jointly over the D×H×W cells for 3D; the soft-argmax is the
expectation of per-axis coordinates ``linspace(0, 1, n)``. Decoding (S = crop side, s = stride,
H = W = S / s heatmap cells per side, B = ``box_size_mm``):

- Image pixels (pixel centres at integer coordinates, as in ``assets/cameras.py``): heatmap cell i
  summarises pixels s·i … s·i + s − 1, whose centre is s·i + (s − 1)/2, so

      u = (s − 1)/2 + t · s · (H − 1)          (t ∈ [0, 1] from the soft-argmax)

  The reference writes u = s//2 + t·(S − 1 − ((S − 1) mod s)) with half-integer pixel centres; with
  S divisible by s the two agree up to that half-pixel convention. Cell centres sit symmetrically about
  the crop centre (S − 1)/2, so a horizontal flip maps cell i onto cell H − 1 − i exactly.
- Metric 3D, "truncation-robust": a cube of side B around an unknown reference point, axes parallel
  to the camera's. x and y use the same cells as the 2D heatmap, scaled B/S mm per pixel and centred on
  the crop centre; z uses the D slices spread over the cube's depth:

      x = (u(t_x) − (S − 1)/2) · B / S,    y likewise,    z = t_z · B − B / 2

  These are offsets from the reference point, not camera coordinates: ``reconstruction.py`` finds the
  reference point from the 2D prediction.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def soft_argmax(logits: Tensor, num_axes: int) -> Tensor:
    """Expected position along each of the last ``num_axes`` axes, each axis spanning [0, 1].

    The softmax is taken jointly over those axes. Returns [..., num_axes], coordinates in the order of
    the axes (so (t_d, t_y, t_x) for logits [..., D, H, W]). Computed in float32 whatever the input.
    """
    grid_shape = tuple(logits.shape[-num_axes:])
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs = F.softmax(logits.float().flatten(-num_axes), dim=-1).unflatten(-1, grid_shape)
        # sums over the cells, not a matrix product: a product's summation order depends on the batch size
        # (BLAS blocking), so the same crop would decode differently in batches of other sizes, e.g. on each
        # process of a distributed run. The marginals are two passes over the probabilities: with hundreds of
        # joints, a weighted sum per axis (a pass and a temporary each) took half of an inference
        marginals = _marginals(probs, num_axes)
        return torch.stack([(marginal * torch.linspace(0.0, 1.0, size, device=logits.device)).sum(dim=-1)
                            for marginal, size in zip(marginals, grid_shape)], dim=-1)


def _marginals(probs: Tensor, num_axes: int) -> list[Tensor]:
    """The marginal distributions along each of the last ``num_axes`` axes of ``probs``, in axis order."""
    if num_axes == 1:
        return [probs]
    return [*_marginals(probs.sum(dim=-1), num_axes - 1), probs.sum(dim=tuple(range(-num_axes, -1)))]


def heatmap_to_image(coords: Tensor, image_size: int, stride: int) -> Tensor:
    """Normalised heatmap coordinates in [0, 1] → crop pixels (see module docstring)."""
    cells = image_size // stride
    return (stride - 1) / 2 + coords * (stride * (cells - 1))


def heatmap_to_metric(coords: Tensor, image_size: int, stride: int, box_size_mm: float) -> Tensor:
    """Normalised 3D heatmap coordinates (t_x, t_y, t_z) → offsets in mm from the reference point."""
    pixels = heatmap_to_image(coords[..., :2], image_size, stride)
    xy = (pixels - (image_size - 1) / 2) * (box_size_mm / image_size)
    z = (coords[..., 2:] - 0.5) * box_size_mm
    return torch.cat([xy, z], dim=-1)


class MetrabsHead(nn.Module):
    """Features [B, C, H, W] → (coords2d [B, J, 2] pixels, coords3d_rel [B, J, 3] mm), both float32."""

    def __init__(self, in_channels: int, num_joints: int, *, depth: int, image_size: int, stride: int, box_size_mm: float):
        super().__init__()
        self.num_joints = num_joints
        self.depth = depth
        self.image_size = image_size
        self.stride = stride
        self.box_size_mm = box_size_mm
        self.conv = nn.Conv2d(in_channels, num_joints * (1 + depth), kernel_size=1)

    @property
    def heatmap_size(self) -> int:
        return self.image_size // self.stride

    def forward(self, features: Tensor, joints: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``joints``: indices of the joints to compute, [K] for the whole batch or [B, K] per example, in the
        order they come out (None: all). Training a model on many formats asks each example only for its
        own format's joints: the loss has no other labels, and the head's cost grows with the joints it
        computes."""
        cells = self.heatmap_size
        if features.shape[-2:] != (cells, cells):
            raise RuntimeError(
                f"backbone features are {tuple(features.shape[-2:])} cells, expected {(cells, cells)} for "
                f"{self.image_size} px crops at stride {self.stride}: the backbone's stride does not match"
            )
        return self.decode_joint_major(*self._logits_joint_major(features, joints))

    def _logits_joint_major(self, features: Tensor, joints: Tensor | None) -> tuple[Tensor, Tensor]:
        """The 1×1 convolution's logits of ``joints`` as (2D [B, K, H, W], 3D [B, K, D, H, W]), computed as
        matrix products. The 3D channels are picked in the (small) weights in joint-major order rather than
        permuted in the (large) output, so the 3D logits come out contiguous; with hundreds of joints, the
        convolution's layout conversions and the copies of a channel permutation cost more than the products."""
        weight, bias = self.conv.weight.flatten(1), self.conv.bias  # [J·(1 + D), C]; channel J + d·J + j
        if joints is None:
            joints = torch.arange(self.num_joints, device=weight.device)
        slices = torch.arange(1, self.depth + 1, device=weight.device) * self.num_joints
        channels3d = (joints[..., None] + slices).flatten(-2)  # joint-major, then depth slice
        cells = features.flatten(2)  # [B, C, H·W]
        # an embedding lookup picks the rows: its backward sums into the weight gradient much faster
        # than indexing's does on a CPU
        logits2d = torch.matmul(F.embedding(joints, weight), cells) + F.embedding(joints, bias[:, None])
        logits3d = torch.matmul(F.embedding(channels3d, weight), cells) + F.embedding(channels3d, bias[:, None])
        spatial = features.shape[-2:]
        return logits2d.unflatten(2, spatial), logits3d.unflatten(2, spatial).unflatten(1, (joints.shape[-1], self.depth))

    def decode(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Head output logits [B, J·(1 + D), H, W] in the reference's channel layout → (coords2d px,
        coords3d_rel mm)."""
        batch, _, height, width = logits.shape
        joints = self.num_joints
        logits3d = logits[:, joints:].reshape(batch, self.depth, joints, height, width).transpose(1, 2)
        return self.decode_joint_major(logits[:, :joints], logits3d)

    def decode_joint_major(self, logits2d: Tensor, logits3d: Tensor) -> tuple[Tensor, Tensor]:
        """(2D logits [B, J, H, W], 3D logits [B, J, D, H, W]) → (coords2d px, coords3d_rel mm)."""
        t2d = soft_argmax(logits2d, 2).flip(-1)  # (t_y, t_x) → (t_x, t_y)
        t3d = soft_argmax(logits3d, 3).flip(-1)  # (t_d, t_y, t_x) → (t_x, t_y, t_z)
        coords2d = heatmap_to_image(t2d, self.image_size, self.stride)
        coords3d_rel = heatmap_to_metric(t3d, self.image_size, self.stride, self.box_size_mm)
        return coords2d, coords3d_rel
