"""Contrastive image-text losses: CLIP, ConVIRT, SigLIP and DHN-NCE.

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


def _decoupled_hard_negative_nce(logits: torch.Tensor, positives: torch.Tensor, beta: float) -> torch.Tensor:
    """Sum over rows that have negatives of ``−mean_{j∈P} l_ij + log Σ_{j∉P} w_ij e^{l_ij}``, with
    ``w_ij = |N_i| e^{β l_ij} / Σ_{k∉P} e^{β l_ik}``, written as log-sum-exps so that large logits stay finite."""
    keep = (~positives).any(dim=1)  # a row whose every text is a positive has nothing to contrast
    logits, positives = logits[keep], positives[keep]
    negatives = ~positives
    outside = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    weighted = (torch.logsumexp(torch.where(negatives, (1 + beta) * logits, outside), dim=1)
                - torch.logsumexp(torch.where(negatives, beta * logits, outside), dim=1)
                + negatives.sum(dim=1).to(logits.dtype).log())
    positive = (logits * positives).sum(dim=1) / positives.sum(dim=1)
    return (weighted - positive).sum()


def dhn_nce_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, beta1: float = 0.15,
                 beta2: float = 0.15, positives: torch.Tensor | None = None) -> torch.Tensor:
    """DHN-NCE (MedCLIP-SAM, Koleilat et al. 2024): InfoNCE *decoupled* (the positive left out of the
    denominator) with negatives weighted by hardness, ``L(image→text; β1) + L(text→image; β2)``, each
    the mean over the batch of ``−log(e^{l_ii} / Σ_{j≠i} w_ij e^{l_ij})`` with ``l = scale · cos`` and
    ``w_ij = (N − 1) e^{β l_ij} / Σ_{k≠i} e^{β l_ik}``: ``β = 0`` weighs every negative 1 (plain decoupled
    InfoNCE); a larger ``β`` up-weights the negatives most similar to the anchor. Defaults β1 = β2 = 0.15
    as MedCLIP-SAMv2 fine-tunes BiomedCLIP. With several positives per row, the numerator's log is their
    mean logit and only the other pairs are negatives; a row with no negative adds nothing."""
    logits = scale * image @ text.T
    positives = _positives(positives, len(image), image.device)
    image_to_text = _decoupled_hard_negative_nce(logits, positives, beta1)
    text_to_image = _decoupled_hard_negative_nce(logits.T, positives.T, beta2)
    return (image_to_text + text_to_image) / len(image)


LOSSES = ("clip", "convirt", "siglip", "dhn-nce")
