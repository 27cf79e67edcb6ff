"""Turning evaluation results into strict JSON: undefined values (NaN) become ``null``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python ones, non-finite floats as None and keys as text."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
