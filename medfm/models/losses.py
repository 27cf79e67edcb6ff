"""Contrastive image-text losses: CLIP, ConVIRT and SigLIP.

Every loss takes unit embeddings ``image`` ``(N, D)`` and ``text`` ``(N, D)`` whose row ``i``
is a pair, and an optional ``positives`` ``(N, N)`` bool matrix marking every image-text
pair that matches (default: the diagonal). Marking positives matters when a batch holds
several images of one class described by the same caption: without it, a correct pair
would be pushed apart as a negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _positives(positives: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, dtype=torch.bool, device=device) if positives is None else positives


def _soft_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of cross-entropy against the uniform distribution over each row's positives."""
    targets = positives.to(logits.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def convirt_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, weight: float = 0.75,
                 positives: torch.Tensor | None = None) -> torch.Tensor:
    """ConVIRT (Zhang et al. 2020): ``weight · L(image→text) + (1 − weight) · L(text→image)``,
    each an InfoNCE over the batch with logits ``scale · cos`` (ConVIRT's τ = 1/scale = 0.1)."""
    logits = scale * image @ text.T
    positives = _positives(positives, len(image), image.device)
    return weight * _soft_cross_entropy(logits, positives) + (1 - weight) * _soft_cross_entropy(logits.T, positives.T)


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float,
              positives: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: the mean of the image→text and text→image cross-entropies."""
    return convirt_loss(image, text, scale, 0.5, positives)


def siglip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, bias: torch.Tensor | float,
                positives: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP (Zhai et al. 2023): every pair is a binary problem, ``−Σ log σ(z · (scale · cos + bias)) / N``
    with ``z = +1`` for positives and ``−1`` for the rest."""
    signs = 2.0 * _positives(positives, len(image), image.device).to(image.dtype) - 1.0
    logits = scale * image @ text.T + bias
    return -F.logsigmoid(signs * logits).sum() / len(image)


LOSSES = ("clip", "convirt", "siglip")
