"""Choosing a decision threshold, as a scikit-learn style estimator."""

from __future__ import annotations

import numpy as np

from medfm.errors import MedfmError
from medfm.eval.cls_metrics import as_binary, counts_by_threshold

TARGETS = ("sensitivity", "specificity", "youden")


class OperatingPoint:
    """Threshold on binary scores for a target sensitivity or specificity, or Youden's J.

    ``target="sensitivity", value=0.9``: the highest threshold whose sensitivity is at
    least 0.9 (so the best specificity that keeps it); ``"specificity"``: the lowest
    threshold whose specificity is at least ``value``; ``"youden"``: the threshold that
    maximises sensitivity + specificity - 1 (``value`` unused; ties go to the higher
    threshold). Rows with ``score >= threshold_`` are called positive.

    Fitted attributes: ``threshold_``, and ``sensitivity_``, ``specificity_`` reached on
    the fitting data.
    """

    def __init__(self, target: str = "youden", value: float | None = None) -> None:
        self.target = target
        self.value = value

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> OperatingPoint:
        """``scores`` ``(N,)``, ``labels`` ``(N,)`` 0/1 with both classes present."""
        if self.target not in TARGETS:
            raise MedfmError(f"target must be one of {', '.join(TARGETS)}; got {self.target!r}")
        if self.target != "youden" and (self.value is None or not 0 <= self.value <= 1):
            raise MedfmError(f"target {self.target!r} needs a value between 0 and 1, got {self.value!r}")
        scores, labels = as_binary(scores, labels)
        n_pos, n_neg = int(labels.sum()), int((~labels).sum())
        if n_pos == 0 or n_neg == 0:
            raise MedfmError("choosing an operating point needs both positive and negative rows")
        thresholds, tps, fps = counts_by_threshold(scores, labels)
        # one more candidate above every score: nothing called positive
        thresholds = np.r_[np.inf, thresholds]
        sensitivity = np.r_[0, tps] / n_pos
        specificity = 1 - np.r_[0, fps] / n_neg
        if self.target == "sensitivity":
            best = int(np.flatnonzero(sensitivity >= self.value)[0])
        elif self.target == "specificity":
            best = int(np.flatnonzero(specificity >= self.value)[-1])
        else:
            best = int(np.argmax(sensitivity + specificity))
        self.threshold_ = float(thresholds[best])
        self.sensitivity_ = float(sensitivity[best])
        self.specificity_ = float(specificity[best])
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: called positive."""
        if not hasattr(self, "threshold_"):
            raise MedfmError("this OperatingPoint is not fitted yet; call fit(scores, labels) first")
        return np.asarray(scores, dtype=np.float64) >= self.threshold_

    def __repr__(self) -> str:
        return f"OperatingPoint(target={self.target!r}, value={self.value!r})"
