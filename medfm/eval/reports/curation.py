"""HTML report of a curation evaluation: downstream accuracy against the fraction of the data kept,
curated (prototypes, k-center) against random choice, with 95 % intervals (``benchmarks/curation_eval.py --report``)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from medfm.eval.reports.html import Raw, figure_html, format_interval, html_page, html_table, pyplot, write_html

#: Line colours and labels, in drawing order; random is drawn once per seed.
METHODS = {"prototypes": ("#1f77b4", "prototypes"), "kcenter": ("#d62728", "k-center greedy"), "random": ("#7f7f7f", "random")}


def scored(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points of a curve that have an accuracy (a subset with one class has none), by fraction."""
    return sorted((p for p in points if p["accuracy"] is not None), key=lambda p: (p["fraction"], p["seed"]))


def curation_figure(result: dict[str, Any]) -> Any:
    """Accuracy against the percentage kept (log axis): one line per method with its intervals as error bars;
    random's seeds each drawn (slightly apart, so their bars stay visible) and joined by their mean."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    offsets = {"prototypes": 0.97, "kcenter": 1.03}
    for method, (colour, label) in METHODS.items():
        points = scored(result["curves"].get(method, []))
        if not points:
            continue
        seeds = sorted({p["seed"] for p in points})
        for seed in seeds:
            mine = [p for p in points if p["seed"] == seed]
            shift = offsets.get(method, 1.0 + 0.02 * (seed - (len(seeds) - 1) / 2))
            x = np.array([100 * p["fraction"] for p in mine]) * shift
            value = np.array([p["accuracy"]["value"] for p in mine])
            spread = np.array([[v - p["accuracy"]["low"] for v, p in zip(value, mine)],
                               [p["accuracy"]["high"] - v for v, p in zip(value, mine)]])
            ax.errorbar(x, value, yerr=spread, fmt="o" if method == "random" else "o-", color=colour, markersize=4,
                        capsize=2, alpha=0.55 if method == "random" else 1.0,
                        label=label if method != "random" or seed == seeds[0] else None)
        if method == "random" and len(seeds) > 1:
            fractions = sorted({p["fraction"] for p in points})
            means = [np.mean([p["accuracy"]["value"] for p in points if p["fraction"] == f]) for f in fractions]
            ax.plot([100 * f for f in fractions], means, "--", color=colour, label=f"random, mean of {len(seeds)} seeds")
    ax.set_xscale("log")
    fractions = sorted({p["fraction"] for curve in result["curves"].values() for p in curve})
    ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g} %" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("data kept")
    ax.set_ylabel(f"test accuracy ({result['task']})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def write_curation_report(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """``result`` of ``benchmarks/curation_eval.py`` (``curves``: method → points with ``fraction``, ``seed``,
    ``kept`` and an ``accuracy`` estimate or ``None``) as one self-contained page: the plot, then the table."""
    intro = (f"<p>Linear probe on {html.escape(str(result['task']))} with embeddings of "
             f"<b>{html.escape(str(result['encoder']))}</b> (weights sha256 {html.escape(str(result['weights_sha256']))}), "
             f"fitted on the subset kept of a pool of {result['pool']} training images and scored on {result['test']} "
             f"test images ({result['test_groups']} groups); 95 % bootstrap intervals over test groups.</p>")
    rows = []
    for method, (_, label) in METHODS.items():
        for point in sorted(result["curves"].get(method, []), key=lambda p: (p["fraction"], p["seed"])):
            accuracy = Raw(format_interval(point["accuracy"])) if point["accuracy"] is not None else "– (one class kept)"
            rows.append([label, f"{100 * point['fraction']:g} %", point["seed"], point["kept"], accuracy])
    sections = [intro, figure_html(curation_figure(result)),
                html_table(["method", "kept", "seed", "images", "accuracy [95 % CI]"], rows)]
    return write_html(html_page("Curation: accuracy against the fraction kept", sections), path)
