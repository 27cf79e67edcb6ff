"""The pieces every HTML report is made of: tables with intervals, figures as embedded PNG, one page.

A page loads nothing from anywhere (no scripts, styles or images by URL), so it can be
archived or mailed as one file. Reports render evaluation results; they never compute them.
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
from medfm.io.formats import atomic_path

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
"""


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")  # reports are written without a display
    import matplotlib.pyplot as plt

    return plt


def figure_html(fig: Any) -> str:
    """The figure as an inline PNG ``<img>``; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    pyplot().close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def format_value(value: Any) -> str:
    """A table cell: 4 significant digits, a dash for undefined values, other text escaped."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def format_interval(estimate: dict[str, Any]) -> str:
    """``value [low, high]`` of an estimate dict."""
    return f"{format_value(estimate['value'])} [{format_value(estimate['low'])}, {format_value(estimate['high'])}]"


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table; cells are escaped unless they are :class:`Raw`."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else format_value(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class Raw(str):
    """Table cell text that is already HTML."""


def html_page(title: str, sections: list[str]) -> str:
    """A whole self-contained page with medfm's version."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='note'>medfm {html.escape(__version__)}</p>{''.join(sections)}</body></html>"
    )


def write_html(text: str, path: str | os.PathLike) -> Path:
    """Write the page atomically; returns its path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


