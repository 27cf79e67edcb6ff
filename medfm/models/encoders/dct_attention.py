"""Attention over the low-frequency DCT coefficients of the token map (after DCT-HistoTransformer).

Every patch token asks its query, but keys and values come from the ``keep`` × ``keep`` lowest
frequencies of the 2D DCT-II of the token grid instead of from every token: the coarse layout of the
image at ``keep²/N`` of full attention's cost, which is what histology and radiology images carry at
the patch scale. :class:`DctAttention` has timm ``Attention``'s signature, so it drops into timm's ViT as
``attn_layer``; the token sequence must be a square grid with no class token.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfm.errors import MedfmError


@lru_cache(maxsize=16)
def dct_matrix(size: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` (``size`` × ``size``): ``D @ x`` is ``scipy.fft.dct(x, norm="ortho")``."""
    n = torch.arange(size, dtype=torch.float64)
    matrix = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix.float()


def low_frequencies(tokens: torch.Tensor, keep: int) -> torch.Tensor:
    """``(B, N, C)`` tokens of a square grid → ``(B, keep², C)``: the lowest ``keep`` × ``keep`` coefficients
    of each channel's 2D DCT-II over the grid (row frequency first)."""
    batch, count, channels = tokens.shape
    side = math.isqrt(count)
    if side * side != count:
        raise MedfmError(f"DCT attention needs a square grid of patch tokens; got {count} tokens")
    basis = dct_matrix(side)[:keep].to(tokens)
    grid = tokens.view(batch, side, side, channels)
    return torch.einsum("is,bstc,jt->bijc", basis, grid, basis).reshape(batch, keep * keep, channels)


class DctAttention(nn.Module):
    """Multi-head attention whose keys and values are the token map's low DCT frequencies (``keep_fraction``
    of the grid side, at least 1)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, proj_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, keep_fraction: float = 0.5, **_: Any) -> None:
        super().__init__()
        if dim % num_heads:
            raise MedfmError(f"width {dim} is not a multiple of the {num_heads} heads")
        self.num_heads, self.keep_fraction, self.attn_drop = num_heads, keep_fraction, attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise MedfmError("DCT attention attends to frequencies, not tokens: it takes no mask")
        batch, count, dim = x.shape
        keep = max(1, math.ceil(math.isqrt(count) * self.keep_fraction))
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.q(x).view(batch, count, heads, head_dim).transpose(1, 2)
        k, v = self.kv(low_frequencies(x, keep)).view(batch, keep * keep, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, count, dim)))
