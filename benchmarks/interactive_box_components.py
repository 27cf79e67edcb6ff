"""Where box Dice is lost: the protocol's box prompt split by how many connected parts the mask has.

Run ``python benchmarks/interactive_box_components.py MANIFEST.csv [--dataset kvasir] [--stray 10]``;
prints one JSON object.

:mod:`medfm.eval.protocols.interactive` prompts with the tight box of the whole mask. When a
mask has several parts — several polyps, or a speck left by JPEG compression of the mask —
that box spans all of them. For each image of ``--dataset`` this runs the shipped segmenter
(default settings, one thread) on that box and reports mean box Dice for masks of one part,
of several parts, and how many of the latter have a part of at most ``--stray`` pixels; and,
over all images, the box Dice when the box leaves out parts of at most ``--stray`` pixels
(Dice still against the whole mask). A diagnostic, run after the settings were fixed; it
chooses nothing.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    from scipy import ndimage

    from medfm.eval.protocols.interactive import read_manifest
    from medfm.eval.seg_metrics import dice
    from medfm.io.formats import load
    from medfm.io.label_maps import read_mask
    from medfm.models.registry import create_segmenter
    from medfm.models.segmenters.prompt import Prompt, mask_box
    from medfm.threads import set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--dataset", default="kvasir")
    parser.add_argument("--stray", type=int, default=10, help="A part this small (pixels) counts as a stray speck.")
    args = parser.parse_args()
    set_threads(1)
    segmenter = create_segmenter("medfm-interactive")
    groups: dict[str, list[float]] = {"one part": [], "several parts": []}
    with_stray, without_strays = 0, []
    for row in read_manifest(args.manifest):
        if row["dataset"] != args.dataset:
            continue
        truth = read_mask(row["mask"])[:, :, 0].T
        if not truth.any():
            continue
        labels, parts = ndimage.label(truth)
        segmenter.set_image(load(row["image"]).frame())
        score = dice(segmenter.predict(Prompt(boxes=[mask_box(truth)])).mask, truth)
        groups["one part" if parts == 1 else "several parts"].append(score)
        sizes = np.bincount(labels.ravel())
        stray = (sizes <= args.stray) & (np.arange(len(sizes)) > 0)
        with_stray += parts > 1 and bool(stray.any())
        kept = truth & ~stray[labels] if stray.any() and not stray[labels][truth].all() else truth
        without_strays.append(dice(segmenter.predict(Prompt(boxes=[mask_box(kept)])).mask, truth))
        segmenter.reset_image()
    report = {"manifest": args.manifest, "dataset": args.dataset,
              **{name: {"images": len(scores), "box_dice": round(float(np.mean(scores)), 4) if scores else None}
                 for name, scores in groups.items()},
              f"several parts with one of <= {args.stray} px": with_stray,
              f"box_dice_with_box_leaving_out_parts_of_{args.stray}_px_or_less": round(float(np.mean(without_strays)), 4)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
