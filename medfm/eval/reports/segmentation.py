"""HTML report of a segmentation evaluation (``medfm evaluate seg --report``)."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.eval.evaluate_seg import SegmentationEvaluation, load_mask_pair
from medfm.eval.pairing import Pair
from medfm.eval.seg_metrics import METRICS
from medfm.eval.reports.html import Raw, figure_html, format_interval, format_value, html_page, html_table, pyplot, write_html

#: How many of the lowest-Dice cases the segmentation report draws.
WORST_CASES = 4


def _skipped_section(skipped: Sequence[Any]) -> str:
    if not skipped:
        return "<h2>Skipped</h2><p>None.</p>"
    return "<h2>Skipped</h2>" + html_table(["case", "reason"], [(s.name, s.reason) for s in skipped])


def _overlay(pred: np.ndarray, ref: np.ndarray, title: str) -> Any:
    plt = pyplot()
    pred, ref = pred != 0, ref != 0
    if pred.ndim == 3:
        # the slice with most foreground in either mask shows the disagreement best
        k = int(np.argmax((pred | ref).sum(axis=(0, 1))))
        pred, ref, title = pred[:, :, k], ref[:, :, k], f"{title} (slice k={k})"
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    # rows are j and columns i, as Image.frame shows them
    ax.imshow(ref.T, cmap="Greys", alpha=0.25, interpolation="nearest")
    for mask, colour in ((ref, "tab:green"), (pred, "tab:red")):
        if mask.any() and not mask.all():
            ax.contour(mask.T.astype(float), levels=[0.5], colors=colour, linewidths=1.2)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _summary_rows(summary: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``(metric, mean [CI], median, n)`` per metric, in :data:`METRICS` order."""
    return [(m, Raw(format_interval({"value": summary[m]["mean"], **summary[m]})), summary[m]["median"], summary[m]["n"])
            for m in METRICS]


def _units_note(settings: dict) -> str:
    """The units of the distances, volumes and NSD tolerance: mm, or pixels when the masks have no spacing."""
    tolerance = format_value(settings["tolerance_mm"])
    if settings.get("distance_unit") == "pixels":
        return (f"The masks have no known spacing: distances and the NSD tolerance ({tolerance}) in pixels, "
                "volumes in pixels (voxels for 3D).")
    return f"NSD tolerance {tolerance} mm; distances in mm, volumes in mm³ (mm² for 2D)."


def write_segmentation_report(result: SegmentationEvaluation, path: str | os.PathLike) -> Path:
    """The summary with intervals, a table per case, what was skipped, and pred/ref contours of the worst cases."""
    data = result.as_dict()
    sections = [
        "<h2>Summary over cases</h2>",
        html_table(
            ["metric", "mean [95% CI]", "median", "n", "undefined"],
            [(*row, data["summary"][row[0]]["n_undefined"]) for row in _summary_rows(data["summary"])],
        ),
        f"<p class='note'>{_units_note(data['settings'])} Empty masks: {html.escape(data['settings']['empty_masks'])}. Intervals: percentile bootstrap "
        f"of the mean over cases, {data['settings']['bootstrap']['n_boot']} resamples.</p>",
    ]
    for label, summary in data["summary_by_label"].items():
        sections.append(f"<h3>Label {html.escape(label)}</h3>")
        sections.append(html_table(["metric", "mean [95% CI]", "median", "n"], _summary_rows(summary)))
    sections += ["<h2>Cases</h2>", html_table(["case", *METRICS], [[c["name"], *(c[m] for m in METRICS)] for c in data["cases"]])]
    sections.append(_skipped_section(result.skipped))
    worst = sorted(result.cases, key=lambda c: c["dice"])[:WORST_CASES]
    figures = []
    for case in worst:
        pred, ref, _, _ = load_mask_pair(Pair(case["name"], Path(case["pred"]), Path(case["ref"])), data["settings"]["labels"])
        figures.append(figure_html(_overlay(pred, ref, f"{case['name']}: Dice {format_value(case['dice'])}")))
    sections.append("<h2>Lowest Dice</h2><p class='note'>Reference in green, prediction in red.</p>" + "".join(figures))
    return write_html(html_page("Segmentation evaluation", sections), path)


