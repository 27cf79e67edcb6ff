"""Choose medfm-interactive's zoom-in settings on tuning images, never on the card's held-out split.

Run ``nice -n 10 python benchmarks/interactive_zoom_tuning.py --data ../shared/data --out RUN_DIR
[--per-dataset 30] [--settings off 1.2 1.5 2.0] [--results FILE]``; prints one JSON object and
writes it to ``RUN_DIR/zoom_tuning.json`` (and to ``FILE``).

The tuning images are every k-th image (manifest order) of the **training** part of HC18,
Kvasir-SEG and PH2 (:func:`medfm.train.interactive.is_validation` false), ``--per-dataset`` of
each, written to ``RUN_DIR/tuning_manifest.csv``. The card's held-out numbers come from the
validation part, which this script never reads. The shipped weights were trained on these
images (at the 128-pixel whole-plane view), so their absolute Dice is optimistic; what the
script compares is the settings against each other. Each setting (``off``, or a crop margin)
runs :func:`medfm.eval.protocols.interactive.evaluate_interactive` — the card's protocol — on
one thread, and reports per dataset and over all images box Dice, one-click Dice and NoC@90.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

DATASETS = ("hc18", "kvasir", "ph2")


def write_tuning_manifest(data: Path, path: Path, per_dataset: int) -> int:
    """Every k-th training-part image of each of ``DATASETS``, ``per_dataset`` of each; returns the rows."""
    from medfm.train.interactive import is_validation, manifest_items

    rows = []
    for dataset in DATASETS:
        items = [(str(image), str(mask), source) for source, image, mask, group in manifest_items(data.resolve())
                 if source == dataset and not is_validation(source, group)]
        step = max(1, len(items) // per_dataset)
        rows.extend(items[::step][:per_dataset])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "dataset"])
        writer.writerows(rows)
    return len(rows)


def measure(manifest: Path, setting: str, max_clicks: int) -> dict:
    from medfm.eval.protocols.interactive import evaluate_interactive
    from medfm.models.registry import create_segmenter

    segmenter = create_segmenter("medfm-interactive")
    segmenter.zoom = setting != "off"
    if segmenter.zoom:
        segmenter.zoom_margin = float(setting)
    report = evaluate_interactive(segmenter, manifest, max_clicks=max_clicks)
    summaries = {**report["datasets"], "all": report["all"]}
    return {
        "seconds": report["seconds"],
        **{name: {"images": s["images"], "box_dice": s["box_dice"], "one_click_dice": s["click_dice"][0],
                  "noc@90": s["noc@90"]} for name, s in summaries.items()},
        "mean_of_datasets": {
            "box_dice": round(sum(report["datasets"][d]["box_dice"] for d in report["datasets"]) / len(report["datasets"]), 4),
            "one_click_dice": round(sum(report["datasets"][d]["click_dice"][0] for d in report["datasets"]) / len(report["datasets"]), 4),
        },
    }


def main() -> None:
    from medfm.threads import set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-dataset", type=int, default=30)
    parser.add_argument("--max-clicks", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=["off", "1.2", "1.5", "2.0"])
    parser.add_argument("--results", type=Path, help="Also write the JSON here.")
    args = parser.parse_args()
    set_threads(1)
    manifest = args.out / "tuning_manifest.csv"
    images = write_tuning_manifest(args.data, manifest, args.per_dataset)
    report = {"manifest": str(manifest), "images": images, "settings": {}}
    for setting in args.settings:
        report["settings"][setting] = measure(manifest, setting, args.max_clicks)
        print(setting, json.dumps(report["settings"][setting]), flush=True)
    text = json.dumps(report, indent=2) + "\n"
    for path in (args.out / "zoom_tuning.json", *([args.results] if args.results else [])):
        path.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
