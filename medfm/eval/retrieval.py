"""Retrieval and zero-shot measures of an embedding model, as pure functions over unit embeddings.

Image→image retrieval is leave-one-out: every image queries all the others (never
itself, nor images of its own group, so that slices or frames of one patient do not
count as finds); an image of the same class is relevant. Text→image retrieval ranks
every image for each caption; a caption shared by several images has all of them as
relevant. Intervals are percentile bootstraps over queries (:mod:`medfm.eval.bootstrap`),
resampling whole groups when groups are given.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from medfm.errors import MedfmError
from medfm.eval.bootstrap import bootstrap
from medfm.eval.cls_metrics import average_precision, one_vs_rest_auc

#: Cut-offs reported when none are given.
DEFAULT_KS = (1, 5, 10)


def recall_hits(text_embeddings: np.ndarray, image_embeddings: np.ndarray, relevant: Sequence[set[int]], k: int) -> np.ndarray:
    """``(Q,)`` bool: whether query ``q`` (a row of ``(Q, D)``) finds an image of ``relevant[q]``
    among its top ``k`` of ``(N, D)`` images by cosine."""
    top = np.argsort(-(text_embeddings @ image_embeddings.T), axis=1, kind="stable")[:, :k]
    return np.array([bool(relevant[q] & set(top[q].tolist())) for q in range(len(top))], dtype=bool)


def recall_at_k(text_embeddings: np.ndarray, image_embeddings: np.ndarray, relevant: Sequence[set[int]], k: int = 10) -> float:
    """Fraction of queries with a relevant image among their top ``k`` (see :func:`recall_hits`)."""
    return float(recall_hits(text_embeddings, image_embeddings, relevant, k).mean())


def _group_indices(n: int, groups: Sequence[Hashable] | None) -> np.ndarray:
    """``(n,)`` group index of each row (each row its own group without ``groups``): a query never finds its own group."""
    return np.arange(n) if groups is None else np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]


def retrieval_cutoffs(ks: Sequence[int] | None, n: int, groups: Sequence[Hashable] | None = None) -> tuple[int, ...]:
    """The cut-offs ``ks`` of ``n`` images, refused past the candidates a query has (the others outside its group),
    where precision@k would count missing candidates as misses; no ``ks``: those of :data:`DEFAULT_KS` within them."""
    group_of = _group_indices(n, groups)
    candidates = n - int(np.bincount(group_of).min()) if n else 0
    if ks is None:
        return tuple(k for k in DEFAULT_KS if k <= candidates) or (1,)
    if too_many := [k for k in ks if k > candidates]:
        left_out = "itself" if groups is None else "its own group"
        raise MedfmError(f"cut-off k={max(too_many)} (--ks) is more than the {candidates} candidates a query has "
                         f"({n} images, less {left_out}); give cut-offs up to {candidates}")
    return tuple(ks)


def leave_one_out_retrieval(embeddings: np.ndarray, labels: Sequence[Hashable], ks: Sequence[int] | None = None,
                            groups: Sequence[Hashable] | None = None) -> dict[str, np.ndarray]:
    """Per-query image→image measures: ``precision@k`` ``(N,)`` for each ``k`` and ``average_precision``
    ``(N,)`` (NaN for a query with no relevant image in its gallery), ``ks`` as :func:`retrieval_cutoffs` takes
    them. ``embeddings`` ``(N, D)``
    unit rows; ``labels`` and ``groups`` one per row; a query's gallery is every other row
    outside its group."""
    embeddings = np.asarray(embeddings, np.float64)
    labels = np.asarray([str(v) for v in labels])
    n = len(labels)
    if embeddings.ndim != 2 or len(embeddings) != n:
        raise MedfmError(f"embeddings must be (N, D) with one row per label ({n}); got {embeddings.shape}")
    if n < 2:
        raise MedfmError(f"retrieval needs at least 2 images; got {n}")
    ks = retrieval_cutoffs(ks, n, groups)
    group_of = _group_indices(n, groups)
    similarity = embeddings @ embeddings.T
    out = {f"precision@{k}": np.full(n, np.nan) for k in ks} | {"average_precision": np.full(n, np.nan)}
    for query in range(n):
        gallery = np.flatnonzero(group_of != group_of[query])
        if gallery.size == 0:
            continue
        scores, relevant = similarity[query, gallery], labels[gallery] == labels[query]
        order = np.argsort(-scores, kind="stable")
        for k in ks:
            out[f"precision@{k}"][query] = relevant[order[:k]].sum() / k
        out["average_precision"][query] = average_precision(scores, relevant)
    return out


def summarise_by_class(per_query: dict[str, np.ndarray], labels: Sequence[Hashable], *, groups: Sequence[Hashable] | None = None,
                       n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of each per-query measure over all queries (``overall``; the mean average precision
    is ``mAP``) and over each class's queries (``by_class``), each with its bootstrap interval;
    queries with an undefined value (NaN) are left out of that value: a query whose class has no other image
    (outside its group) has no average precision, so such queries are out of ``mAP``, counted as
    ``queries_without_relevant`` overall and by class (a class of such queries only has no ``mAP``)."""
    labels = np.asarray([str(v) for v in labels])
    classes = sorted(set(labels.tolist()))

    def statistic(rows: np.ndarray) -> dict[tuple[str, str], float]:
        values = {}
        for name, measure in per_query.items():
            values[("overall", name)] = float(np.nanmean(measure[rows])) if np.isfinite(measure[rows]).any() else float("nan")
            for cls in classes:
                chosen = measure[rows[labels[rows] == cls]]
                values[(cls, name)] = float(np.nanmean(chosen)) if np.isfinite(chosen).any() else float("nan")
        return values

    estimates = bootstrap(statistic, len(labels), clusters=groups, n_boot=n_boot, seed=seed)
    named = {name: ("mAP" if name == "average_precision" else name) for name in per_query}
    alone = np.isnan(per_query["average_precision"]) if "average_precision" in per_query else np.zeros(len(labels), bool)
    return {"overall": {named[name]: estimates[("overall", name)].as_dict() for name in per_query},
            "queries_without_relevant": int(alone.sum()),
            "by_class": {cls: {"n": int(np.sum(labels == cls)), "queries_without_relevant": int(alone[labels == cls].sum()),
                               **{named[name]: estimates[(cls, name)].as_dict() for name in per_query}} for cls in classes}}


def text_to_image_recall(text_embeddings: np.ndarray, image_embeddings: np.ndarray, relevant: Sequence[set[int]],
                         ks: Sequence[int] = DEFAULT_KS, n_boot: int = 1000, seed: int = 0) -> dict:
    """Recall@k of each ``k`` over the ``(Q, D)`` text queries, with bootstrap intervals over queries."""
    hits = {k: recall_hits(text_embeddings, image_embeddings, relevant, k) for k in ks}
    estimates = bootstrap(lambda rows: {k: float(hits[k][rows].mean()) for k in ks}, len(relevant), n_boot=n_boot, seed=seed)
    return {"queries": len(relevant), "images": len(image_embeddings),
            **{f"recall@{k}": estimates[k].as_dict() for k in ks}}


def zero_shot_summary(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                      groups: Sequence[Hashable] | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy and macro one-vs-rest AUC of ``(N, K)`` zero-shot ``probabilities`` against ``(N,)``
    class indices, with bootstrap intervals, and each class's recall and AUC. The macro AUC
    averages the classes present in ``labels`` (a label offered but never true has no AUC)."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    present = sorted(set(labels.tolist()))
    predicted = probabilities.argmax(axis=1)

    def statistic(rows: np.ndarray) -> dict[str, float]:
        aucs = one_vs_rest_auc(probabilities[rows], labels[rows])
        values = {"accuracy": float(np.mean(predicted[rows] == labels[rows])), "macro_auc": float(np.mean(aucs[present]))}
        for k in present:
            chosen = rows[labels[rows] == k]
            values[f"recall:{k}"] = float(np.mean(predicted[chosen] == k)) if chosen.size else float("nan")
            values[f"auc:{k}"] = float(aucs[k])
        return values

    estimates = bootstrap(statistic, len(labels), clusters=groups, n_boot=n_boot, seed=seed)
    return {"n": len(labels), "classes": len(class_names), "accuracy": estimates["accuracy"].as_dict(),
            "macro_auc": estimates["macro_auc"].as_dict(),
            "by_class": {class_names[k]: {"n": int(np.sum(labels == k)), "recall": estimates[f"recall:{k}"].as_dict(),
                                          "auc": estimates[f"auc:{k}"].as_dict()} for k in present}}
