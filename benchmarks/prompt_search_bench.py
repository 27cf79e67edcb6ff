"""Held-out gain of ``medfm optimize-prompts`` on the zero-shot questions medfm asks itself.

The router's two label sets (:mod:`medfm.tasks.domains`: modality over every dataset,
body region over MedPix), on medfm-clip-small's own split of ``../shared/data`` (never
trained on: prompts chosen on its ``val`` split, measured on ``test``), against the
templates the router uses now: once over template sets alone, once over template sets and the
label phrasings of :data:`PHRASINGS`.

    python benchmarks/prompt_search_bench.py [--data DIR] [--budget N] [--seed S]

Prints JSON. Skips with a reason when the data is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from medfm.models.registry import DEFAULT_ENCODER, create_encoder
from medfm.paths import shared_data_dir
from medfm.tasks.domains import MODALITIES, MODALITY_TEMPLATES, REGION_TEMPLATES, REGIONS
from medfm.train.clip_data import collect
from medfm.train.prompt_search import optimize_prompts

#: (name, sample attribute, label texts by key, baseline templates, datasets or None for all).
TASKS = (("modality", "modality", MODALITIES, MODALITY_TEMPLATES, None),
         ("region", "region", REGIONS, REGION_TEMPLATES, {"medpix2_image_text_train"}))
#: Alternative phrasings of the label texts, by key: mostly the words the training captions use for them
#: (medfm.train.clip_data: MODALITY_WORDS, REGION_WORDS and MedPix's, and the datasets' caption words).
PHRASINGS = {
    "modality": {"ct": ["CT scan", "computed tomography"], "mri": ["MR image", "magnetic resonance"],
                 "xray": ["radiograph"], "ultrasound": ["sonography"], "endoscopy": ["colonoscopy"],
                 "dermoscopy": ["dermatoscopy"], "fundus": ["retina", "retinal photograph"],
                 "microscopy": ["light microscopy", "blood smear"]},
    "region": {"head": ["brain"], "chest": ["thorax"], "pelvis": ["urinary tract"], "msk": ["spine", "knee"],
               "colon": ["large bowel"], "eye": ["retina"]},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.data or shared_data_dir()
    if not (root / "medpix2_image_text_train").is_dir():
        print(json.dumps({"skipped": f"{root}: no medpix2_image_text_train folder (../shared/data absent)"}))
        return 0
    samples = [s for s in collect(root) if s.split in ("val", "test") and s.frame is None]
    encoder = create_encoder(DEFAULT_ENCODER)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, attribute, texts, baseline, datasets in TASKS:
            manifest = Path(folder) / f"{name}.csv"
            validation = set()  # the label texts of the validation rows: the search phrases only labels it sees
            with open(manifest, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["path", "label", "split"])
                for s in samples:
                    if (datasets is None or s.dataset in datasets) and getattr(s, attribute) in texts:
                        writer.writerow([str(root / s.dataset / s.path), texts[getattr(s, attribute)], s.split])
                        if s.split == "val":
                            validation.add(texts[getattr(s, attribute)])
            phrasings = {texts[key]: words for key, words in PHRASINGS[name].items() if texts[key] in validation}
            results[name] = {}
            for searched, alternatives in (("templates", None), ("templates_and_phrasings", phrasings)):
                result = optimize_prompts(manifest, "label", encoder, split_column="split", baseline=baseline,
                                          phrasings=alternatives, budget=args.budget, seed=args.seed)
                results[name][searched] = {key: result[key] for key in ("templates", "phrasings", "labels", "validation", "test")}
    print(json.dumps({"encoder": DEFAULT_ENCODER, "budget": args.budget, "seed": args.seed, "tasks": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
