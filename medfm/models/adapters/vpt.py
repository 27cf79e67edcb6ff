"""Visual prompt tuning (VPT-deep, Jia et al. 2022): learnable tokens prepended in every transformer block.

Each wrapped block sees ``[prefix tokens, its own prompt tokens, patch tokens]`` and drops the
prompts from its output, so the rest of the network (pooling, heads) is unchanged. Prompts
start near zero (small normal), so the adapted model starts close to its base.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptedBlock(nn.Module):
    """A frozen transformer ``block`` on ``(B, N, dim)`` tokens with ``tokens`` learnable prompts inserted after ``prefix`` tokens."""

    def __init__(self, block: nn.Module, dim: int, tokens: int, prefix: int = 1) -> None:
        super().__init__()
        self.block = block
        self.prefix = prefix
        self.prompts = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        prompts = self.prompts.expand(x.shape[0], -1, -1).to(x.dtype)
        out = self.block(torch.cat([x[:, : self.prefix], prompts, x[:, self.prefix :]], dim=1), *args, **kwargs)
        return torch.cat([out[:, : self.prefix], out[:, self.prefix + prompts.shape[1] :]], dim=1)
