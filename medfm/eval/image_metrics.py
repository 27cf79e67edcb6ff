"""Fidelity of a restored or generated image to its reference: PSNR and SSIM, as pure functions.

Both take ``(H, W)`` float planes on the same ``data_range`` (1 for values in [0, 1]) and ignore a
``border`` of pixels on each side, as super-resolution benchmarks do (a network's edge pixels see
padding). SSIM is MONAI's (Gaussian window 11, σ 1.5, K1 0.01, K2 0.03: Wang et al. 2004).
"""

from __future__ import annotations

import math

import numpy as np


def _crop(plane: np.ndarray, border: int) -> np.ndarray:
    return plane[border: plane.shape[0] - border, border: plane.shape[1] - border] if border else plane


def psnr(estimate: np.ndarray, reference: np.ndarray, data_range: float = 1.0, border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical planes."""
    if estimate.shape != reference.shape:
        raise ValueError(f"PSNR compares planes of one shape; got {estimate.shape} and {reference.shape}")
    error = float(np.mean((_crop(estimate, border).astype(np.float64) - _crop(reference, border)) ** 2))
    return math.inf if error == 0 else 10 * math.log10(data_range**2 / error)


def ssim(estimate: np.ndarray, reference: np.ndarray, data_range: float = 1.0, border: int = 0) -> float:
    """Mean structural similarity (1 for identical planes)."""
    import torch
    from monai.metrics import SSIMMetric

    if estimate.shape != reference.shape:
        raise ValueError(f"SSIM compares planes of one shape; got {estimate.shape} and {reference.shape}")
    as_batch = [torch.from_numpy(np.ascontiguousarray(_crop(p, border), np.float32))[None, None] for p in (estimate, reference)]
    return float(SSIMMetric(spatial_dims=2, data_range=data_range)(*as_batch).mean())
