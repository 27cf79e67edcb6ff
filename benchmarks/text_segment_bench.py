"""Segmentation from words alone (``medfm segment --text``) on real images, against three peers.

For each image the text names the structure ("polyp", "skin lesion", "fetal head"); four
boxes prompt the same segmenter (medfm-interactive) and the masks are scored by Dice:

* **text, grounding**: the box from the grounding head's map (:mod:`medfm.models.grounding`,
  what ``segment --text`` uses); a map that never reaches the threshold finds nothing and scores 0;
* **text, CAM**: the box from medfm-clip-small's class activation map (the method without a head);
* **centre prior**: a box over the central 70 % of the image, the guess needing no model;
* **true box** (upper bound): the tight box of the reference mask.

Images are held out from every model involved: in medfm-interactive's validation split and
not in medfm-clip-small's training split (its val or test split), which the grounding head's
manifest (``--write-manifest``) leaves out too. Each method's threshold is chosen on
Kvasir-SEG images of medfm-clip-small's val split that medfm-interactive trained on (the
grounding head's own val rows; never the measured images), from ``--thresholds``.

    python benchmarks/text_segment_bench.py [--data DIR] [--grounder NAME|DIR] [--thresholds 0.2,...] [--tune-limit N]
    python benchmarks/text_segment_bench.py --write-manifest grounding.csv   # then: medfm train grounding grounding.csv -o DIR

Prints JSON: per dataset, each mean Dice as [value, 95 % bootstrap low, high]. Skips with a reason when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medfm.eval.bootstrap import bootstrap
from medfm.eval.seg_metrics import dice
from medfm.io import load
from medfm.io.label_maps import read_mask
from medfm.models.registry import DEFAULT_ENCODER, DEFAULT_SEGMENTER, create_segmenter
from medfm.models.segmenters import Prompt
from medfm.models.segmenters.prompt import mask_box
from medfm.paths import shared_data_dir
from medfm.tasks.text_segment import (
    WordsNotFound,
    grounding_models,
    saliency_box,
    text_saliency,
)
from medfm.train.clip_data import collect
from medfm.train.interactive import write_val_manifest

#: The words for each dataset (interactive split name → (clip dataset folder, text)).
TEXTS = {"kvasir": ("kvasir_seg_polyp", "polyp"), "ph2": ("ph2_dermoscopy", "skin lesion"),
         "hc18": ("hc18_fetal_head_us", "fetal head")}
CENTRE = 0.7


def splits(root: Path) -> tuple[dict[str, list[tuple[Path, Path]]], list[tuple[Path, Path]]]:
    """``(held-out pairs by dataset, Kvasir tuning pairs)`` as (image, mask) paths (see the module)."""
    clip_split = {(s.dataset, s.path): s.split for s in collect(root)}
    with tempfile.TemporaryDirectory() as folder:
        write_val_manifest(root, Path(folder) / "val.csv")
        rows = [line.split(",") for line in (Path(folder) / "val.csv").read_text().splitlines()[1:]]
    held: dict[str, list[tuple[Path, Path]]] = {}
    validation = set()
    for image, mask, source in rows:
        folder, _ = TEXTS.get(source, (None, None))
        if folder is None:
            continue
        validation.add(image)
        if clip_split.get((folder, str(Path(image).relative_to(root / folder)))) in ("val", "test"):
            held.setdefault(source, []).append((Path(image), Path(mask)))
    kvasir = root / "kvasir_seg_polyp"
    tuning = [(kvasir / path, kvasir / path.replace("images/", "masks/")) for (dataset, path), split in sorted(clip_split.items())
              if dataset == "kvasir_seg_polyp" and split == "val" and str(kvasir / path) not in validation]
    return held, tuning


#: Phrases naming each dataset's masks in the grounding manifest (interactive split name → phrases).
PHRASES = {"kvasir": "polyp|colon polyp|colorectal polyp", "ph2": "skin lesion|mole|pigmented skin lesion",
           "hc18": "fetal head|fetal skull|head of the fetus"}
#: Images lacking every phrase, drawn from the training split of these datasets (at most this many each).
ABSENT_DATASETS = {"medpix2_image_text_train": 400, "fundus_vessels": 60, "bccd_blood_cells": 150}


def write_grounding_manifest(root: Path, path: Path) -> dict[str, int]:
    """The manifest of ``medfm train grounding`` for the shipped grounding head: masks of medfm-clip-small's training
    split as ``train`` rows, the tuning images (and the like of PH2 and HC18) as ``val`` rows, images of other
    datasets' training split as rows lacking every phrase, then the masks of medfm-clip-small's test split outside
    medfm-interactive's validation split as ``train`` rows (the head reads only the words through medfm-clip-small,
    so its image splits do not bind it); never a measured image (those are in medfm-clip-small's val or test split
    and medfm-interactive's validation split)."""
    import csv

    from medfm.io.formats import atomic_path
    from medfm.train.interactive import is_validation, manifest_items

    clip_split = {(s.dataset, s.path): s.split for s in collect(root)}
    rows, test_rows = [], []
    for source, image, mask, group in manifest_items(root):
        if source not in PHRASES:
            continue
        folder = TEXTS[source][0]
        split = clip_split.get((folder, str(image.relative_to(root / folder))))
        if split == "train" or (split == "val" and not is_validation(source, group)):
            rows.append((image, mask, PHRASES[source], split))
        elif split == "test" and not is_validation(source, group):
            test_rows.append((image, mask, PHRASES[source], "train"))
    rng = np.random.default_rng(0)
    for dataset, count in ABSENT_DATASETS.items():
        paths = sorted({p for (d, p), split in clip_split.items() if d == dataset and split == "train"})
        rows += [(root / dataset / paths[i], "", "", "train") for i in sorted(rng.choice(len(paths), min(count, len(paths)), replace=False))]
    rows += test_rows
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "text", "split"])
        writer.writerows((str(image), str(mask), text, split) for image, mask, text, split in rows)
    return {split: sum(r[3] == split for r in rows) for split in ("train", "val")}


METHODS = ("grounding", "cam")


def case(image_path: Path, mask_path: Path, text: str, encoder, grounder, segmenter, thresholds) -> dict:
    image = load(image_path)
    plane = image.frame()
    reference = read_mask(mask_path, image.spatial_shape)[:, :, 0].T
    rows, columns = reference.shape
    maps = {"grounding": text_saliency(plane, text, encoder, grounder), "cam": text_saliency(plane, text, encoder)}
    centre = (columns * (1 - CENTRE) / 2, rows * (1 - CENTRE) / 2, columns * (1 + CENTRE) / 2 - 1, rows * (1 + CENTRE) / 2 - 1)
    segmenter.set_image(plane)
    scores = {}
    for method, saliency in maps.items():
        for threshold in thresholds:
            try:
                box = saliency_box(saliency, threshold)
            except WordsNotFound:  # no mask
                scores[f"{method}@{threshold}"] = 0.0
                continue
            scores[f"{method}@{threshold}"] = dice(segmenter.predict(Prompt(boxes=[box])).mask, reference)
    scores["centre_prior"] = dice(segmenter.predict(Prompt(boxes=[centre])).mask, reference)
    scores["true_box"] = dice(segmenter.predict(Prompt(boxes=[mask_box(reference)])).mask, reference)
    scores["grounding_peak"] = float(maps["grounding"].max())
    return scores


def summary(cases: list[dict], chosen: dict[str, float]) -> dict:
    """Mean Dice of each box with 95 % bootstrap intervals, the paired gains of the grounding box, and how often the
    grounding head found the words at its threshold."""
    table = {**{f"text_{method}": np.array([c[f"{method}@{chosen[method]}"] for c in cases]) for method in METHODS},
             "centre_prior": np.array([c["centre_prior"] for c in cases]), "true_box": np.array([c["true_box"] for c in cases])}

    def statistic(rows: np.ndarray) -> dict:
        means = {name: float(values[rows].mean()) for name, values in table.items()}
        return {**means, "grounding_minus_cam": means["text_grounding"] - means["text_cam"],
                "grounding_minus_centre_prior": means["text_grounding"] - means["centre_prior"],
                "grounding_over_true_box": means["text_grounding"] / means["true_box"]}

    found = float(np.mean([c["grounding_peak"] >= chosen["grounding"] for c in cases]))
    return {"n": len(cases), "grounding_found_rate": round(found, 4),
            **{name: [round(e.value, 4), round(e.low, 4), round(e.high, 4)] for name, e in bootstrap(statistic, len(cases), seed=0).items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--thresholds", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    parser.add_argument("--tune-limit", type=int, default=None, help="Tuning images at most (the first N).")
    parser.add_argument("--grounder", default=None, help="Grounding head (name or folder; default: the one shipped for the encoder).")
    parser.add_argument("--write-manifest", type=Path, default=None,
                        help="Write the shipped grounding head's training manifest here (see write_grounding_manifest) and stop.")
    args = parser.parse_args()
    root = args.data or shared_data_dir()
    if not (root / "kvasir_seg_polyp").is_dir():
        print(json.dumps({"skipped": f"{root}: no kvasir_seg_polyp folder (../shared/data absent)"}))
        return 0
    if args.write_manifest:
        print(json.dumps({"manifest": str(args.write_manifest), "rows": write_grounding_manifest(root, args.write_manifest)}))
        return 0
    thresholds = [float(t) for t in args.thresholds.split(",")]
    segmenter = create_segmenter(DEFAULT_SEGMENTER)
    encoder, grounder = grounding_models(args.grounder)
    if grounder is None:
        print(json.dumps({"skipped": f"no grounding head for {DEFAULT_ENCODER}'s weights; give --grounder"}))
        return 0
    held, tuning = splits(root)
    started = time.perf_counter()
    tuned = [case(i, m, "polyp", encoder, grounder, segmenter, thresholds) for i, m in tuning[: args.tune_limit]]
    tuning_means = {method: {t: float(np.mean([c[f"{method}@{t}"] for c in tuned])) for t in thresholds} for method in METHODS}
    chosen = {method: max(thresholds, key=lambda t: tuning_means[method][t]) for method in METHODS}
    results = {}
    for source, pairs in sorted(held.items()):
        text = TEXTS[source][1]
        results[source] = {"text": text, **summary([case(i, m, text, encoder, grounder, segmenter, [chosen["grounding"], chosen["cam"]])
                                                    for i, m in pairs], chosen)}
    print(json.dumps({"encoder": encoder.info.name, "grounder": grounder.info.name, "grounder_weights_sha256": grounder.info.weights_sha256,
                      "segmenter": DEFAULT_SEGMENTER, "tuning_images": len(tuned),
                      "tuning_dice_by_threshold": {m: {str(t): round(v, 4) for t, v in means.items()} for m, means in tuning_means.items()},
                      "chosen_threshold": chosen, "held_out": results, "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
