"""Measures of a synthetic image set on embeddings: improved precision and recall, the near-copy
(memorisation) check, and the paired comparison of a classifier trained without and with it.

Embeddings are ``(N, D)`` rows from one encoder; the functions are pure and never see a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.eval.bootstrap import bootstrap
from medfm.eval.cls_metrics import accuracy_and_auc

#: Neighbours whose distance sets each manifold ball (Kynkäänniemi et al. 2019 use k = 3).
DEFAULT_K = 3
#: A sample is a near-copy when it is closer to a training image than this share of held-out real images are.
NEAR_COPY_QUANTILE = 0.99
#: ``evaluate synthetic``'s downstream rows, as label and key (the class-weighted probes only for classifiers).
DOWNSTREAM_ROWS = (("real only", "real_only"), ("real + synthetic", "real_plus_synthetic"), ("difference", "difference"),
                   ("real only, class-weighted", "real_only_class_weighted"),
                   ("real + synthetic, class-weighted", "real_plus_synthetic_class_weighted"),
                   ("difference, class-weighted", "difference_class_weighted"))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` Euclidean distances."""
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _manifold_coverage(points: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    """``(len(points),)`` bool: whether each point lies in a ball around a centre whose radius is the
    distance from that centre to its ``k``-th nearest other centre."""
    radii = np.sort(_distances(centres, centres), axis=1)[:, k]  # column 0 is the centre itself
    return (_distances(points, centres) <= radii[None]).any(axis=1)


def check_set_sizes(n_real: int, n_synthetic: int, k: int) -> None:
    """MedfmError unless :func:`precision_recall` with ``k`` neighbours can use sets of these sizes (checked
    before an evaluation spends its time)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MedfmError(f"k must be a positive whole number; got {k!r}")
    if min(n_real, n_synthetic) <= k:
        raise MedfmError(f"precision and recall with k={k} need more than {k} images in each set; "
                         f"got {n_real} real and {n_synthetic} synthetic")


def precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = DEFAULT_K) -> dict[str, Any]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) of ``(M, D)`` synthetic against
    ``(N, D)`` real embeddings: precision is the share of synthetic rows inside the real manifold (the union
    of balls reaching each real row's ``k``-th nearest real neighbour), recall the share of real rows inside
    the synthetic manifold. ``f1`` is their harmonic mean (0 when both are 0)."""
    real, synthetic = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise MedfmError(f"embeddings must be (N, D) with the same D, got {real.shape} and {synthetic.shape}")
    check_set_sizes(len(real), len(synthetic), k)
    precision = float(_manifold_coverage(synthetic, real, k).mean())
    recall = float(_manifold_coverage(real, synthetic, k).mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "k": k, "n_real": len(real), "n_synthetic": len(synthetic)}


def nearest_cosine(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``(M, D)`` queries, the index of its nearest of ``(N, D)`` references by cosine
    similarity and that similarity: two ``(M,)`` arrays."""
    q = np.asarray(queries, np.float64)
    r = np.asarray(references, np.float64)
    similarity = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    nearest = similarity.argmax(axis=1)
    return nearest, similarity[np.arange(len(q)), nearest]


def near_copies(synthetic: np.ndarray, training: np.ndarray, heldout: np.ndarray,
                quantile: float = NEAR_COPY_QUANTILE) -> dict[str, Any]:
    """The memorisation check: each synthetic row's nearest training row by cosine similarity, flagged as a
    near-copy when closer than ``quantile`` of held-out real rows come to their nearest training row (a
    bar set by the data: real images of unseen cases show how close "new" gets with this encoder).

    Returns the ``threshold``, summaries of both sets' nearest similarities, ``n_near_copies`` and one
    entry per synthetic row (``nearest_training`` index, ``cosine``, ``near_copy``).
    """
    if not 0.0 < quantile < 1.0:
        raise MedfmError(f"the near-copy quantile must lie between 0 and 1; got {quantile}")
    nearest, similarity = nearest_cosine(synthetic, training)
    _, heldout_similarity = nearest_cosine(heldout, training)
    threshold = float(np.quantile(heldout_similarity, quantile))
    flagged = similarity > threshold
    return {
        "threshold": threshold,
        "rule": f"cosine to the nearest training image above the {quantile:.0%} quantile of held-out real images' own",
        "synthetic_nearest_cosine": {"max": float(similarity.max()), "median": float(np.median(similarity))},
        "heldout_nearest_cosine": {"max": float(heldout_similarity.max()), "median": float(np.median(heldout_similarity))},
        "n_near_copies": int(flagged.sum()),
        "samples": [{"nearest_training": int(j), "cosine": float(c), "near_copy": bool(f)}
                    for j, c, f in zip(nearest, similarity, flagged)],
    }


def class_measures(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Accuracy and AUC (:func:`~medfm.eval.cls_metrics.accuracy_and_auc`) of ``(N, K)`` scores against ``(N,)``
    class indices, the balanced accuracy (mean recall over the classes present) and each class's recall
    (``recall <class>``; NaN where the class is absent): with a rare class, accuracy alone hides what matters."""
    predicted = np.asarray(scores).argmax(axis=1)
    recalls = {f"recall {name}": float(np.mean(predicted[labels == k] == k)) if np.any(labels == k) else float("nan")
               for k, name in enumerate(classes)}
    return {**accuracy_and_auc(scores, labels), "balanced_accuracy": float(np.nanmean(list(recalls.values()))), **recalls}


def compare_classifiers(labels: np.ndarray, baseline: np.ndarray, candidate: np.ndarray, classes: Sequence[str], *,
                        n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`class_measures` of two classifiers' ``(N, K)`` scores on the same rows (``(N,)`` indices into
    ``classes``), and candidate minus baseline, each with a 95 % bootstrap interval over the same resamples of
    rows (a paired comparison)."""
    labels = np.asarray(labels)
    if np.shape(baseline) != np.shape(candidate) or len(labels) != len(baseline) or np.shape(baseline)[1:] != (len(classes),):
        raise MedfmError(f"both classifiers need ({len(labels)}, {len(classes)}) scores; "
                         f"got {np.shape(baseline)} and {np.shape(candidate)}")

    def statistic(rows: np.ndarray) -> dict[tuple[str, str], float]:
        a, b = class_measures(baseline[rows], labels[rows], classes), class_measures(candidate[rows], labels[rows], classes)
        return {**{("baseline", m): v for m, v in a.items()}, **{("candidate", m): v for m, v in b.items()},
                **{("difference", m): b[m] - a[m] for m in a}}

    result: dict[str, dict[str, dict[str, float]]] = {"baseline": {}, "candidate": {}, "difference": {}}
    for (side, metric), estimate in bootstrap(statistic, len(labels), n_boot=n_boot, seed=seed).items():
        result[side][metric] = estimate.as_dict()
    return result


def compare_segmenters(baseline: dict[str, np.ndarray], candidate: dict[str, np.ndarray], *, n_boot: int = 1000,
                       seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """The mean of each per-image measure (``{name: (N,) array}``, NaN where undefined) of two segmenters on the same
    held-out images, and candidate minus baseline, each with a 95 % interval over the same resamples of images (a
    measure averaged over the images where both segmenters define it): ``{"baseline", "candidate", "difference"}``
    of ``{measure: estimate}``, as :func:`compare_classifiers` gives them."""
    metrics = [m for m in baseline if m in candidate]
    both = {m: np.isfinite(baseline[m]) & np.isfinite(candidate[m]) for m in metrics}

    def statistic(rows: np.ndarray) -> dict[tuple[str, str], float]:
        result = {}
        for metric in metrics:
            picked = rows[both[metric][rows]]
            a = float(baseline[metric][picked].mean()) if len(picked) else float("nan")
            b = float(candidate[metric][picked].mean()) if len(picked) else float("nan")
            result.update({("baseline", metric): a, ("candidate", metric): b, ("difference", metric): b - a})
        return result

    comparison: dict[str, dict[str, dict[str, float]]] = {"baseline": {}, "candidate": {}, "difference": {}}
    for (side, metric), estimate in bootstrap(statistic, len(baseline["dice"]), n_boot=n_boot, seed=seed).items():
        comparison[side][metric] = estimate.as_dict()
    return comparison
