"""The self-supervised objectives of ``medfm pretrain``, as pure functions of tensors.

* :func:`mae_loss` — masked autoencoding (He et al. 2022): mean squared error on the masked
  patches only, each target patch normalised by its own mean and variance.
* :func:`simdino_loss` — SimDINO (Wu et al. 2025; the objective of M3Ret): DINO's student–teacher
  self-distillation with no prototypes, softmax, centring or sharpening; the student's unit
  features are pulled to the teacher's by squared distance, and collapse is prevented by
  rewarding the coding rate :func:`coding_rate` of the student's features.
* :func:`barlow_twins_loss` — Barlow Twins (Zbontar et al. 2021): the cross-correlation of two
  views' batch-standardised features is pushed to the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: MAE's stabiliser of the per-patch variance.
MAE_EPS = 1e-6
#: SimDINO's coding-rate precision ε and weight γ (chosen so that the regulariser's range, a few to ~100
#: nats for 256-d features of a batch of 64, is of the order of the alignment term's).
CODING_RATE_EPS, CODING_RATE_WEIGHT = 0.5, 0.05
#: Barlow Twins' weight of the off-diagonal (redundancy) terms, and the standardisation's stabiliser.
BARLOW_LAMBDA, BARLOW_EPS = 5e-3, 1e-5


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, S, S)`` → ``(B, (S/patch)², patch·patch·C)``, patches row-major, each patch's values as (y, x, C)."""
    b, c, h, w = pixels.shape
    x = pixels.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def mae_loss(predicted: torch.Tensor, target_patches: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """``predicted`` and ``target_patches`` ``(B, N, P)`` (see :func:`patchify`), ``masked`` ``(B, N)`` bool:
    the mean over masked patches of the mean squared error to each patch normalised to zero mean, unit variance."""
    mean = target_patches.mean(dim=-1, keepdim=True)
    var = target_patches.var(dim=-1, keepdim=True)
    target = (target_patches - mean) / (var + MAE_EPS).sqrt()
    per_patch = ((predicted - target) ** 2).mean(dim=-1)
    weights = masked.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum()


def coding_rate(features: torch.Tensor, eps: float = CODING_RATE_EPS) -> torch.Tensor:
    """``R_ε(Z) = ½ logdet(I_d + d / (n ε²) · ZᵀZ)`` of ``(n, d)`` features: large when they fill many directions."""
    n, d = features.shape
    gram = features.T @ features
    return 0.5 * torch.logdet(torch.eye(d, dtype=features.dtype, device=features.device) + (d / (n * eps**2)) * gram)


def simdino_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], weight: float = CODING_RATE_WEIGHT,
                 eps: float = CODING_RATE_EPS) -> torch.Tensor:
    """``student``: ``(B, d)`` unit features of every view (the global ones first); ``teacher``: ``(B, d)``
    unit features of the global views (no gradient). The mean squared distance ``‖z_s − z_t‖²`` over
    pairs of a student view and a teacher global view of another crop, minus ``weight`` times the
    mean coding rate of the student's global views."""
    distances = [((s - t.detach()) ** 2).sum(dim=-1).mean()
                 for i, s in enumerate(student) for j, t in enumerate(teacher) if i != j]
    rate = torch.stack([coding_rate(s, eps) for s in student[:len(teacher)]]).mean()
    return torch.stack(distances).mean() - weight * rate


def barlow_twins_loss(first: torch.Tensor, second: torch.Tensor, off_diagonal_weight: float = BARLOW_LAMBDA) -> torch.Tensor:
    """``(B, d)`` features of two views: each dimension standardised over the batch (biased variance,
    as BatchNorm), ``C = z₁ᵀz₂ / B``, loss ``Σᵢ (1 − Cᵢᵢ)² + λ Σᵢ≠ⱼ Cᵢⱼ²``."""
    def standardise(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(dim=0)) / (z.var(dim=0, unbiased=False) + BARLOW_EPS).sqrt()

    correlation = standardise(first).T @ standardise(second) / first.shape[0]
    on_diagonal = ((1 - torch.diagonal(correlation)) ** 2).sum()
    off_diagonal = (correlation**2).sum() - (torch.diagonal(correlation) ** 2).sum()
    return on_diagonal + off_diagonal_weight * off_diagonal
