"""Segmentation from words alone (``medfm segment --text``) on real images, against two peers.

For each image the text names the structure ("polyp", "skin lesion", "fetal head"); three
boxes prompt the same segmenter (medfm-interactive) and the masks are scored by Dice:

* **text**: the box from medfm-clip-small's saliency (:mod:`medfm.tasks.text_segment`);
* **centre prior**: a box over the central 70 % of the image, the guess needing no model;
* **true box** (upper bound): the tight box of the reference mask.

Images are held out from both shipped models: in medfm-interactive's validation split and
not in medfm-clip-small's training split (its val or test split). The saliency threshold is
chosen on Kvasir-SEG images of medfm-clip-small's val split that medfm-interactive trained on
(so never on the measured images), from ``--thresholds``.

    python benchmarks/text_segment_bench.py [--data DIR] [--thresholds 0.2,0.3,0.4,0.5] [--tune-limit N]

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
from medfm.models.registry import DEFAULT_ENCODER, DEFAULT_SEGMENTER, create_encoder, create_segmenter
from medfm.models.segmenters import Prompt
from medfm.models.segmenters.prompt import mask_box
from medfm.paths import shared_data_dir
from medfm.tasks.text_segment import saliency_box, text_saliency
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


def case(image_path: Path, mask_path: Path, text: str, encoder, segmenter, thresholds) -> dict:
    image = load(image_path)
    plane = image.frame()
    reference = read_mask(mask_path, image.spatial_shape)[:, :, 0].T
    rows, columns = reference.shape
    saliency = text_saliency(plane, text, encoder)
    centre = (columns * (1 - CENTRE) / 2, rows * (1 - CENTRE) / 2, columns * (1 + CENTRE) / 2 - 1, rows * (1 + CENTRE) / 2 - 1)
    segmenter.set_image(plane)
    scores = {f"text@{t}": dice(segmenter.predict(Prompt(boxes=[saliency_box(saliency, t)])).mask, reference)
              for t in thresholds}
    scores["centre_prior"] = dice(segmenter.predict(Prompt(boxes=[centre])).mask, reference)
    scores["true_box"] = dice(segmenter.predict(Prompt(boxes=[mask_box(reference)])).mask, reference)
    return scores


def summary(cases: list[dict], threshold: float) -> dict:
    """Mean Dice of each box with 95 % bootstrap intervals, and the paired gains of the text box."""
    table = {"text_prompt": np.array([c[f"text@{threshold}"] for c in cases]),
             "centre_prior": np.array([c["centre_prior"] for c in cases]), "true_box": np.array([c["true_box"] for c in cases])}

    def statistic(rows: np.ndarray) -> dict:
        means = {name: float(values[rows].mean()) for name, values in table.items()}
        return {**means, "text_minus_centre_prior": means["text_prompt"] - means["centre_prior"],
                "text_over_true_box": means["text_prompt"] / means["true_box"]}

    return {"n": len(cases), **{name: [round(e.value, 4), round(e.low, 4), round(e.high, 4)]
                                for name, e in bootstrap(statistic, len(cases), seed=0).items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--thresholds", default="0.2,0.3,0.4,0.5")
    parser.add_argument("--tune-limit", type=int, default=None, help="Tuning images at most (the first N).")
    args = parser.parse_args()
    root = args.data or shared_data_dir()
    if not (root / "kvasir_seg_polyp").is_dir():
        print(json.dumps({"skipped": f"{root}: no kvasir_seg_polyp folder (../shared/data absent)"}))
        return 0
    thresholds = [float(t) for t in args.thresholds.split(",")]
    encoder, segmenter = create_encoder(DEFAULT_ENCODER), create_segmenter(DEFAULT_SEGMENTER)
    held, tuning = splits(root)
    started = time.perf_counter()
    tuned = [case(i, m, "polyp", encoder, segmenter, thresholds) for i, m in tuning[: args.tune_limit]]
    tuning_means = {t: float(np.mean([c[f"text@{t}"] for c in tuned])) for t in thresholds}
    chosen = max(thresholds, key=lambda t: tuning_means[t])
    results = {}
    for source, pairs in sorted(held.items()):
        text = TEXTS[source][1]
        results[source] = {"text": text, **summary([case(i, m, text, encoder, segmenter, [chosen]) for i, m in pairs], chosen)}
    print(json.dumps({"encoder": DEFAULT_ENCODER, "segmenter": DEFAULT_SEGMENTER, "tuning_images": len(tuned),
                      "tuning_dice_by_threshold": {str(t): round(v, 4) for t, v in tuning_means.items()},
                      "chosen_threshold": chosen, "held_out": results, "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
