"""Summaries of per-case metric values."""

from __future__ import annotations

import numpy as np


def summarise(values: np.ndarray) -> dict[str, float]:
    """Mean and median of ``(N,)`` values with NaNs left out, and how many there were."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    return {
        "mean": float(defined.mean()) if defined.size else float("nan"),
        "median": float(np.median(defined)) if defined.size else float("nan"),
        "n": int(defined.size),
        "n_undefined": int(values.size - defined.size),
    }
