"""The standard simulated-interaction protocol for promptable segmenters, at each image's own resolution.

For every (image, mask) of a manifest the user is simulated three ways, on the same
encoded plane: **box** — the mask's tight bounding box alone; **clicks** — one positive
click at the mask's interior-most pixel, then up to ``max_clicks - 1`` corrective clicks,
each at the centre (distance-transform maximum) of the deepest error, positive in a miss
and negative in a false alarm, with the previous logits given back as ``mask_input``.
Dice is computed against the full-resolution mask after each step; NoC@t is the number
of clicks needed to reach Dice ≥ t, counted as ``max_clicks`` when it is never reached
(RITM's convention), with the count of such failures reported beside it.

``medfm evaluate interactive MANIFEST.csv [--model medfm-interactive] [--limit N] [--json]``
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.formats import load
from medfm.models.segmenters.base import Segmenter
from medfm.models.segmenters.prompt import Prompt, mask_box
from medfm.progress import progress_bar
from medfm.io.label_maps import read_mask
from medfm.eval.protocols.interaction import centre_click, corrective_click
from medfm.eval.seg_metrics import dice

THRESHOLDS = (0.8, 0.9)


def read_manifest(manifest: str | Path) -> list[dict[str, str]]:
    """Rows with ``image``, ``mask`` (absolute, or relative to the manifest's folder) and ``dataset``
    (the manifest folder's name when the column is absent)."""
    path = Path(manifest)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the manifest ({exc.strerror})") from None
    if not rows or not {"image", "mask"} <= set(rows[0]):
        found = ", ".join(rows[0]) if rows else "no rows"
        raise MedfmError(f"{display_path(path)}: a manifest needs columns image and mask; found {found}")
    return [
        {
            "image": str(path.parent / row["image"]),
            "mask": str(path.parent / row["mask"]),
            "dataset": row.get("dataset") or path.parent.name,
        }
        for row in rows
    ]


def simulate(segmenter: Segmenter, plane: np.ndarray, truth: np.ndarray, max_clicks: int = 10) -> dict[str, Any]:
    """One image through the protocol: ``{"box": Dice, "clicks": [Dice after click 1, 2, ...]}``."""
    segmenter.set_image(plane)
    box = dice(segmenter.predict(Prompt(boxes=[mask_box(truth)])).mask, truth)
    points, labels, clicks = [centre_click(truth)], [1], []
    logits = None
    while True:
        prediction = segmenter.predict(Prompt(points=list(points), point_labels=list(labels), mask_input=logits))
        clicks.append(dice(prediction.mask, truth))
        click = corrective_click(truth, prediction.mask)
        if len(points) == max_clicks or click is None:
            break
        points.append(click[:2])
        labels.append(click[2])
        logits = prediction.logits
    segmenter.reset_image()
    # A perfect mask needs no more clicks: it stays perfect.
    return {"box": box, "clicks": clicks + [clicks[-1]] * (max_clicks - len(clicks))}


def _summary(runs: list[dict[str, Any]], max_clicks: int) -> dict[str, Any]:
    clicks = np.array([run["clicks"] for run in runs])
    summary: dict[str, Any] = {
        "images": len(runs),
        "box_dice": round(float(np.mean([run["box"] for run in runs])), 4),
        "click_dice": [round(float(v), 4) for v in clicks.mean(axis=0)],
    }
    for threshold in THRESHOLDS:
        reached = clicks >= threshold
        counts = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, max_clicks)
        summary[f"noc@{round(threshold * 100)}"] = round(float(counts.mean()), 2)
        summary[f"failures@{round(threshold * 100)}"] = int((~reached.any(axis=1)).sum())
    return summary


def evaluate_interactive(
    segmenter: Segmenter, manifest: str | Path, limit: int | None = None, max_clicks: int = 10,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the protocol on a manifest's images; ``limit`` caps the images per dataset.

    Returns ``{"model", "weights_sha256", "manifest", "max_clicks", "seconds", "datasets":
    {name: summary}, "all": summary}``; a summary holds ``images``, ``box_dice``,
    ``click_dice`` (mean Dice after 1..max_clicks clicks), ``noc@80``, ``noc@90`` and
    ``failures@80``/``failures@90`` (images that never reached the threshold). Masks with
    no foreground are skipped (nothing to click on). ``progress`` shows a bar of the
    manifest's rows on stderr.
    """
    if max_clicks < 1:
        raise MedfmError(f"max_clicks must be at least 1; got {max_clicks}")
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    rows = read_manifest(manifest)
    with progress_bar(progress) as bar:
        task = bar.add_task("Simulating interaction", total=len(rows))
        for row in rows:
            bar.advance(task)
            if limit is not None and len(runs.get(row["dataset"], [])) >= limit:
                continue
            truth = read_mask(row["mask"])[:, :, 0].T  # the first plane, as (rows, columns)
            if not truth.any():
                continue
            runs.setdefault(row["dataset"], []).append(simulate(segmenter, load(row["image"]).frame(), truth, max_clicks))
    if not runs:
        raise MedfmError(f"{display_path(manifest)}: no image with a non-empty mask to evaluate")
    return {
        "model": segmenter.info.name,
        "weights_sha256": segmenter.info.weights_sha256,
        "manifest": str(manifest),
        "max_clicks": max_clicks,
        "seconds": round(time.perf_counter() - started, 1),
        "datasets": {name: _summary(dataset_runs, max_clicks) for name, dataset_runs in sorted(runs.items())},
        "all": _summary([run for dataset_runs in runs.values() for run in dataset_runs], max_clicks),
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a short fixed-width table, one line per dataset and one for all: Dice after the first
    click and after the fifth (or the last, with fewer ``max_clicks``)."""
    counts = sorted({1, min(5, report["max_clicks"])})
    headers = [f"{count} click{'s' if count > 1 else ''}" for count in counts]
    lines = [f"{'dataset':<12} {'images':>6} {'box':>6} " + " ".join(f"{h:>8}" for h in headers) + f" {'NoC@80':>6} {'NoC@90':>6}"]
    for name, summary in [*report["datasets"].items(), ("all", report["all"])]:
        dice_after = " ".join(f"{summary['click_dice'][count - 1]:>8.3f}" for count in counts)
        lines.append(f"{name:<12} {summary['images']:>6} {summary['box_dice']:>6.3f} {dice_after} "
                     f"{summary['noc@80']:>6.2f} {summary['noc@90']:>6.2f}")
    return "\n".join(lines)
