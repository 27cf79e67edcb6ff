"""HTML report of a retrieval or zero-shot evaluation (``medfm evaluate retrieval|zeroshot --report``)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from medfm.eval.reports.html import Raw, format_interval, html_page, html_table, write_html


#: The by-class entries that are counts beside the measures' intervals.
COUNTS = ("n", "queries_without_relevant")


def _intervals(measures: dict[str, Any]) -> list[Raw]:
    return [Raw(format_interval(value)) for value in measures.values()]


def write_embedding_report(result: dict[str, Any], kind: str, path: str | os.PathLike) -> Path:
    """``result`` of :func:`~medfm.train.encoder_eval.evaluate_retrieval` (``kind`` ``"retrieval"``) or
    :func:`~medfm.train.encoder_eval.evaluate_zeroshot` (``"zeroshot"``) as one self-contained page."""
    model = result["model"]
    sections = [f"<p>model <b>{html.escape(model['name'])}</b> (weights sha256 {html.escape(str(model['weights_sha256']))}), "
                f"data {html.escape(result['data'])}: {result['n']} images in {result['groups']} groups; "
                "95 % bootstrap intervals.</p>"]
    if kind == "retrieval":
        overall = result["image_to_image"]["overall"]
        sections.append("<h2>Image → image (leave-one-out, own group excluded)</h2>"
                        + html_table(["", *overall], [["all classes", *_intervals(overall)]]
                                     + [[name, *_intervals({k: v for k, v in row.items() if k not in COUNTS})]
                                        for name, row in result["image_to_image"]["by_class"].items()]))
        if "text_to_image" in result:
            text = result["text_to_image"]
            recalls = {k: v for k, v in text.items() if k.startswith("recall")}
            sections.append(f"<h2>Text → image ({text['queries']} captions, {text['images']} images)</h2>"
                            + html_table(list(recalls), [_intervals(recalls)]))
    else:
        sections.append("<h2>Zero-shot</h2>" + html_table(["accuracy", "macro AUC"], [
            [Raw(format_interval(result["accuracy"])), Raw(format_interval(result["macro_auc"]))]]))
        sections.append("<h2>By class</h2>" + html_table(["class", "n", "recall", "AUC"], [
            [name, row["n"], Raw(format_interval(row["recall"])), Raw(format_interval(row["auc"]))]
            for name, row in result["by_class"].items()]))
    title = "Retrieval evaluation" if kind == "retrieval" else "Zero-shot evaluation"
    return write_html(html_page(title, sections), path)
