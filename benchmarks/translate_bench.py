"""Translation's trade-off of τ: SSIM to the source against a classifier's probability of the target class.

``python benchmarks/translate_bench.py GEN_DIR --split DIR [--per-class 24] [--strengths 0.1 0.25 0.5 0.75 1]
[--steps S] [--guidance G] [--seed 0] [--n-boot 1000] [--results FILE]`` prints JSON.

DIR is ``generator_heldout.py split``'s folder (``train.csv``, ``heldout.csv``: image, label, case_id),
the split the (grey, class-conditional) generator was trained on. ``--per-class`` held-out images of each
class (a seeded random choice), prepared as the generator's training prepared its images (its size², 8-bit
PNG), are translated to every other class with :func:`medfm.tasks.generate.translate_file` (what
``medfm translate`` runs: back along the flow under the source class to τ, forward under the target) at
each τ. Per τ: the mean SSIM of the output to its source (``translate_file``'s own figure) and the mean
probability of the target class, with 95 % bootstrap intervals that resample whole cases (images of one
case are not independent), and the share classified as the target.

The classifier is not the generator: medfm's own classification path on medfm-clip-small embeddings
(:func:`medfm.tasks.classify.classify`, what ``medfm classify`` runs), either zero-shot with the class
names as labels (medfm's default prompt templates) or a logistic probe (:func:`medfm.train.probe.fit_probe`,
what ``medfm fit-probe`` runs) on the training split, all images prepared as above. The two are
compared on a validation split of 20 % of the training cases (the probe fitted on the other 80 %); the
one with the higher validation accuracy (then AUC) is used, a probe refitted on the whole training split.
Its accuracy on the untranslated held-out sources is the reference.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generator_heldout import prepared, write_pngs  # noqa: E402

STRENGTHS = (0.1, 0.25, 0.5, 0.75, 1.0)
VALIDATION_SHARE = 0.2


def read_split(path: Path) -> tuple[list[str], list[str], list[str]]:
    rows = list(csv.DictReader(open(path)))
    return [r["image"] for r in rows], [r["label"] for r in rows], [r["case_id"] for r in rows]


def write_manifest(files: list[Path], labels: list[str], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([[str(f), label] for f, label in zip(files, labels)])
    return path


def class_probabilities(files: list[Path], classes: list[str], encoder, probe) -> np.ndarray:
    """``(N, L)`` probabilities, columns in ``classes`` order, from ``medfm classify`` (zero-shot without a probe)."""
    from medfm.tasks.classify import classify

    results = classify(files, encoder, probe=probe) if probe is not None else classify(files, encoder, labels=classes)
    return np.array([[r["probabilities"][c] for c in classes] for r in results])


def scores(probabilities: np.ndarray, labels: list[str], classes: list[str]) -> dict[str, float]:
    from medfm.eval.cls_metrics import accuracy_and_auc

    return accuracy_and_auc(probabilities, np.array([classes.index(label) for label in labels]))


def choose_classifier(train: tuple[list[Path], list[str], list[str]], classes: list[str], encoder, root: Path, seed: int) -> dict:
    """Zero-shot against a probe on a validation split of the training cases; the winner, ready to use."""
    from medfm.train.probe import fit_probe

    files, labels, cases = train
    unique = sorted(set(cases))
    order = np.random.default_rng(seed).permutation(len(unique))
    validation_cases = {unique[i] for i in order[: round(VALIDATION_SHARE * len(unique))]}
    held = [i for i, c in enumerate(cases) if c in validation_cases]
    kept = [i for i, c in enumerate(cases) if c not in validation_cases]
    fit_part = write_manifest([files[i] for i in kept], [labels[i] for i in kept], root / "fit.csv")
    validation_files, validation_labels = [files[i] for i in held], [labels[i] for i in held]
    probe = fit_probe(fit_part, "label", encoder=encoder)
    validation = {"zero_shot": scores(class_probabilities(validation_files, classes, encoder, None), validation_labels, classes),
                  "probe": scores(class_probabilities(validation_files, classes, encoder, probe), validation_labels, classes)}
    chosen = max(validation, key=lambda name: (validation[name]["accuracy"], validation[name]["auc"]))
    final = fit_probe(write_manifest(files, labels, root / "train.csv"), "label", encoder=encoder) if chosen == "probe" else None
    return {"chosen": chosen, "probe": final, "validation": validation,
            "validation_images": len(held), "validation_cases": len(validation_cases), "fit_images": len(kept)}


def summarise(ssim: np.ndarray, target_probability: np.ndarray, as_target: np.ndarray, cases: list[str],
              n_boot: int, seed: int) -> dict:
    from medfm.eval.bootstrap import bootstrap

    def statistic(rows: np.ndarray) -> dict[str, float]:
        return {"ssim_to_source": float(ssim[rows].mean()), "target_probability": float(target_probability[rows].mean()),
                "classified_as_target": float(as_target[rows].mean())}

    estimates = bootstrap(statistic, len(ssim), clusters=cases, n_boot=n_boot, seed=seed)
    return {"images": len(ssim), **{name: estimate.as_dict() for name, estimate in estimates.items()}}


def run(gen_dir: Path, split_dir: Path, per_class: int, strengths: list[float], steps: int | None, guidance: float | None,
        seed: int, n_boot: int) -> dict:
    import torch

    from medfm.models.registry import DEFAULT_ENCODER, create_encoder, create_generator
    from medfm.tasks.generate import translate_file

    torch.set_num_threads(1)
    started, load_at_start = time.perf_counter(), os.getloadavg()
    generator = create_generator(gen_dir)
    classes = list(generator.classes or [])
    if generator.condition != "class" or len(classes) < 2 or generator.channels != 1:
        raise SystemExit(f"{gen_dir}: translation is measured between the classes of a grey class-conditional generator")
    encoder = create_encoder(DEFAULT_ENCODER)
    train_paths, train_labels, train_cases = read_split(split_dir / "train.csv")
    held_paths, held_labels, held_cases = read_split(split_dir / "heldout.csv")
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for c in classes for i in rng.choice([i for i, label in enumerate(held_labels) if label == c],
                                                                per_class, replace=False))
    sources = [held_paths[i] for i in chosen]
    source_labels, source_cases = [held_labels[i] for i in chosen], [held_cases[i] for i in chosen]
    with tempfile.TemporaryDirectory(prefix="translate-bench-") as tmp:
        root = Path(tmp)
        os.environ["MEDFM_DATA_DIR"] = str(root / "data")  # the embedding cache stays in the temporary folder
        train_files = sorted((write_pngs(prepared(train_paths, generator.size), root / "train")).iterdir())
        classifier = choose_classifier((train_files, train_labels, train_cases), classes, encoder, root, seed)
        source_files = sorted(write_pngs(prepared(sources, generator.size), root / "sources").iterdir())
        source_probabilities = class_probabilities(source_files, classes, encoder, classifier["probe"])
        pairs = [(n, target) for n, label in enumerate(source_labels) for target in classes if target != label]
        untranslated = np.array([source_probabilities[n, classes.index(t)] for n, t in pairs])
        per_strength, settings = {}, {}
        for strength in strengths:
            folder = root / f"tau-{strength}"
            folder.mkdir()
            outputs, ssim = [], []
            for number, (n, target) in enumerate(pairs):
                out = folder / f"{number:04d}.png"
                made = translate_file(generator, source_files[n], out, source=source_labels[n], target=target,
                                      strength=strength, steps=steps, guidance=guidance)
                settings = {"steps": made["steps"], "guidance": made["guidance"]}
                outputs.append(out)
                ssim.append(made["ssim_to_source"])
            probabilities = class_probabilities(outputs, classes, encoder, classifier["probe"])
            target_columns = [classes.index(t) for _, t in pairs]
            target_probability = probabilities[np.arange(len(pairs)), target_columns]
            as_target = probabilities.argmax(axis=1) == target_columns
            ssim, cases = np.array(ssim), [source_cases[n] for n, _ in pairs]
            entry = summarise(ssim, target_probability, as_target, cases, n_boot, seed)
            for source in classes:
                rows = [i for i, (n, _) in enumerate(pairs) if source_labels[n] == source]
                entry[f"from {source}"] = summarise(ssim[rows], target_probability[rows], as_target[rows],
                                                    [cases[i] for i in rows], n_boot, seed)
            per_strength[str(strength)] = entry
    reference = scores(source_probabilities, source_labels, classes)
    return {
        "generator": {"name": generator.name, "weights_sha256": generator.weights_sha256, "classes": classes,
                      "size": generator.size, **settings},
        "translation": "medfm.tasks.generate.translate_file (medfm translate), one image at a time",
        "heldout_sources": {c: source_labels.count(c) for c in classes}, "heldout_cases": len(set(source_cases)),
        "seed": seed, "n_boot": n_boot, "interval": "95 % percentile bootstrap over held-out cases",
        "classifier": {"encoder": {"name": encoder.info.name, "weights_sha256": encoder.info.weights_sha256},
                       "chosen": classifier["chosen"],
                       "how": "logistic probe (medfm fit-probe) on the training split" if classifier["chosen"] == "probe"
                              else "zero-shot (medfm classify --labels) with the class names",
                       "validation": classifier["validation"], "validation_images": classifier["validation_images"],
                       "validation_cases": classifier["validation_cases"], "fit_images_for_validation": classifier["fit_images"],
                       "train_images": len(train_files), "heldout_sources_untranslated": reference,
                       "heldout_sources_untranslated_target_probability": float(untranslated.mean())},
        "strengths": per_strength,
        "machine": platform.processor() or platform.machine(), "torch_threads": 1,
        "wall_seconds": time.perf_counter() - started, "load_average_at_start_and_end": [load_at_start, os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gen_dir", type=Path)
    parser.add_argument("--split", type=Path, required=True, help="generator_heldout.py split's folder")
    parser.add_argument("--per-class", type=int, default=24, help="held-out source images per class")
    parser.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS))
    parser.add_argument("--steps", type=int, default=None, help="steps for the whole [0, 1] (default: the generator's)")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--results", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = run(args.gen_dir, args.split, args.per_class, args.strengths, args.steps, args.guidance, args.seed, args.n_boot)
    text = json.dumps(result, indent=2)
    if args.results:
        args.results.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
