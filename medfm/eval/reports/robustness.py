"""HTML report of degradation curves (``medfm evaluate robustness --report``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medfm.eval.protocols.degradation import RobustnessResult
from medfm.eval.reports.html import figure_html, html_page, html_table, pyplot, write_html


def degradation_figure(result: RobustnessResult) -> Any:
    """Matplotlib figure: mean metric against severity, one line per corruption, severity 0 the clean baseline."""
    plt = pyplot()
    data = result.as_dict()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = [0, *data["severities"]]
    for name, curve in data["corruptions"].items():
        ax.plot(x, [data["clean"]["mean"], *curve["mean"]], marker="o", markersize=3, label=name)
    ax.set_xticks(x, ["clean", *map(str, data["severities"])])
    ax.set_xlabel("severity")
    ax.set_ylabel(data["metric"])
    ax.set_title(f"{data['metric']} under corruption ({data['n_cases']} cases)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def write_robustness_report(result: RobustnessResult, path: str | os.PathLike) -> Path:
    """Self-contained HTML page: the degradation curves and a table of the means per severity."""
    data = result.as_dict()
    rows = [(name, data["clean"]["mean"], *curve["mean"]) for name, curve in data["corruptions"].items()]
    sections = [
        f"<p>{data['n_cases']} cases; mean {data['metric']} over cases at each severity; "
        f"mean over all corruptions and severities {data['mean_corrupted']:.4g}.</p>",
        figure_html(degradation_figure(result)),
        html_table(["corruption", "clean", *(f"severity {s}" for s in data["severities"])], rows),
    ]
    return write_html(html_page("Robustness to corruptions", sections), path)
