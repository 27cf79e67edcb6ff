"""Calibration of binary probabilities: reliability curve and expected calibration error.

``probabilities`` ``(N,)`` in [0, 1], ``labels`` ``(N,)`` 0/1. Bins have equal width;
bin ``b`` holds probabilities in ``(b/B, (b+1)/B]`` and the first also holds 0, as
scikit-learn's ``calibration_curve(strategy="uniform")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfm.errors import MedfmError
from medfm.eval.cls_metrics import as_binary


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per bin ``(B,)``: mean predicted probability, fraction of positives and row count (empty bins NaN, 0)."""

    mean_predicted: np.ndarray
    fraction_positive: np.ndarray
    counts: np.ndarray


def reliability_curve(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> ReliabilityCurve:
    probabilities, labels = as_binary(probabilities, labels)
    if n_bins < 1:
        raise MedfmError(f"n_bins must be >= 1, got {n_bins}")
    if probabilities.min(initial=0) < 0 or probabilities.max(initial=0) > 1:
        raise MedfmError("calibration needs probabilities in [0, 1]; these scores are outside it")
    bins = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], probabilities)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(bins, probabilities, n_bins) / counts
        fraction_positive = np.bincount(bins, labels, n_bins) / counts
    return ReliabilityCurve(mean_predicted, fraction_positive, counts)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE = Σ_b (n_b / N) |fraction positive_b - mean predicted_b| over non-empty bins."""
    curve = reliability_curve(probabilities, labels, n_bins)
    filled = curve.counts > 0
    gaps = np.abs(curve.fraction_positive[filled] - curve.mean_predicted[filled])
    return float(np.sum(curve.counts[filled] * gaps) / curve.counts.sum())
