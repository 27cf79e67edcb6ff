"""A compact MACMD-style encoder–decoder for the CPU: cheap depthwise encoding, context-rich decoding.

MACMD (multi-dilated contextual attention and channel-mixer decoding) puts its effort in the
decoder: each level gates the encoder's skip features by attention from the coarser decoder
features, then mixes local context at several dilation rates with depthwise convolutions and
mixes channels with a pointwise MLP. Here the encoder is a stack of inverted residual blocks
(MobileNetV2-style: pointwise expansion, depthwise 3×3, pointwise projection), so the whole net
stays a few hundred thousand parameters and most of its multiply-adds are depthwise, which a
laptop CPU runs fast. MONAI provides the attention gate and the convolution factories. The blocks are
written for 2D and 3D, but the registry offers the net for 2D plans only (``dims`` in its config): its
stride-2 stem halves a small 3D patch once more than the U-Net does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _layers(spatial_dims: int) -> tuple[type[nn.Module], type[nn.Module]]:
    from monai.networks.layers import Conv, Norm

    return Conv[Conv.CONV, spatial_dims], Norm[Norm.INSTANCE, spatial_dims]


class InvertedResidual(nn.Module):
    """Pointwise expansion ×``expansion``, depthwise 3×3 at ``stride``, pointwise projection; a residual when shapes match."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int, expansion: int = 3) -> None:
        super().__init__()
        conv, norm = _layers(spatial_dims)
        hidden = in_channels * expansion
        self.block = nn.Sequential(
            conv(in_channels, hidden, 1, bias=False), norm(hidden, affine=True), nn.ReLU(),
            conv(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False), norm(hidden, affine=True), nn.ReLU(),
            conv(hidden, out_channels, 1, bias=False), norm(out_channels, affine=True))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MultiDilatedMixer(nn.Module):
    """Depthwise 3×3 convolutions at each of ``dilations`` summed (local context at several ranges), then a
    pointwise channel-mixing MLP; both residual."""

    def __init__(self, spatial_dims: int, channels: int, dilations: Sequence[int], expansion: int = 2) -> None:
        super().__init__()
        conv, norm = _layers(spatial_dims)
        self.context = nn.ModuleList(conv(channels, channels, 3, padding=d, dilation=d, groups=channels, bias=False)
                                     for d in dilations)
        self.norm = norm(channels, affine=True)
        self.mixer = nn.Sequential(conv(channels, channels * expansion, 1), nn.ReLU(), conv(channels * expansion, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + F.relu(self.norm(sum(branch(x) for branch in self.context)))
        return x + self.mixer(x)


class CompactMACMD(nn.Module):
    """``channels[i]`` features at level i (level 0 at half resolution, each next ``strides[i]`` coarser)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                 strides: Sequence[int], dilations: Sequence[int] = (1, 2, 3), dropout: float = 0.0) -> None:
        from monai.networks.nets.attentionunet import AttentionBlock

        super().__init__()
        if len(channels) != len(strides) + 1:
            raise ValueError(f"the compact net needs one more channel count than strides; got {channels} and {strides}")
        conv, norm = _layers(spatial_dims)
        # a stride-2 stem: level 0 works at half resolution, and the logits are upsampled at the end
        self.stem = nn.Sequential(conv(in_channels, channels[0], 3, stride=2, padding=1, bias=False), norm(channels[0], affine=True),
                                  nn.ReLU())
        self.encoder = nn.ModuleList(
            nn.Sequential(InvertedResidual(spatial_dims, channels[i], channels[i + 1], strides[i]),
                          InvertedResidual(spatial_dims, channels[i + 1], channels[i + 1], 1))
            for i in range(len(strides)))
        self.dropout = nn.Dropout(dropout)
        self.reduce = nn.ModuleList(conv(channels[i + 1], channels[i], 1) for i in reversed(range(len(strides))))
        self.gates = nn.ModuleList(AttentionBlock(spatial_dims, max(channels[i] // 2, 4), channels[i], channels[i])
                                   for i in reversed(range(len(strides))))
        self.fuse = nn.ModuleList(conv(2 * channels[i], channels[i], 1) for i in reversed(range(len(strides))))
        self.decoder = nn.ModuleList(MultiDilatedMixer(spatial_dims, channels[i], dilations) for i in reversed(range(len(strides))))
        self.head = conv(channels[0], out_channels, 1)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(batch)]
        for level in self.encoder:
            skips.append(level(skips[-1]))
        deep = self.dropout(skips.pop())
        for reduce, gate, fuse, mixer in zip(self.reduce, self.gates, self.fuse, self.decoder, strict=True):
            skip = skips.pop()
            deep = reduce(F.interpolate(deep, size=skip.shape[2:], mode=self.mode, align_corners=False))
            deep = mixer(fuse(torch.cat([deep, gate(g=deep, x=skip)], dim=1)))
        return F.interpolate(self.head(deep), size=batch.shape[2:], mode=self.mode, align_corners=False)
