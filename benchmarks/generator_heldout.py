"""A shipped generator's held-out measurement: the split it was trained on, FRD and the near-copy check.

``python benchmarks/generator_heldout.py split [--family medpix|hc18] [--train-images N] --out DIR`` writes DIR/train.csv and
DIR/heldout.csv, 15 % of cases held out by a hash of the case id, so no case has images on both sides:
``medpix`` (default) from ``../shared/data/medpix2_image_text_train`` (grey images only; column ``label`` =
modality CT/MR; train with ``--condition class``), ``hc18`` from ``../shared/data/hc18_fetal_head_us``
(fetal-head ultrasound, the case is the subject group; column ``label`` = ``fetal head ultrasound``, one
class; train with ``--condition none``). When the family's manifest has masks (hc18), the files also get a
``mask`` column (train an image–mask pair generator with ``--masks``) and DIR/segmentation.csv lists both sides
as ``image,mask,split`` (``train`` / ``test``), the manifest ``medfm evaluate synthetic --task seg`` takes.
``--train-images N`` keeps only whole training cases, in a seeded order, until N images: the low-label setting
(the held-out side stays the same). ``--rare CLASS=N`` keeps only N of one class's training images (those of whole
cases drawn in a seeded order; the other classes' images stay): the rare-class setting. A family with several
classes (medpix) also gets DIR/classification.csv, ``path,label,split`` of both sides, the manifest
``medfm evaluate synthetic --task cls`` takes.
Train with ``medfm --threads 1 train generator DIR/train.csv --condition class|none --size 64 -o GEN_DIR``.

``python benchmarks/generator_heldout.py evaluate GEN_DIR --split DIR [--steps 20] [--n-boot 200] [--samples N]
[--ancestral] [--results FILE]`` prints JSON, with the sampling time on one thread
(``--ancestral``: a DDPM generator sampled the 1,000-step DDPM way, the speed target's baseline):
FRD(generated, held-out) against FRD(held-out + Gaussian noise at severity 3, held-out), both
with held-out real images prepared exactly as training prepared its images (64², 8-bit), the
generated set with as many images per class as the held-out set (or the first N of them: FRD grows as
sets shrink, so compare only runs of the same N), and FRD(as many real training images,
held-out) as the floor real images of the family reach; each with a 95 % bootstrap interval (radiomic
features extracted once, images resampled), and the generated-minus-noisy difference with its interval
(paired over the held-out images); and the near-copy check: each
sample's nearest training image by medfm-clip-small embedding (cosine) and by pixel correlation, compared
with how close held-out real images come to the training set.
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

#: Each family's dataset folder and how a manifest row gives its case id and its class.
FAMILIES = {
    "medpix": ("medpix2_image_text_train", lambda r: r["case_id"], lambda r: r["modality"]),
    "hc18": ("hc18_fetal_head_us", lambda r: r["subject_group"], lambda r: "fetal head ultrasound"),
}
HELDOUT_SHARE = 0.15
NOISE = "medfm.eval.corruptions gaussian_noise severity 3 (SD 0.07 of each image's range), clipped to 8 bits"


def whole_cases(rows: list[dict], case_of, images: int) -> list[dict]:
    """The rows of whole cases, drawn in a seeded order, until at least ``images`` rows."""
    import random

    per_case = Counter(case_of(r) for r in rows)
    cases = sorted(per_case)
    random.Random(0).shuffle(cases)
    kept: set[str] = set()
    for case in cases:
        if sum(per_case[c] for c in kept) >= images:
            break
        kept.add(case)
    return [r for r in rows if case_of(r) in kept]


def split(family: str, out: Path, train_images: int | None = None, rare: tuple[str, int] | None = None) -> dict:
    """Hold out 15 % of ``family``'s cases (by a hash of the case id) and write the manifests into ``out``; with
    ``train_images``, keep only whole training cases, drawn in a seeded order, until that many images (a low-label
    training set); with ``rare`` ``(class, n)``, keep only n of that class's training images, from whole cases drawn
    in a seeded order (a rare class). The held-out side is unchanged."""
    import csv

    folder, case_of, class_of = FAMILIES[family]
    root = shared_data_dir() / folder
    with open(root / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("mode", "L") == "L"]
    sides: dict[str, list] = {"train": [], "heldout": []}
    for row in rows:
        fraction = int(hashlib.sha256(case_of(row).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        sides["heldout" if fraction < HELDOUT_SHARE else "train"].append(row)
    if train_images is not None:
        sides["train"] = whole_cases(sides["train"], case_of, train_images)
    if rare is not None:
        name, images = rare
        of_class = [r for r in sides["train"] if class_of(r) == name]
        if not of_class:
            raise SystemExit(f"--rare: no training image of class {name!r} in {family}")
        kept_ids = {id(r) for r in whole_cases(of_class, case_of, images)}
        sides["train"] = [r for r in sides["train"] if class_of(r) != name or id(r) in kept_ids]
    masks = "mask" in rows[0]
    out.mkdir(parents=True, exist_ok=True)
    for side, chosen in sides.items():
        with open(out / f"{side}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "label", "case_id", *(["mask"] if masks else [])])
            writer.writerows([[str(root / r["image"]), class_of(r), case_of(r), *([str(root / r["mask"])] if masks else [])]
                              for r in chosen])
    if len({class_of(r) for r in rows}) > 1:
        with open(out / "classification.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "split"])
            writer.writerows([[str(root / r["image"]), class_of(r), "train" if side == "train" else "test"]
                              for side, chosen in sides.items() for r in chosen])
    if masks:
        with open(out / "segmentation.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "mask", "split"])
            writer.writerows([[str(root / r["image"]), str(root / r["mask"]), "train" if side == "train" else "test"]
                              for side, chosen in sides.items() for r in chosen])
    return {side: dict(Counter(class_of(r) for r in chosen)) for side, chosen in sides.items()}


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


def features(folder: Path) -> np.ndarray:
    """``(N, F)`` FRDv1 radiomic features of every PNG in ``folder``, in name order (as ``compute_frd`` extracts them)."""
    from medfm.eval.radiomics_features import extract_files

    extractions = extract_files([(p.stem, p, None) for p in sorted(folder.glob("*.png"))], workers=1)
    unusable = [e.name for e in extractions if e.reason]
    if unusable:
        raise SystemExit(f"{folder}: no features for {unusable[:3]}")
    return np.stack([e.values for e in extractions])


def frd_intervals(held: np.ndarray, noisy: np.ndarray, generated: np.ndarray, real: np.ndarray, n_boot: int,
                  seed: int) -> dict:
    """FRD against the held-out features of the generated, noisy and real training sets, and the generated minus
    noisy difference, each with a 95 % percentile interval over resamples of the held-out images (the noisy copies
    resampled with their originals) and, independently, of the generated and real training images."""
    from medfm.eval.frd import frd_from_features

    def frds(h: np.ndarray, g: np.ndarray, r: np.ndarray) -> dict:
        values = {name: frd_from_features(held[h], other)["frd"] for name, other in
                  (("generated", generated[g]), ("noisy", noisy[h]), ("real_train", real[r]))}
        return {**values, "generated_minus_noisy": values["generated"] - values["noisy"]}

    point = frds(np.arange(len(held)), np.arange(len(generated)), np.arange(len(real)))
    rng = np.random.default_rng(seed)
    draws = [frds(rng.integers(0, len(held), len(held)), rng.integers(0, len(generated), len(generated)),
                  rng.integers(0, len(real), len(real))) for _ in range(n_boot)]
    return {name: {"value": value, "low": float(np.quantile([d[name] for d in draws], 0.025)),
                   "high": float(np.quantile([d[name] for d in draws], 0.975))} for name, value in point.items()}


def nearest_pixel_correlation(images: np.ndarray, training: np.ndarray) -> np.ndarray:
    """``(N,)``: each image's highest Pearson correlation of pixels with any training image (same size)."""
    def standardised(pixels: np.ndarray) -> np.ndarray:
        flat = pixels.reshape(len(pixels), -1).astype(np.float64)
        flat -= flat.mean(axis=1, keepdims=True)
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)

    return (standardised(images) @ standardised(training).T).max(axis=1)


def evaluate(gen_dir: Path, split_dir: Path, steps: int, guidance: float | None, seed: int, n_boot: int,
             samples: int | None = None, ancestral: bool = False) -> dict:
    import time

    import torch

    from medfm.io.manifest import read_manifest
    from medfm.models.generators.generator import DDPM_TIMESTEPS
    from medfm.models.generators.sampling import ancestral_sample, sample
    from medfm.models.registry import create_generator

    torch.set_num_threads(1)
    generator = create_generator(gen_dir)
    guidance = generator.config["sampling"]["guidance"] if guidance is None else guidance
    held_paths, held_labels = read_manifest(split_dir / "heldout.csv", "label", "image")
    train_paths, _ = read_manifest(split_dir / "train.csv", "label", "image")
    held = prepared(held_paths, generator.size)
    rng = np.random.default_rng(seed)
    noisy = noisy_copies(held, rng)
    wanted = held_labels[:samples or len(held_labels)]
    generated, started = [], time.perf_counter()
    for start in range(0, len(wanted), 32):
        labels = wanted[start:start + 32] if generator.condition != "none" else [None] * len(wanted[start:start + 32])
        seeds = list(range(seed + start, seed + start + len(labels)))
        pixels = ancestral_sample(generator, labels, guidance, seeds) if ancestral else sample(generator, labels, steps, guidance, seeds)
        # an image–mask pair generator's last channel is its mask, not part of the image
        generated.append((pixels[:, :generator.channels].numpy() * 255).round().astype(np.uint8))
    sampling_seconds = time.perf_counter() - started
    generated = np.concatenate(generated)
    train_pixels = prepared(train_paths, generator.size)
    real = train_pixels[np.random.default_rng(seed).permutation(len(train_pixels))[:len(held)]]
    with tempfile.TemporaryDirectory() as tmp:
        extracted = {name: features(write_pngs(pixels, Path(tmp) / name)) for name, pixels in
                     (("heldout", held), ("noisy", noisy), ("generated", generated), ("real", real))}
    frd = frd_intervals(extracted["heldout"], extracted["noisy"], extracted["generated"], extracted["real"], n_boot, seed)
    train = embeddings(train_pixels)
    nearest_generated = (embeddings(generated) @ train.T).max(axis=1)
    nearest_heldout = (embeddings(held) @ train.T).max(axis=1)
    bar = float(np.quantile(nearest_heldout, 0.99))
    pixel_generated = nearest_pixel_correlation(generated, train_pixels)
    pixel_heldout = nearest_pixel_correlation(held, train_pixels)
    pixel_bar = float(np.quantile(pixel_heldout, 0.99))
    return {
        "generator": generator.name, "method": generator.method, "weights_sha256": generator.weights_sha256,
        "sampler": "DDPM ancestral, all training timesteps" if ancestral else "medfm (flow: Euler; DDPM: DDIM)",
        "steps": generator.config.get("scheduler", {}).get("num_train_timesteps", DDPM_TIMESTEPS) if ancestral else steps,
        "guidance": guidance, "generated_images": len(generated),
        "sampling_seconds_one_thread": round(sampling_seconds, 2),
        "sampling_images_per_s_one_thread": round(len(generated) / sampling_seconds, 3),
        "heldout_images": len(held), "heldout_per_class": dict(Counter(held_labels)),
        "frd_generated_vs_heldout": frd["generated"]["value"], "frd_noisy_heldout_vs_heldout": frd["noisy"]["value"],
        "frd_real_train_vs_heldout": frd["real_train"]["value"], "frd_intervals": frd, "bootstrap_resamples": n_boot,
        "real_train_images": len(real), "noise": NOISE,
        "target_met": bool(frd["generated"]["value"] < frd["noisy"]["value"]),
        "near_copy": {
            "embedding": "medfm-clip-small, cosine to the nearest training image",
            "heldout_nearest_train_cosine_p99": bar,
            "generated_nearest_train_cosine_max": float(nearest_generated.max()),
            "generated_nearest_train_cosine_median": float(np.median(nearest_generated)),
            "heldout_nearest_train_cosine_median": float(np.median(nearest_heldout)),
            "generated_above_heldout_p99": int((nearest_generated > bar).sum()),
            "pixels": {
                "measure": f"Pearson correlation of the pixels with the nearest training image (as prepared, {generator.size}², 8-bit)",
                "heldout_p99": pixel_bar, "generated_max": float(pixel_generated.max()),
                "generated_median": float(np.median(pixel_generated)), "heldout_median": float(np.median(pixel_heldout)),
                "generated_above_heldout_p99": int((pixel_generated > pixel_bar).sum()),
            },
        },
    }


def rare_class(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    if not name or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected CLASS=N with N at least 1; got {text!r}")
    return name, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    split_parser = commands.add_parser("split")
    split_parser.add_argument("--family", choices=sorted(FAMILIES), default="medpix")
    split_parser.add_argument("--out", type=Path, required=True)
    split_parser.add_argument("--train-images", type=int, default=None, help="Keep whole training cases, in a seeded "
                              "order, until this many images (a low-label training set; the held-out side is unchanged).")
    split_parser.add_argument("--rare", type=rare_class, default=None, metavar="CLASS=N", help="Keep only N training "
                              "images of CLASS, from whole cases in a seeded order (a rare class; the rest is unchanged).")
    evaluate_parser = commands.add_parser("evaluate")
    evaluate_parser.add_argument("gen_dir", type=Path)
    evaluate_parser.add_argument("--split", type=Path, required=True)
    evaluate_parser.add_argument("--steps", type=int, default=20)
    evaluate_parser.add_argument("--guidance", type=float, default=None)
    evaluate_parser.add_argument("--seed", type=int, default=0)
    evaluate_parser.add_argument("--n-boot", type=int, default=200, help="Bootstrap resamples of the FRD intervals.")
    evaluate_parser.add_argument("--samples", type=int, default=None, help="Generated images (default: one per held-out "
                                 "image); compare FRDs only between runs with the same number, FRD depends on it.")
    evaluate_parser.add_argument("--ancestral", action="store_true", help="A DDPM generator sampled by MONAI's DDPMScheduler "
                                 "over all 1,000 timesteps (the baseline), instead of medfm's DDIM in --steps.")
    evaluate_parser.add_argument("--results", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if getattr(args, "train_images", None) is not None and args.train_images < 1:
        parser.error(f"--train-images must be at least 1; got {args.train_images}")
    if args.command == "split":
        data = shared_data_dir() / FAMILIES[args.family][0]
        if not data.is_dir():
            print(json.dumps({"skipped": f"{data} is absent"}))
            sys.exit(0)
        result = split(args.family, args.out, args.train_images, args.rare)
    else:
        result = evaluate(args.gen_dir, args.split, args.steps, args.guidance, args.seed, args.n_boot, args.samples, args.ancestral)
    text = json.dumps(result, indent=2)
    if getattr(args, "results", None):
        args.results.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
