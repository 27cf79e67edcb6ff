"""A shipped generator's held-out measurement: the split it was trained on, FRD and the near-copy check.

``python benchmarks/generator_heldout.py split --out DIR`` writes DIR/train.csv and DIR/heldout.csv
from ``../shared/data/medpix2_image_text_train`` (grey images only; 15 % of cases held out by a
hash of the case id, so no case has images on both sides; column ``label`` = modality CT/MR).
Train with ``medfm --threads 1 train generator DIR/train.csv --condition class --size 64 -o GEN_DIR``.

``python benchmarks/generator_heldout.py evaluate GEN_DIR --split DIR [--steps 20] [--results FILE]`` prints JSON:
FRD(generated, held-out) against FRD(held-out + Gaussian noise at severity 3, held-out), both
with held-out real images prepared exactly as training prepared its images (64², 8-bit), the
generated set with as many images per class as the held-out set; and the near-copy check: each
sample's nearest training image by medfm-clip-small embedding (cosine), compared with how
close held-out real images come to the training set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from medfm.paths import shared_data_dir

FAMILY = "medpix2_image_text_train"
HELDOUT_SHARE = 0.15
NOISE = "medfm.eval.corruptions gaussian_noise severity 3 (SD 0.07 of each image's range), clipped to 8 bits"


def split(out: Path) -> dict:
    import csv

    root = shared_data_dir() / FAMILY
    rows = [r for r in csv.DictReader(open(root / "manifest.csv")) if r["mode"] == "L"]
    out.mkdir(parents=True, exist_ok=True)
    sides: dict[str, list] = {"train": [], "heldout": []}
    for row in rows:
        fraction = int(hashlib.sha256(row["case_id"].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        sides["heldout" if fraction < HELDOUT_SHARE else "train"].append(row)
    for side, chosen in sides.items():
        with open(out / f"{side}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "label", "case_id"])
            writer.writerows([[str(root / r["image"]), r["modality"], r["case_id"]] for r in chosen])
    return {side: dict(Counter(r["modality"] for r in chosen)) for side, chosen in sides.items()}


def prepared(paths: list[str], size: int) -> np.ndarray:
    """``(N, 1, S, S)`` uint8 images as ``medfm train generator`` prepares them."""
    from medfm.io.formats import load
    from medfm.models.generators.pixels import plane_pixels, resized

    return np.stack([np.rint(resized(plane_pixels(load(p), p), size, 1) * 255).astype(np.uint8) for p in paths])


def write_pngs(pixels: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for n, plane in enumerate(pixels):
        Image.fromarray(plane[0]).save(folder / f"{n:04d}.png")
    return folder


def noisy_copies(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(N, 1, S, S)`` uint8 images with Gaussian noise at MedMNIST-C severity 3 (the FRD target's bar), as uint8."""
    from medfm.eval.corruptions import CORRUPTIONS

    noise = CORRUPTIONS["gaussian_noise"]
    return np.stack([np.clip(noise(p[0].astype(np.float64), 3, rng)[0], 0, 255).round().astype(np.uint8)[None] for p in pixels])


def embeddings(pixels: np.ndarray) -> np.ndarray:
    from medfm.models import create_encoder

    encoder = create_encoder("medfm-clip-small")
    vectors = encoder.encode_planes([p[0] for p in pixels])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def evaluate(gen_dir: Path, split_dir: Path, steps: int, guidance: float | None, seed: int) -> dict:
    import torch

    from medfm.eval.frd import compute_frd
    from medfm.io.manifest import read_manifest
    from medfm.models.generators.sampling import sample
    from medfm.models.registry import create_generator

    torch.set_num_threads(1)
    generator = create_generator(gen_dir)
    guidance = generator.config["sampling"]["guidance"] if guidance is None else guidance
    held_paths, held_labels = read_manifest(split_dir / "heldout.csv", "label", "image")
    train_paths, _ = read_manifest(split_dir / "train.csv", "label", "image")
    held = prepared(held_paths, generator.size)
    rng = np.random.default_rng(seed)
    noisy = noisy_copies(held, rng)
    generated = []
    for start in range(0, len(held_labels), 32):
        labels = held_labels[start:start + 32]
        seeds = list(range(seed + start, seed + start + len(labels)))
        generated.append((sample(generator, labels, steps, guidance, seeds).numpy() * 255).round().astype(np.uint8))
    generated = np.concatenate(generated)
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: write_pngs(pixels, Path(tmp) / name) for name, pixels in
                   (("heldout", held), ("noisy", noisy), ("generated", generated))}
        frd_generated = compute_frd(folders["heldout"], folders["generated"], workers=1).frd
        frd_noisy = compute_frd(folders["heldout"], folders["noisy"], workers=1).frd
    train = embeddings(prepared(train_paths, generator.size))
    nearest_generated = (embeddings(generated) @ train.T).max(axis=1)
    nearest_heldout = (embeddings(held) @ train.T).max(axis=1)
    bar = float(np.quantile(nearest_heldout, 0.99))
    return {
        "generator": generator.name, "weights_sha256": generator.weights_sha256, "steps": steps, "guidance": guidance,
        "heldout_images": len(held), "heldout_per_class": dict(Counter(held_labels)),
        "frd_generated_vs_heldout": frd_generated, "frd_noisy_heldout_vs_heldout": frd_noisy,
        "noise": NOISE,
        "target_met": bool(frd_generated < frd_noisy),
        "near_copy": {
            "embedding": "medfm-clip-small, cosine to the nearest training image",
            "heldout_nearest_train_cosine_p99": bar,
            "generated_nearest_train_cosine_max": float(nearest_generated.max()),
            "generated_nearest_train_cosine_median": float(np.median(nearest_generated)),
            "heldout_nearest_train_cosine_median": float(np.median(nearest_heldout)),
            "generated_above_heldout_p99": int((nearest_generated > bar).sum()),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    split_parser = commands.add_parser("split")
    split_parser.add_argument("--out", type=Path, required=True)
    evaluate_parser = commands.add_parser("evaluate")
    evaluate_parser.add_argument("gen_dir", type=Path)
    evaluate_parser.add_argument("--split", type=Path, required=True)
    evaluate_parser.add_argument("--steps", type=int, default=20)
    evaluate_parser.add_argument("--guidance", type=float, default=None)
    evaluate_parser.add_argument("--seed", type=int, default=0)
    evaluate_parser.add_argument("--results", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if not (shared_data_dir() / FAMILY).is_dir():
        print(json.dumps({"skipped": f"{shared_data_dir() / FAMILY} is absent"}))
        sys.exit(0)
    result = split(args.out) if args.command == "split" else evaluate(args.gen_dir, args.split, args.steps, args.guidance, args.seed)
    text = json.dumps(result, indent=2)
    if getattr(args, "results", None):
        args.results.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
