"""Classification metrics as pure functions over score and label arrays.

Binary: ``scores`` ``(N,)`` floats (higher means more likely positive), ``labels`` ``(N,)``
0/1. A row is called positive when ``score >= threshold``. A metric whose definition
needs a class that the rows lack (AUC without negatives, PPV with nothing called
positive) is NaN rather than an error, so that bootstrap resamples can drop it.
Multi-class: ``scores`` ``(N, K)``, ``labels`` ``(N,)`` class indices ``0..K-1``.
Multi-label: ``scores`` and ``labels`` ``(N, K)``, labels 0/1 per column.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from medfm.errors import MedfmError


def as_binary(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checked binary inputs: ``(N,)`` finite float64 scores and ``(N,)`` bool labels (from 0/1), else :class:`MedfmError`."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise MedfmError(f"scores and labels must both be (N,), got {scores.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise MedfmError(f"binary labels must be 0 or 1, got values {np.unique(labels)[:5].tolist()}")
    if not np.isfinite(scores).all():
        raise MedfmError("scores must be finite numbers (found NaN or infinity)")
    return scores, labels.astype(bool)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count ½."""
    scores, labels = as_binary(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U from mid-ranks equals the trapezoidal area, ties included
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def counts_by_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds, descending, with true and false positives at ``score >= threshold``."""
    order = np.argsort(-scores, kind="stable")
    ordered, hits = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    tps = np.cumsum(hits)[last]
    return ordered[last], tps, last + 1 - tps


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold +inf."""
    scores, labels = as_binary(scores, labels)
    thresholds, tps, fps = counts_by_threshold(scores, labels)
    n_pos, n_neg = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thresholds]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn's step sum Σ (Rₖ - Rₖ₋₁) Pₖ; NaN without positives."""
    scores, labels = as_binary(scores, labels)
    if not labels.any():
        return float("nan")
    _, tps, fps = counts_by_threshold(scores, labels)
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV when rows with ``score >= threshold`` are called positive."""
    scores, labels = as_binary(scores, labels)
    called = scores >= threshold
    tp, fp = np.sum(called & labels), np.sum(called & ~labels)
    fn, tn = np.sum(~called & labels), np.sum(~called & ~labels)

    def ratio(num: int, den: int) -> float:
        return float(num / den) if den else float("nan")

    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
    }


def one_vs_rest_auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(K,)`` AUC of each class against the rest; ``labels`` ``(N,)`` class indices."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise MedfmError(f"multi-class scores must be (N, K) and labels (N,), got {scores.shape} and {labels.shape}")
    if not np.isin(labels, np.arange(scores.shape[1])).all():
        raise MedfmError(f"class labels must be indices 0..{scores.shape[1] - 1}")
    return np.array([roc_auc(scores[:, k], labels == k) for k in range(scores.shape[1])])


def multilabel_auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(K,)`` AUC of each column; ``scores`` and ``labels`` ``(N, K)``."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise MedfmError(f"multi-label scores and labels must both be (N, K), got {scores.shape} and {labels.shape}")
    return np.array([roc_auc(scores[:, k], labels[:, k]) for k in range(scores.shape[1])])


def macro(values: np.ndarray) -> float:
    """The unweighted mean over classes; NaN if any class is undefined, so that no class drops out silently."""
    return float(np.mean(values))


def accuracy_and_auc(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``accuracy`` (arg-max of ``(N, K)`` class scores against ``(N,)`` class indices) and ``auc``: the
    positive column's AUC for two classes, else the macro one-vs-rest AUC."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    auc = roc_auc(scores[:, 1], labels) if scores.shape[1] == 2 else macro(one_vs_rest_auc(scores, labels))
    return {"accuracy": float(np.mean(scores.argmax(axis=1) == labels)), "auc": auc}
