"""DD-Adapter (DD-SAM2): a dilated depthwise bottleneck added beside a frozen block's output.

``x + up(gelu(dw3x3_d1(down(x)) + dw3x3_d3(down(x))))``: a 1×1 down-projection to ``rank``
channels, two parallel depthwise 3×3 convolutions at dilation 1 and 3 (local and wider
context at the cost of a few weights), a 1×1 up-projection and a residual. The
up-projection starts at zero, so an adapted model starts exactly equal to its base.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DDAdapter(nn.Module):
    """``(B, channels, H, W)`` → same shape; the identity until trained."""

    def __init__(self, channels: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, rank, 1)
        self.local = nn.Conv2d(rank, rank, 3, padding=1, dilation=1, groups=rank)
        self.wide = nn.Conv2d(rank, rank, 3, padding=3, dilation=3, groups=rank)
        self.up = nn.Conv2d(rank, channels, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.down(x)
        return x + self.up(F.gelu(self.local(hidden) + self.wide(hidden)))


class DDAdaptedBlock(nn.Module):
    """A frozen ``block`` followed by a :class:`DDAdapter` on its output.

    ``layout`` says how the block's output holds its feature map: ``"channels_first"``
    ``(B, C, H, W)`` (CNN stages), ``"channels_last"`` ``(B, H, W, C)`` (SAM's ViT blocks) or
    ``"tokens"`` ``(B, prefix + H·W, C)`` (timm ViT blocks; the ``prefix`` class tokens pass unchanged).
    """

    def __init__(self, block: nn.Module, channels: int, rank: int, layout: str = "channels_first",
                 grid: tuple[int, int] | None = None, prefix: int = 0) -> None:
        super().__init__()
        self.block = block
        self.adapter = DDAdapter(channels, rank)
        self.layout, self.grid, self.prefix = layout, grid, prefix

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = self.block(*args, **kwargs)
        if self.layout == "channels_first":
            return self.adapter(out)
        if self.layout == "channels_last":
            return self.adapter(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        prefix, patches = out[:, : self.prefix], out[:, self.prefix :]
        grid = patches.transpose(1, 2).reshape(out.shape[0], out.shape[2], *self.grid)
        return torch.cat([prefix, self.adapter(grid).flatten(2).transpose(1, 2)], dim=1)
