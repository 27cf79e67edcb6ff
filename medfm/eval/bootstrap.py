"""Percentile bootstrap confidence intervals, resampling rows or whole patients.

Every statistic of one evaluation is computed on the same resamples, so intervals of
related quantities (a subgroup's AUC and the gap it takes part in) are consistent.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from medfm.errors import MedfmError

#: ``statistic(rows)`` gets an ``(n,)`` int array of row indices, repeats allowed, and
#: returns named values; NaN marks a value undefined on that resample (one class only).
Statistic = Callable[[np.ndarray], dict[Hashable, float]]


@dataclass(frozen=True)
class Estimate:
    """A point estimate on all rows with its percentile bootstrap interval.

    ``n_valid`` counts the resamples on which the statistic was defined; the interval is
    taken over those alone.
    """

    value: float
    low: float
    high: float
    confidence: float
    n_valid: int

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def resamples(
    n_rows: int, *, clusters: Sequence[Hashable] | np.ndarray | None = None, n_boot: int = 1000, seed: int = 0
) -> list[np.ndarray]:
    """``n_boot`` arrays of row indices drawn with replacement.

    With ``clusters`` (one key per row, a patient id), whole clusters are drawn, as many
    as there are clusters, and each brings all its rows: rows of one patient are not
    independent, and resampling them apart narrows the interval falsely.
    """
    if n_boot < 1:
        raise MedfmError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if clusters is None:
        return [rng.integers(0, n_rows, n_rows) for _ in range(n_boot)]
    keys = np.asarray(clusters)
    if keys.shape != (n_rows,):
        raise MedfmError(f"clusters must give one key per row ({n_rows}), got shape {keys.shape}")
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = []
    for _ in range(n_boot):
        chosen = rng.integers(0, len(counts), len(counts))
        lengths = counts[chosen]
        # position within each chosen cluster, added to that cluster's start in `order`
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out.append(order[np.repeat(starts[chosen], lengths) + offsets])
    return out


def bootstrap(
    statistic: Statistic,
    n_rows: int,
    *,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[Hashable, Estimate]:
    """Each value of ``statistic`` on all rows, with its percentile interval over resamples."""
    if not 0 < confidence < 1:
        raise MedfmError(f"confidence must be between 0 and 1, got {confidence}")
    point = statistic(np.arange(n_rows))
    draws = {key: [] for key in point}
    for rows in resamples(n_rows, clusters=clusters, n_boot=n_boot, seed=seed):
        for key, value in statistic(rows).items():
            draws[key].append(value)
    tail = 100 * (1 - confidence) / 2
    result = {}
    for key, value in point.items():
        values = np.asarray(draws[key], dtype=np.float64)
        values = values[~np.isnan(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if values.size else (np.nan, np.nan)
        result[key] = Estimate(float(value), float(low), float(high), confidence, int(values.size))
    return result
