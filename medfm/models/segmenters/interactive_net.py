"""The network behind ``medfm_interactive``: a CNN image encoder run once, a light prompt decoder run per click.

SAM's split, sized for a CPU. :meth:`InteractiveNet.encode` turns a ``(B, 3, S, S)`` picture
into four feature maps at strides 2, 4, 8 and 16 of the working size ``S``.
:meth:`InteractiveNet.decode` takes those cached features and ``PROMPT_CHANNELS`` prompt maps
at ``(S, S)`` (:func:`render_prompt_maps`), injects the pooled maps at every scale and runs a
small top-down decoder to logits at stride 2, which callers upsample bilinearly: logits of
smooth shapes interpolate to sub-pixel boundaries, so stride 2 costs little Dice.

Training (``medfm.train.interactive``) and inference (``medfm_interactive``) both use
:func:`prepare_plane` (medfm's robust-window preprocessing, shared with ``medfm_clip``) and
:func:`render_prompt_maps`, so the two never drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfm.models.preprocess import prepare_plane

__all__ = ["PROMPT_CHANNELS", "InteractiveNet", "prepare_plane", "render_prompt_maps"]

#: Prompt map channels, in order: positive clicks, negative clicks, box, positive scribbles,
#: negative scribbles, previous mask probability, "a previous mask is given" (all ones or zeros).
PROMPT_CHANNELS = 7
#: Click disk radius as a fraction of the working size (3 px at 128).
CLICK_RADIUS = 3 / 128


def render_prompt_maps(
    size: int,
    shape: tuple[int, int],
    points: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    boxes: Sequence[Sequence[float]] = (),
    positive_scribble: np.ndarray | None = None,
    negative_scribble: np.ndarray | None = None,
    previous_probability: np.ndarray | None = None,
) -> torch.Tensor:
    """Prompts on a ``shape`` (rows, columns) plane → ``(PROMPT_CHANNELS, size, size)`` float32 maps.

    ``points`` ``(N, 2)`` are (x, y) plane pixels (centres at integers) with ``point_labels``
    ``(N,)`` 1/0; ``boxes`` are x0, y0, x1, y1 with x1, y1 the last column and row (the
    :mod:`~medfm.models.segmenters.prompt` conventions); scribbles and ``previous_probability``
    are ``(size, size)`` arrays in [0, 1], already on the working grid.
    """
    maps = np.zeros((PROMPT_CHANNELS, size, size), dtype=np.float32)
    scale = np.array([size / shape[1], size / shape[0]], dtype=np.float32)
    if points is not None and len(points):
        grid = np.arange(size, dtype=np.float32) + 0.5
        radius2 = (CLICK_RADIUS * size) ** 2
        for (x, y), label in zip((np.asarray(points, dtype=np.float32) + 0.5) * scale, np.asarray(point_labels)):
            disk = ((grid[None, :] - x) ** 2 + (grid[:, None] - y) ** 2) <= radius2
            maps[0 if label else 1][disk] = 1.0
    for box in boxes:
        x0, y0 = np.asarray(box[:2], dtype=np.float32) * scale
        x1, y1 = (np.asarray(box[2:], dtype=np.float32) + 1) * scale  # last pixel → its far edge
        maps[2, int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = 1.0
    if positive_scribble is not None:
        maps[3] = positive_scribble
    if negative_scribble is not None:
        maps[4] = negative_scribble
    if previous_probability is not None:
        maps[5] = previous_probability
        maps[6] = 1.0
    return torch.from_numpy(maps)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with an identity shortcut (ResNet's basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class InteractiveNet(nn.Module):
    """Image encoder (run once) + prompt-conditioned decoder (run per interaction).

    ``widths`` are the channels at strides 2, 4, 8, 16; ``blocks`` the residual blocks per
    encoder stage. ``pixel_mean``/``pixel_std`` normalise the [0, 1] pictures of
    :func:`prepare_plane` inside :meth:`encode`, so callers never normalise by hand.
    """

    def __init__(
        self,
        widths: Sequence[int] = (24, 48, 96, 160),
        blocks: Sequence[int] = (1, 1, 2, 2),
        pixel_mean: Sequence[float] = (0.4, 0.4, 0.4),
        pixel_std: Sequence[float] = (0.3, 0.3, 0.3),
    ) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1))
        stages = []
        in_channels = 3
        for width, depth in zip(widths, blocks):
            stages.append(nn.Sequential(_conv(in_channels, width, stride=2), *[ResidualBlock(width) for _ in range(depth)]))
            in_channels = width
        self.encoder = nn.ModuleList(stages)
        # Stride 2 sees the raw maps (sharp clicks); coarser scales see average- and max-pooled
        # maps, so that a small click still registers in a 16×16 cell.
        self.prompt_in = nn.ModuleList(
            [nn.Conv2d(PROMPT_CHANNELS * 2, width, 3, 1, 1) for width in widths]
        )
        self.deep = nn.Sequential(ResidualBlock(widths[-1]), ResidualBlock(widths[-1]))
        self.lateral = nn.ModuleList(
            [nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(len(widths) - 1)]
        )
        self.refine = nn.ModuleList([_conv(width, width) for width in widths[:-1]])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def encode(self, pictures: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, S, S)`` in [0, 1] → features at strides 2, 4, 8, 16: ``(B, widths[i], S/2^(i+1), S/2^(i+1))``."""
        x = (pictures - self.pixel_mean) / self.pixel_std
        features = []
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        return features

    def decode(self, features: Sequence[torch.Tensor], prompt_maps: torch.Tensor) -> torch.Tensor:
        """Cached features and ``(B, PROMPT_CHANNELS, S, S)`` prompt maps → logits ``(B, 1, S/2, S/2)``."""
        fused = []
        for level, (feature, inject) in enumerate(zip(features, self.prompt_in)):
            stride = 2 ** (level + 1)
            pooled = torch.cat([F.avg_pool2d(prompt_maps, stride), F.max_pool2d(prompt_maps, stride)], dim=1)
            fused.append(F.relu(feature + inject(pooled)))
        x = self.deep(fused[-1])
        for level in range(len(fused) - 2, -1, -1):
            up = F.interpolate(self.lateral[level](x), size=fused[level].shape[-2:], mode="bilinear", align_corners=False)
            x = self.refine[level](fused[level] + up)
        return self.head(x)
