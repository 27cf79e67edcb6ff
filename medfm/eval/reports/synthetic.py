"""HTML report of ``medfm evaluate synthetic --report``: is the synthetic data useful, and is it new?"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from medfm.eval.reports.html import Raw, format_interval, format_value, html_page, html_table, write_html
from medfm.eval.synthetic import DOWNSTREAM_ROWS

#: Flagged samples listed in the page (all are in the JSON).
LISTED = 20


def write_synthetic_report(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """``result`` of :func:`~medfm.train.synthetic_eval.evaluate_synthetic` as one self-contained page."""
    generator, encoder = result["generator"], result["encoder"]
    downstream = result["classifier" if result["task"] == "cls" else "segmenter"]
    counts = ", ".join(f"{name} {n}" for name, n in result["n_train"].items())
    held = ", ".join(f"{name} {n}" for name, n in result["n_heldout"].items())
    preparation = result["settings"]["preparation"]
    augmented = f" ({html.escape(', '.join(result['synthetic_classes']))})" if result["task"] == "cls" else ""
    sections = [
        f"<p>generator <b>{html.escape(generator['name'])}</b> (weights sha256 {html.escape(str(generator['weights_sha256']))}, "
        f"{generator['steps']} steps, guidance {format_value(generator['guidance'])}), encoder <b>{html.escape(encoder['name'])}</b>, "
        f"data {html.escape(result['data'])}: training {html.escape(counts)}; held out {html.escape(held)}; "
        f"{result['synthetic_per_class']} synthetic images per class{augmented}. "
        f"{html.escape(preparation[:1].upper() + preparation[1:])}.</p>",
        f"<h2>Downstream {'classifier' if result['task'] == 'cls' else 'segmenter'} ({html.escape(downstream['head'])}), "
        "held-out split</h2><p class='note'>95 % paired bootstrap intervals over held-out images.</p>"
        + html_table(["training data", *downstream["real_only"]], [
            [label, *[Raw(format_interval(v)) for v in downstream[key].values()]]
            for label, key in DOWNSTREAM_ROWS if key in downstream]),
    ]
    frd, quality = result["frd"], result["precision_recall"]
    sections.append("<h2>Synthetic against held-out real</h2>" + html_table(
        ["FRD", "out of distribution", "precision", "recall", "k"],
        [[frd["frd"], f"{frd['n_out_of_distribution']} of {frd['n_synthetic']}", quality["precision"], quality["recall"],
          quality["k"]]]))
    memo = result["memorisation"]
    flagged = [(n, s) for n, s in enumerate(memo["samples"]) if s["near_copy"]]
    sections.append(
        "<h2>Memorisation</h2>"
        f"<p>{memo['n_near_copies']} of {len(memo['samples'])} samples are near-copies ({html.escape(memo['rule'])}: "
        f"cosine above {format_value(memo['threshold'])}). Nearest-training cosine, synthetic: median "
        f"{format_value(memo['synthetic_nearest_cosine']['median'])}, max {format_value(memo['synthetic_nearest_cosine']['max'])}; "
        f"held-out real: median {format_value(memo['heldout_nearest_cosine']['median'])}.</p>"
        + (html_table(["sample", "class", "seed", "cosine", "nearest training row (manifest line)"],
                      [[n, s["condition"], s["seed"], s["cosine"], s["nearest_training_line"]] for n, s in flagged[:LISTED]])
           if flagged else ""))
    return write_html(html_page("Synthetic data evaluation", sections), path)
