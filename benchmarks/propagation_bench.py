"""3D Dice from one prompted slice: how far propagation carries a structure through real volumes.

For every labelled structure of the 3D volumes in ``../shared/data/volumes_3d_smoke`` (the
pyradiomics MRI cases, each label value on its own), the user is simulated once: the tight
box of the structure on its largest slice. :func:`medfm.tasks.segment.propagate` carries it
through the volume with medfm's default segmenter, and the result is scored against the
whole 3D label (Dice, slices reached). Each setting of the stopping rule given on the
command line is run on the same prompts in the same run, the first being the reference.

    python benchmarks/propagation_bench.py [--data DIR] [--setting 'min_score=0.5,margin=2' ...]

Prints JSON. Skips with a reason when the data is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from medfm.eval.seg_metrics import dice
from medfm.io import load
from medfm.models.registry import DEFAULT_SEGMENTER, create_segmenter
from medfm.models.segmenters import Prompt
from medfm.paths import shared_data_dir
from medfm.tasks.segment import PropagationRule, propagate


def structures(root: Path) -> list[tuple[str, object, np.ndarray]]:
    """``(name, image, (I, J, K) bool mask)`` for every label value of the NRRD volumes."""
    found = []
    with open(root / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["file"].endswith(".nrrd"):
                continue
            image, labels = load(root / row["file"]), load(root / row["label_or_mask"])
            array = np.asarray(labels.array[..., 0, 0])
            for value in sorted(set(np.unique(array).tolist()) - {0}):
                found.append((f"{Path(row['file']).stem}:{value}", image, array == value))
    return found


def largest_slice_box(mask: np.ndarray) -> tuple[int, tuple[float, float, float, float]]:
    """The slice k with most voxels and the tight box x0, y0, x1, y1 (x = i, y = j) on it."""
    k = int(np.argmax(mask.sum(axis=(0, 1))))
    columns, rows = np.nonzero(mask[:, :, k])
    return k, (float(columns.min()), float(rows.min()), float(columns.max()), float(rows.max()))


def run(cases, segmenter, setting: dict[str, float]) -> dict:
    results, started = [], time.perf_counter()
    for name, image, mask in cases:
        k, box = largest_slice_box(mask)
        labels = propagate(image, segmenter, {k: [Prompt(boxes=[box])]}, rule=PropagationRule(**setting)).array[..., 0, 0] > 0
        reached = sorted(set(np.flatnonzero(labels.any(axis=(0, 1)))))
        truth = sorted(set(np.flatnonzero(mask.any(axis=(0, 1)))))
        results.append({"structure": name, "dice_3d": round(dice(labels, mask), 4),
                        "slices_true": len(truth), "slices_found": len(reached),
                        "slices_correct": len(set(truth) & set(reached))})
    return {"setting": setting, "mean_dice_3d": round(float(np.mean([r["dice_3d"] for r in results])), 4),
            "seconds": round(time.perf_counter() - started, 2), "cases": results}


def parse_setting(text: str) -> dict[str, float]:
    pairs = (item.split("=") for item in text.split(",") if item)
    return {key.strip(): int(value) if key.strip() == "min_area" else float(value) for key, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--model", default=DEFAULT_SEGMENTER)
    parser.add_argument("--setting", action="append", default=[])
    args = parser.parse_args()
    root = (args.data or shared_data_dir()) / "volumes_3d_smoke"
    if not (root / "manifest.csv").exists():
        print(json.dumps({"skipped": f"no 3D volumes at {root}"}))
        sys.exit(0)
    cases = structures(root)
    segmenter = create_segmenter(args.model)
    settings = [parse_setting(text) for text in args.setting] or [{}]
    runs = [run(cases, segmenter, setting) for setting in settings]
    reference = runs[0]["mean_dice_3d"]
    for entry in runs:
        entry["ratio_to_first"] = round(entry["mean_dice_3d"] / reference, 3) if reference else None
    print(json.dumps({"model": args.model, "structures": len(cases), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
