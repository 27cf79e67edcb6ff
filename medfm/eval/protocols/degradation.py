"""Degradation curves: a model's metric against corruption severity, with the clean baseline.

``predict`` is any callable from an image to a prediction (a segmenter's mask, a
classifier's score); ``metric(prediction, reference)`` is a medfm metric such as
:func:`medfm.eval.seg_metrics.dice`. Each case's image is corrupted by every corruption
at every severity; for one case and corruption the random generator is seeded the same
at every severity (from ``seed``, the case index and the corruption), so a curve shows
the effect of severity and not of a new noise draw. The parameters applied to each
case are recorded, so any corrupted image can be rebuilt with
:meth:`~medfm.eval.corruptions.Corruption.apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.eval.corruptions import CORRUPTIONS, SEVERITIES, get_corruption
from medfm.io.image import Image
from medfm.progress import progress_bar
from medfm.scale import LocalRunner, Runner
from medfm.serialize import json_ready

Case = tuple[np.ndarray | Image, Any]


def _spatial(image: np.ndarray | Image) -> np.ndarray:
    if isinstance(image, Image):
        if image.num_frames > 1 or image.num_channels > 1:
            raise MedfmError(f"corruptions take one grey frame; this image has shape {image.shape} (I, J, K, T, C)")
        array = image.array[:, :, :, 0, 0]
        return array[:, :, 0] if image.is_2d else array
    return np.asarray(image)


def _like(image: np.ndarray | Image, array: np.ndarray) -> np.ndarray | Image:
    """The corrupted array in the form the caller gave: an Image on the same grid, or an array."""
    return image.with_array(array) if isinstance(image, Image) else array


@dataclass
class RobustnessResult:
    """``clean``: ``(N,)`` metric per case; ``scores[corruption]``: ``(S, N)`` per severity and case;
    ``params[corruption][s][n]``: what was applied to case ``n`` at severity ``severities[s]``.
    """

    metric: str
    severities: tuple[int, ...]
    clean: np.ndarray
    scores: dict[str, np.ndarray]
    params: dict[str, list[list[dict[str, Any]]]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: means over cases (NaN left out) per severity, per case values, and the parameters."""
        clean_mean = float(np.nanmean(self.clean)) if np.isfinite(self.clean).any() else float("nan")
        curves = {}
        for name, scores in self.scores.items():
            means = [float(np.nanmean(row)) if np.isfinite(row).any() else float("nan") for row in scores]
            curves[name] = {"mean": means, "drop": [clean_mean - m for m in means], "per_case": scores, "params": self.params[name]}
        all_means = [m for c in curves.values() for m in c["mean"]]
        return json_ready({
            "metric": self.metric, "severities": list(self.severities), "n_cases": len(self.clean),
            "clean": {"mean": clean_mean, "per_case": self.clean},
            "mean_corrupted": float(np.nanmean(all_means)) if np.isfinite(all_means).any() else float("nan"),
            "corruptions": curves,
        })


def degradation_curves(
    predict: Callable[[Any], Any],
    cases: Iterable[Case],
    metric: Callable[[Any, Any], float],
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    progress: bool = False,
    runner: Runner | None = None,
) -> RobustnessResult:
    """``metric(predict(corrupted image), reference)`` for every case, corruption and severity.

    ``cases`` are ``(image, reference)`` pairs; an image is an ``(I, J)`` or ``(I, J, K)``
    array or a single-frame grey :class:`~medfm.io.image.Image`, and ``predict`` gets the
    corrupted image in the same form. ``progress`` shows a bar of the predictions on stderr.
    ``runner`` (whose workers each hold a ``predict`` like this one, see
    :func:`medfm.eval.protocols.robustness.evaluate_robustness`) scores the cases on its workers,
    each case whole on one; every draw is seeded by the case, so the result is the same.
    """
    cases = list(cases)
    if not cases:
        raise MedfmError("degradation curves need at least one (image, reference) case")
    kinds = [get_corruption(name) for name in corruptions]
    for s in severities:
        if s not in SEVERITIES:
            raise MedfmError(f"severities must be among {list(SEVERITIES)}, got {s!r}")
    jobs = [(n, image, reference, metric, tuple(corruptions), tuple(severities), seed) for n, (image, reference) in enumerate(cases)]
    scored = []
    with progress_bar(progress) as bar:
        task = bar.add_task("Corrupting and predicting", total=len(cases) * (1 + len(kinds) * len(severities)))
        for case in (runner or LocalRunner(predict)).map(score_case, jobs):
            scored.append(case)
            bar.advance(task, 1 + len(kinds) * len(severities))
    clean = np.array([case_clean for case_clean, _, _ in scored], dtype=np.float64)
    scores = {kind.name: np.array([case_scores[c] for _, case_scores, _ in scored], dtype=np.float64).reshape(len(cases), -1).T
              for c, kind in enumerate(kinds)}
    params = {kind.name: [[case_params[c][s] for _, _, case_params in scored] for s in range(len(severities))]
              for c, kind in enumerate(kinds)}
    return RobustnessResult(getattr(metric, "__name__", "metric"), tuple(severities), clean, scores, params)


def score_case(predict: Callable[[Any], Any], job: tuple) -> tuple[float, list[list[float]], list[list[dict[str, Any]]]]:
    """One case's clean score, and its scores and applied parameters per corruption and severity: ``job = (case
    number, image, reference, metric, corruption names, severities, seed)`` (a runner's unit of work)."""
    n, image, reference, metric, corruptions, severities, seed = job
    scores, params = [], []
    for c_index, name in enumerate(corruptions):
        corruption = get_corruption(name)
        row, applied = [], []
        for severity in severities:
            rng = np.random.default_rng([seed, n, c_index])  # the same draw at every severity
            corrupted, record = corruption(_spatial(image), severity, rng)
            row.append(float(metric(predict(_like(image, corrupted)), reference)))
            applied.append(record)
        scores.append(row)
        params.append(applied)
    return float(metric(predict(image), reference)), scores, params
