"""HTML report of a classification evaluation (``medfm evaluate cls --report``)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from medfm.eval.cls_metrics import roc_curve
from medfm.eval.evaluate_cls import OPERATING_POINT_RATES, UNMATCHED_SIDES, ClassificationEvaluation, metric_names
from medfm.eval.fairness import SUBGROUP_METRICS
from medfm.eval.reports.html import Raw, figure_html, format_interval, format_value, html_page, html_table, pyplot, write_html


#: Subgroup metrics drawn as forest plots.
FOREST_METRICS = ("auc", "sensitivity", "specificity")


def _roc_figure(result: ClassificationEvaluation) -> Any:
    plt = pyplot()
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
    plt = pyplot()
    curve = calibration["reliability"]
    x = np.array([np.nan if v is None else v for v in curve["mean_predicted"]], dtype=float)
    y = np.array([np.nan if v is None else v for v in curve["fraction_positive"]], dtype=float)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.plot(x, y, marker="o")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction positive")
    ax.set_title(f"Reliability (ECE {format_value(calibration['ece']['value'])})")
    return fig


def _forest_figure(analysis: dict[str, Any]) -> Any:
    plt = pyplot()
    names = sorted(analysis["groups"])
    metrics = FOREST_METRICS
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
        html_table(["metric", "value [CI]"], [
            (name, Raw(format_interval(data["metrics"][name]))) for name in metric_names(result.task, result.class_names)
        ]),
    ]
    unmatched = [(side, data["unmatched"][side]) for side in UNMATCHED_SIDES if data["unmatched"][side]]
    if unmatched:
        sections.append("<h2>Unmatched ids</h2>" + html_table(
            ["side", "count", "ids"], [(k.replace("_", " "), len(v), ", ".join(v[:20]) + (" …" if len(v) > 20 else "")) for k, v in unmatched]
        ))
    figures = [figure_html(_roc_figure(result))]
    if "operating_point" in data:
        point = data["operating_point"]
        sections.append(f"<h2>Operating point</h2><p>threshold {format_value(point['threshold'])} ({html.escape(point['chosen_by'])}); "
                        "rows with score ≥ threshold are called positive.</p>")
        sections.append(html_table(["metric", "value [CI]"], [(k, Raw(format_interval(point[k]))) for k in OPERATING_POINT_RATES]))
        calibration = data["calibration"]
        if "ece" in calibration:
            figures.append(figure_html(_reliability_figure(calibration)))
    sections.append("<h2>Curves</h2>" + "".join(figures))
    for column, analysis in data.get("subgroups", {}).items():
        groups = analysis["groups"]
        sections.append(f"<h2>Subgroups by {html.escape(column)}</h2>")
        sections.append(html_table(["group", "n", "positive", *SUBGROUP_METRICS], [
            (name, groups[name]["n"], groups[name]["n_positive"], *(Raw(format_interval(groups[name][m])) for m in SUBGROUP_METRICS))
            for name in sorted(groups)
        ]))
        sections.append(html_table(["gap", "difference (max - min)", "ratio (min / max)"], [
            (m, Raw(format_interval(analysis["gaps"][m]["difference"])), Raw(format_interval(analysis["gaps"][m]["ratio"])))
            for m in SUBGROUP_METRICS if m in analysis["gaps"]
        ]))
        sections.append(f"<p>Equalised-odds difference at the operating point: {format_interval(analysis['equalised_odds_difference'])}</p>")
        sections.append(figure_html(_forest_figure(analysis)))
    return write_html(html_page("Classification evaluation", sections), path)
