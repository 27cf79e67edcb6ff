"""A Kolmogorov–Arnold feed-forward for transformer blocks, as MedViTV2 puts KAN layers in its blocks.

Each :class:`KanLinear` is FastKAN's form (Li, 2024, "Kolmogorov-Arnold Networks are Radial Basis Function
Networks"): the learnable univariate functions of a KAN are sums of Gaussian bumps on a fixed grid over
the layer-normalised input (a close stand-in for B-splines that is a plain matrix product on a CPU), plus
a SiLU base branch. :class:`KanMlp` has timm's ``Mlp`` signature, so it drops into timm's ViT as
``mlp_layer``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class KanLinear(nn.Module):
    """``base(silu(x)) + spline(rbf(norm(x)))`` with ``grid_size`` Gaussian bumps per input feature."""

    def __init__(self, in_features: int, out_features: int, grid_size: int = 4, grid_range: tuple[float, float] = (-2.0, 2.0)) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.register_buffer("grid", torch.linspace(*grid_range, grid_size), persistent=False)
        self.inverse_width = (grid_size - 1) / (grid_range[1] - grid_range[0])
        self.spline = nn.Linear(in_features * grid_size, out_features, bias=False)
        self.base = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bumps = torch.exp(-(((self.norm(x)[..., None] - self.grid) * self.inverse_width) ** 2))
        return self.base(F.silu(x)) + self.spline(bumps.flatten(-2))


class KanMlp(nn.Module):
    """Two :class:`KanLinear` layers in timm ``Mlp``'s place (its activation and norm arguments are not used:
    the nonlinearity is the learned one)."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 drop: float = 0.0, grid_size: int = 4, **_: Any) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = KanLinear(in_features, hidden_features, grid_size)
        self.fc2 = KanLinear(hidden_features, out_features or in_features, grid_size)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.fc1(x))))
