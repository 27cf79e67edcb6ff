"""Self-contained HTML reports of evaluations: tables with intervals, figures as embedded PNG.

The page loads nothing from anywhere (no scripts, styles or images by URL), so it can be
archived or mailed as one file.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm import __version__
from medfm.eval.cls_evaluation import ClassificationEvaluation
from medfm.eval.pairing import Pair
from medfm.eval.seg_evaluation import SegmentationEvaluation, load_mask_pair
from medfm.io.formats import atomic_path

#: How many of the lowest-Dice cases the segmentation report draws.
WORST_CASES = 4

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
"""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # reports are written without a display
    import matplotlib.pyplot as plt

    return plt


def _img(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    _pyplot().close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def _ci(estimate: dict[str, Any]) -> str:
    return f"{_fmt(estimate['value'])} [{_fmt(estimate['low'])}, {_fmt(estimate['high'])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Raw(str):
    """Table cell text that is already HTML."""


def _page(title: str, sections: list[str]) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='note'>medfm {html.escape(__version__)}</p>{''.join(sections)}</body></html>"
    )


def _write(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _skipped_section(skipped: Sequence[Any]) -> str:
    if not skipped:
        return "<h2>Skipped</h2><p>None.</p>"
    return "<h2>Skipped</h2>" + _table(["case", "reason"], [(s.name, s.reason) for s in skipped])


def _overlay(pred: np.ndarray, ref: np.ndarray, title: str) -> Any:
    plt = _pyplot()
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


def write_segmentation_report(result: SegmentationEvaluation, path: str | os.PathLike) -> Path:
    """The summary with intervals, a table per case, what was skipped, and pred/ref contours of the worst cases."""
    data = result.as_dict()
    sections = [
        "<h2>Summary over cases</h2>",
        _table(
            ["metric", "mean [95% CI]", "median", "n", "undefined"],
            [(m, _Raw(_ci({"value": s["mean"], **s})), s["median"], s["n"], s["n_undefined"]) for m, s in data["summary"].items()],
        ),
        f"<p class='note'>NSD tolerance {_fmt(data['settings']['tolerance_mm'])} mm; distances in mm, volumes in mm³ "
        f"(mm² for 2D). Empty masks: {html.escape(data['settings']['empty_masks'])}. Intervals: percentile bootstrap "
        f"of the mean over cases, {data['settings']['bootstrap']['n_boot']} resamples.</p>",
    ]
    for label, summary in data["summary_by_label"].items():
        sections.append(f"<h3>Label {html.escape(label)}</h3>")
        sections.append(_table(["metric", "mean [95% CI]", "median", "n"], [
            (m, _Raw(_ci({"value": s["mean"], **s})), s["median"], s["n"]) for m, s in summary.items()
        ]))
    metrics = list(data["summary"])
    sections += ["<h2>Cases</h2>", _table(["case", *metrics], [[c["name"], *(c[m] for m in metrics)] for c in data["cases"]])]
    sections.append(_skipped_section(result.skipped))
    worst = sorted(result.cases, key=lambda c: c["dice"])[:WORST_CASES]
    figures = []
    for case in worst:
        pred, ref, _ = load_mask_pair(Pair(case["name"], Path(case["pred"]), Path(case["ref"])), data["settings"]["labels"])
        figures.append(_img(_overlay(pred, ref, f"{case['name']}: Dice {_fmt(case['dice'])}")))
    sections.append("<h2>Lowest Dice</h2><p class='note'>Reference in green, prediction in red.</p>" + "".join(figures))
    return _write(_page("Segmentation evaluation", sections), path)


def _roc_figure(result: ClassificationEvaluation) -> Any:
    from medfm.eval.classification import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    if result.task == "binary":
        curves = [("", result.scores, result.labels)]
    else:
        onehot = np.eye(len(result.class_names), dtype=int)[result.labels] if result.task == "multiclass" else result.labels
        curves = [(name, result.scores[:, k], onehot[:, k]) for k, name in enumerate(result.class_names) if 0 < onehot[:, k].sum() < len(onehot)]
    for name, scores, labels in curves:
        fpr, tpr, _ = roc_curve(scores, labels)
        ax.plot(fpr, tpr, label=name or None)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC")
    if result.task != "binary":
        ax.legend(fontsize=7)
    return fig


def _reliability_figure(calibration: dict[str, Any]) -> Any:
    plt = _pyplot()
    curve = calibration["reliability"]
    x = np.array([np.nan if v is None else v for v in curve["mean_predicted"]], dtype=float)
    y = np.array([np.nan if v is None else v for v in curve["fraction_positive"]], dtype=float)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.plot(x, y, marker="o")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction positive")
    ax.set_title(f"Reliability (ECE {_fmt(calibration['ece']['value'])})")
    return fig


def _forest_figure(analysis: dict[str, Any]) -> Any:
    plt = _pyplot()
    names = list(analysis["groups"])
    metrics = ("auc", "sensitivity", "specificity")
    fig, axes = plt.subplots(1, len(metrics), figsize=(10, 0.5 * len(names) + 1.4), sharey=True)
    for ax, metric in zip(axes, metrics):
        for row, name in enumerate(names):
            e = analysis["groups"][name][metric]
            if e["value"] is None:
                continue
            low = e["value"] - e["low"] if e["low"] is not None else 0
            high = e["high"] - e["value"] if e["high"] is not None else 0
            ax.errorbar(e["value"], row, xerr=[[low], [high]], fmt="o", color="tab:blue", capsize=3)
        ax.set_title(metric)
        ax.set_xlim(-0.02, 1.02)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    return fig


def write_classification_report(result: ClassificationEvaluation, path: str | os.PathLike) -> Path:
    """Metrics with intervals, ROC and reliability curves, and subgroup tables with forest plots."""
    data = result.as_dict()
    boot = data["bootstrap"]
    sections = [
        f"<p>{html.escape(data['task'])} task, {data['n']} rows"
        + (f", {data['n_positive']} positive" if "n_positive" in data else "")
        + f". Intervals: {int(boot['confidence'] * 100)}% percentile bootstrap, {boot['n_boot']} resamples of "
        f"{html.escape(boot['resampling'])}, seed {boot['seed']}.</p>",
        "<h2>Metrics</h2>",
        _table(["metric", "value [CI]"], [(k, _Raw(_ci(e))) for k, e in data["metrics"].items()]),
    ]
    unmatched = {k: v for k, v in data["unmatched"].items() if v}
    if unmatched:
        sections.append("<h2>Unmatched ids</h2>" + _table(
            ["side", "count", "ids"], [(k.replace("_", " "), len(v), ", ".join(v[:20]) + (" …" if len(v) > 20 else "")) for k, v in unmatched.items()]
        ))
    figures = [_img(_roc_figure(result))]
    if "operating_point" in data:
        point = data["operating_point"]
        sections.append(f"<h2>Operating point</h2><p>threshold {_fmt(point['threshold'])} ({html.escape(point['chosen_by'])}); "
                        "rows with score ≥ threshold are called positive.</p>")
        sections.append(_table(["metric", "value [CI]"], [(k, _Raw(_ci(point[k]))) for k in ("sensitivity", "specificity", "ppv", "npv")]))
        calibration = data["calibration"]
        if "ece" in calibration:
            figures.append(_img(_reliability_figure(calibration)))
    sections.append("<h2>Curves</h2>" + "".join(figures))
    for column, analysis in data.get("subgroups", {}).items():
        metrics = list(next(iter(analysis["groups"].values())))[2:]
        sections.append(f"<h2>Subgroups by {html.escape(column)}</h2>")
        sections.append(_table(["group", "n", "positive", *metrics], [
            (name, g["n"], g["n_positive"], *(_Raw(_ci(g[m])) for m in metrics)) for name, g in analysis["groups"].items()
        ]))
        sections.append(_table(["gap", "difference (max - min)", "ratio (min / max)"], [
            (m, _Raw(_ci(gap["difference"])), _Raw(_ci(gap["ratio"]))) for m, gap in analysis["gaps"].items()
        ]))
        sections.append(f"<p>Equalised-odds difference at the operating point: {_ci(analysis['equalised_odds_difference'])}</p>")
        sections.append(_img(_forest_figure(analysis)))
    return _write(_page("Classification evaluation", sections), path)
