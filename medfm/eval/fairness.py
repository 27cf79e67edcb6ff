"""Binary classification metrics per subgroup of a metadata column, and the gaps between them.

``scores`` ``(N,)``, ``labels`` ``(N,)`` 0/1, ``groups`` ``(N,)`` one subgroup key per row
(``"F"``, ``"60-70"``, a site name...). Every value comes with a percentile bootstrap
interval; all of them share the same resamples (of patients, when ``clusters`` is given).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from medfm.eval.bootstrap import Estimate, bootstrap
from medfm.eval.cls_metrics import as_binary, average_precision, rates_at, roc_auc

#: Metrics reported per subgroup, and whose gaps are reported.
SUBGROUP_METRICS = ("auc", "auprc", "sensitivity", "specificity", "ppv", "npv")


@dataclass(frozen=True)
class SubgroupAnalysis:
    """``groups[g][metric]``, ``gaps[metric]["difference" | "ratio"]`` (largest minus smallest,
    smallest over largest subgroup value) and ``equalised_odds_difference``: the larger of the
    sensitivity gap and the false-positive-rate gap, as fairlearn's ``between_groups``.
    ``sizes[g]`` is ``(rows, positive rows)``. Gaps cover the subgroups where the metric is
    defined on all rows.
    """

    groups: dict[str, dict[str, Estimate]]
    sizes: dict[str, tuple[int, int]]
    gaps: dict[str, dict[str, Estimate]]
    equalised_odds_difference: Estimate


def _metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    return {
        "auc": roc_auc(scores, labels),
        "auprc": average_precision(scores, labels),
        **rates_at(scores, labels, threshold),
    }


def _spread(values: np.ndarray) -> tuple[float, float]:
    """Largest minus smallest and smallest over largest; NaN propagates."""
    if values.size == 0:
        return float("nan"), float("nan")
    high, low = np.max(values), np.min(values)
    return float(high - low), float(low / high) if high else float("nan")


def subgroup_analysis(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[Hashable] | np.ndarray,
    threshold: float,
    *,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> SubgroupAnalysis:
    """Per-subgroup metrics at ``threshold`` (``score >= threshold`` is positive) with their gaps."""
    scores, labels = as_binary(scores, labels)
    keys = np.asarray([str(g) for g in groups])
    names = sorted(set(keys.tolist()))
    members = {name: keys == name for name in names}
    full = {name: _metrics(scores[m], labels[m], threshold) for name, m in members.items()}
    # the subgroups entering each gap are fixed on all rows, so resamples compare like with like
    defined = {metric: [n for n in names if not np.isnan(full[n][metric])] for metric in SUBGROUP_METRICS}

    def statistic(rows: np.ndarray) -> dict[Hashable, float]:
        s, y, k = scores[rows], labels[rows], keys[rows]
        per = {}
        for name in names:
            chosen = k == name
            per[name] = _metrics(s[chosen], y[chosen], threshold) if chosen.any() else dict.fromkeys(SUBGROUP_METRICS, np.nan)
        out: dict[Hashable, float] = {(n, m): v for n, values in per.items() for m, v in values.items()}
        for metric, included in defined.items():
            out[("difference", metric)], out[("ratio", metric)] = _spread(np.array([per[n][metric] for n in included]))
        tpr = np.array([per[n]["sensitivity"] for n in defined["sensitivity"]])
        fpr = np.array([1 - per[n]["specificity"] for n in defined["specificity"]])
        out["eod"] = float(np.max([_spread(tpr)[0], _spread(fpr)[0]]))
        return out

    estimates = bootstrap(statistic, len(scores), clusters=clusters, n_boot=n_boot, confidence=confidence, seed=seed)
    return SubgroupAnalysis(
        groups={n: {m: estimates[(n, m)] for m in SUBGROUP_METRICS} for n in names},
        sizes={n: (int(m.sum()), int(labels[m].sum())) for n, m in members.items()},
        gaps={m: {"difference": estimates[("difference", m)], "ratio": estimates[("ratio", m)]} for m in SUBGROUP_METRICS},
        equalised_odds_difference=estimates["eod"],
    )
