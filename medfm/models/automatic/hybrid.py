"""A TransUNet-style hybrid for the CPU: a convolutional encoder, a transformer bottleneck, a U-Net decoder.

As in TransUNet (Chen et al., 2021), convolutions extract local features at falling
resolutions and a transformer relates every position of the deepest feature map to every
other (global context that a CNN's receptive field lacks); a cascaded decoder upsamples
back with the encoder's skip connections. Sized small (about 1 M parameters) and built
from MONAI's blocks; it works in 2D and 3D. Instead of TransUNet's learned positional
embedding, whose length fixes the patch size, a depthwise convolution adds position
(conditional positional encoding, Chu et al., 2021), so any patch size the plan picks works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TransUNet(nn.Module):
    """``channels[i]`` features at level i (level 0 at full resolution, each next level ``strides[i]`` coarser);
    ``transformer_layers`` blocks of ``heads``-head self-attention over the deepest level's positions."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                 strides: Sequence[int], transformer_layers: int = 2, heads: int = 4, mlp_ratio: int = 2,
                 dropout: float = 0.0) -> None:
        from monai.networks.blocks import TransformerBlock, UnetOutBlock, UnetResBlock, UnetUpBlock
        from monai.networks.layers import Conv

        super().__init__()
        if len(channels) != len(strides) + 1:
            raise ValueError(f"TransUNet needs one more channel count than strides; got {channels} and {strides}")
        norm = "instance"
        self.stem = UnetResBlock(spatial_dims, in_channels, channels[0], 3, 1, norm)
        self.encoder = nn.ModuleList(UnetResBlock(spatial_dims, channels[i], channels[i + 1], 3, strides[i], norm)
                                     for i in range(len(strides)))
        hidden = channels[-1]
        self.position = Conv[Conv.CONV, spatial_dims](hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.transformer = nn.ModuleList(TransformerBlock(hidden, hidden * mlp_ratio, heads, dropout)
                                         for _ in range(transformer_layers))
        self.norm = nn.LayerNorm(hidden)
        self.decoder = nn.ModuleList(UnetUpBlock(spatial_dims, channels[i + 1], channels[i], 3, strides[i], strides[i], norm)
                                     for i in reversed(range(len(strides))))
        self.head = UnetOutBlock(spatial_dims, channels[0], out_channels)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(batch)]
        for block in self.encoder:
            skips.append(block(skips[-1]))
        deep = skips.pop()
        deep = deep + self.position(deep)
        tokens = deep.flatten(2).transpose(1, 2)  # (N, positions, hidden)
        for block in self.transformer:
            tokens = block(tokens)
        deep = self.norm(tokens).transpose(1, 2).reshape(deep.shape)
        for block in self.decoder:
            deep = block(deep, skips.pop())
        return self.head(deep)
