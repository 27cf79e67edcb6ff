"""Preprocessing shared by medfm's own models: one raw plane to a fixed-size tensor.

Both medfm-clip-small and medfm-interactive see planes through :func:`prepare_plane`, so
that any dtype and range (CT in HU, 16-bit MR, 8-bit photos) arrives the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError

#: Percentiles that define a plane's intensity window: robust to hot pixels and burn-in text.
ROBUST_PERCENTILES = (0.5, 99.5)
#: Percentiles are taken on at most this many samples so that large photographs stay cheap.
_MAX_PERCENTILE_SAMPLES = 1 << 18


def _channels(plane: np.ndarray) -> np.ndarray:
    """``plane`` as ``(rows, columns, 1 or 3)``: grey gains an axis, RGBA loses alpha, 2 channels keep the first."""
    array = np.asarray(plane)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise MedfmError(f"a plane must be (rows, columns) or (rows, columns, C); got shape {np.shape(plane)}")
    return array[:, :, :3] if array.shape[2] >= 3 else array[:, :, :1]


def robust_window(plane: np.ndarray) -> tuple[float, float]:
    """The (low, high) intensity window :func:`prepare_plane` maps to [0, 1]: the plane's
    ``ROBUST_PERCENTILES``, taken over all its channels."""
    values = _channels(plane).reshape(-1)
    step = max(1, values.size // _MAX_PERCENTILE_SAMPLES)
    low, high = np.percentile(values[::step].astype(np.float32), ROBUST_PERCENTILES)
    return low, high


def prepare_plane(plane: np.ndarray, size: int, window: tuple[float, float] | None = None) -> torch.Tensor:
    """One raw plane ``(rows, columns)`` or ``(rows, columns, C)`` of any dtype → ``(3, size, size)``
    float32 in [0, 1]: robust min–max window, grey (or 2-channel) to 3 channels, RGBA loses alpha,
    bilinear resize to a square (aspect is not kept: the whole field of view stays in).

    ``window`` replaces the plane's own :func:`robust_window`: a crop of a plane windowed with the
    whole plane's window keeps the intensities the model saw for the whole plane.
    """
    array = _channels(plane)
    values = array.astype(np.float32, copy=False)
    # float64 bounds: the window arithmetic runs in float64 whatever the plane's dtype
    low, high = (np.float64(bound) for bound in (robust_window(array) if window is None else window))
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0, dtype=np.float32) if high > low else np.zeros_like(values)
    tensor = torch.from_numpy(np.ascontiguousarray(scaled)).permute(2, 0, 1).expand(3, -1, -1)
    resized = F.interpolate(tensor[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp_(0.0, 1.0)
