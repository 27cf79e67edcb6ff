"""Is synthetic data useful? (``medfm evaluate synthetic GEN_DIR --task cls|seg --data MANIFEST``)

The downstream model is trained twice on the manifest's training split: on the real images alone,
and on them plus ``per_class`` synthetic images of each class (or of the ``synthetic_classes`` named: a
rare class); both are scored on the held-out split, and the difference comes with a paired bootstrap
interval over held-out images.

- ``cls``: a logistic-regression probe on frozen embeddings (columns ``path``, ``label``, ``split``),
  scored by accuracy, AUC, balanced accuracy and each class's recall; both probes are also fitted with
  balanced class weights, the free alternative to synthetic images of a rare class, which the synthetic
  images must add to.
- ``seg``: ``medfm train seg`` for the same budget each time (columns ``image``, ``mask``, ``split``),
  with the samples and label maps of an image–mask pair generator (``train generator --masks``);
  scored by Dice and HD95 per held-out image. Both trainings hold out the same real images for their
  own validation: each synthetic pair joins the group of a real training image, in turn.

Beside it: FRD and improved precision/recall of the synthetic set against the held-out real images,
and the memorisation check (each sample's nearest real training image by embedding cosine). Every
image, real or synthetic, is prepared as the generator's training prepares images (see
:mod:`medfm.train.generator_eval`), so the comparison is of content, not resolution.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.synthetic import (DEFAULT_K, NEAR_COPY_QUANTILE, check_set_sizes, compare_classifiers, compare_segmenters,
                                  near_copies, precision_recall)
from medfm.io.manifest import read_rows
from medfm.models.encoders.base import Encoder
from medfm.models.generators import Generator
from medfm.models.probe import LinearProbe
from medfm.models.registry import DEFAULT_ENCODER, create_encoder
from medfm.tasks.embed import embed_paths
from medfm.tasks.generate import generate, open_generator
from medfm.train.generator_eval import frd_summary, prepare_real, prepare_real_masks

#: Downstream tasks ``evaluate synthetic`` knows.
TASKS = ("cls", "seg")


def _split_rows(data: Path, label_column: str, path_column: str, split: str) -> tuple[list[str], list[str], list[int]]:
    """``(image paths, labels, manifest line numbers)`` of one split's rows."""
    paths, labels, lines = [], [], []
    for line, row in enumerate(read_rows(data, (path_column, label_column, "split")), start=2):
        if row["split"] != split:
            continue
        if not row[path_column] or not row[label_column]:
            raise MedfmError(f"{display_path(data)}, line {line}: empty {path_column!r} or {label_column!r}")
        paths.append(str((data.parent / row[path_column]).resolve()))
        labels.append(row[label_column])
        lines.append(line)
    if len(paths) < 2:
        raise MedfmError(f"{display_path(data)}: {len(paths)} row(s) with split {split!r}; the evaluation needs at least 2")
    return paths, labels, lines


def evaluate_synthetic(generator: str | os.PathLike, data: str | os.PathLike, encoder: Encoder | None = None, *, task: str = "cls",
                       per_class: int = 32, label_column: str = "label", path_column: str = "path",
                       train_split: str = "train", test_split: str = "test", steps: int | None = None,
                       guidance: float | None = None, seed: int = 0, n_boot: int = 1000, k: int = DEFAULT_K,
                       near_copy_quantile: float = NEAR_COPY_QUANTILE, workers: int | None = None,
                       budget_minutes: float = 5.0, max_steps: int | None = None,
                       synthetic_classes: Sequence[str] | None = None,
                       log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The downstream model on real training images against real plus ``per_class`` synthetic images per class
    (``cls``: of each of ``synthetic_classes``, default every class), on the held-out split of manifest ``data``
    (column ``split``: ``train_split`` and ``test_split`` rows), with FRD, precision/recall and the near-copy check
    of the synthetic set (see the module docstring); embeddings are ``encoder``'s (default:
    :data:`~medfm.models.registry.DEFAULT_ENCODER`). ``seg`` trains each segmenter for ``budget_minutes`` (and at
    most ``max_steps`` steps)."""
    if task not in TASKS:
        raise MedfmError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise MedfmError(f"--per-class must be a positive number of images; got {per_class!r}")
    if task == "seg" and synthetic_classes:
        raise MedfmError("--synthetic-class is for --task cls; a pair generator's samples are not chosen by class")
    data = Path(data)
    model = open_generator(generator)
    if task == "seg":
        return _evaluate_segmentation(model, data, encoder, per_class, train_split, test_split, steps, guidance, seed,
                                      n_boot, k, near_copy_quantile, workers, budget_minutes, max_steps, log)
    if model.condition == "none":
        raise MedfmError(f"generator {model.name!r} is unconditional; a classification evaluation needs synthetic images of "
                         "each class (a class-conditional generator), even with --synthetic-class")
    train_paths, train_labels, train_lines = _split_rows(data, label_column, path_column, train_split)
    test_paths, test_labels, _ = _split_rows(data, label_column, path_column, test_split)
    classes = sorted(set(train_labels))
    if len(classes) < 2:
        raise MedfmError(f"{display_path(data)}: the {train_split!r} rows have one class ({classes[0]!r}); a classifier needs two")
    unseen = sorted(set(test_labels) - set(classes))
    if unseen:
        raise MedfmError(f"{display_path(data)}: held-out class {unseen[0]!r} has no {train_split!r} rows")
    missing = [c for c in classes if model.condition == "class" and c not in model.classes]
    if missing:
        raise MedfmError(f"{display_path(data)}: class {missing[0]!r} is not one of generator {model.name!r}'s classes "
                         f"({', '.join(model.classes)})")
    unknown = sorted(set(synthetic_classes or ()) - set(classes))
    if unknown:
        raise MedfmError(f"--synthetic-class {unknown[0]!r} is not a class of the {train_split!r} rows of "
                         f"{display_path(data)} ({', '.join(classes)})")
    augmented_classes = sorted(set(synthetic_classes)) if synthetic_classes else classes
    check_set_sizes(len(test_paths), per_class * len(augmented_classes), k)
    if encoder is None:
        encoder = create_encoder(DEFAULT_ENCODER)
    with tempfile.TemporaryDirectory(prefix="medfm-synthetic-") as tmp:
        root = Path(tmp)
        train_files = prepare_real(train_paths, model, root / "train", train_split)
        test_files = prepare_real(test_paths, model, root / "heldout", test_split)
        synthetic, samples = root / "synthetic", []
        synthetic.mkdir()
        for number, label in enumerate(classes):
            if label not in augmented_classes:
                continue
            (root / f"class-{number}").mkdir()
            made = generate(model, root / f"class-{number}", per_class, condition=label, seed=seed + number * per_class,
                            steps=steps, guidance=guidance)
            for item in made["images"]:
                target = synthetic / f"{len(samples):05d}.png"
                os.replace(item["file"], target)
                samples.append({"file": target, "condition": label, "seed": item["seed"]})
        measures, embeddings = _synthetic_set(encoder, train_files, test_files, samples, train_lines, k, near_copy_quantile, workers)
    train_embeddings, test_embeddings, synthetic_embeddings = embeddings
    synthetic_labels = [s["condition"] for s in samples]
    y = np.array([classes.index(label) for label in test_labels])
    augmented_embeddings = np.concatenate([train_embeddings, synthetic_embeddings])

    def real_against_augmented(class_weight: str | None) -> dict[str, Any]:
        """Probes with ``class_weight`` on the real rows and on real + synthetic, compared on the held-out images."""
        real = LinearProbe(class_weight=class_weight).fit(train_embeddings, train_labels)
        augmented = LinearProbe(class_weight=class_weight).fit(augmented_embeddings, train_labels + synthetic_labels)
        # the same seed draws the same resamples, so both comparisons are paired over the same held-out images
        return compare_classifiers(y, real.predict_proba(test_embeddings), augmented.predict_proba(test_embeddings),
                                   classes, n_boot=n_boot, seed=seed)

    comparison, weighted = real_against_augmented(None), real_against_augmented("balanced")
    return {
        "task": task, "data": display_path(data), "classes": classes,
        "generator": _generator_entry(model, made), "encoder": {"name": encoder.info.name, "weights_sha256": encoder.info.weights_sha256},
        "n_train": dict(sorted(Counter(train_labels).items())), "n_heldout": dict(sorted(Counter(test_labels).items())),
        "synthetic_per_class": per_class, "synthetic_classes": augmented_classes, "seed": seed,
        "classifier": {"head": "logistic regression on frozen embeddings", "n_boot": n_boot,
                       "real_only": comparison["baseline"], "real_plus_synthetic": comparison["candidate"],
                       "difference": comparison["difference"],
                       "real_only_class_weighted": weighted["baseline"],
                       "real_plus_synthetic_class_weighted": weighted["candidate"],
                       "difference_class_weighted": weighted["difference"]},
        **measures, "settings": _settings(model, train_split, test_split),
    }


def _generator_entry(model: Generator, made: dict[str, Any]) -> dict[str, Any]:
    return {"name": model.name, "weights_sha256": model.weights_sha256, "method": model.method, "size": model.size,
            "channels": model.channels, "steps": made["steps"], "guidance": made["guidance"]}


def _settings(model: Generator, train_split: str, test_split: str) -> dict[str, Any]:
    return {"preparation": f"every image resized to {model.size}x{model.size}, {model.channels} channel(s), 8-bit, "
                           "as the generator's training prepared images",
            "comparisons": f"FRD and precision/recall: synthetic against the {test_split!r} rows; "
                           f"near-copies: against the {train_split!r} rows",
            "splits": {"train": train_split, "heldout": test_split}}


def _synthetic_set(encoder: Encoder, train_files: list[Path], test_files: list[Path], samples: list[dict[str, Any]],
                   train_lines: list[int], k: int, quantile: float, workers: int | None
                   ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """FRD, precision/recall and near-copies of the synthetic ``samples`` (files in one folder), and the
    embeddings of the training, held-out and synthetic images."""
    train_embeddings = embed_paths(train_files, encoder, cache=False)
    test_embeddings = embed_paths(test_files, encoder, cache=False)
    synthetic_embeddings = embed_paths([s["file"] for s in samples], encoder, cache=False)
    frd = frd_summary(test_files[0].parent, samples[0]["file"].parent, workers)
    memorisation = near_copies(synthetic_embeddings, train_embeddings, test_embeddings, quantile)
    for sample, check in zip(samples, memorisation["samples"], strict=True):
        # the manifest line rather than the path: file names can carry patient identifiers
        check.update(condition=sample["condition"], seed=sample["seed"],
                     nearest_training_line=train_lines[check.pop("nearest_training")])
    measures = {"frd": frd, "precision_recall": precision_recall(test_embeddings, synthetic_embeddings, k),
                "memorisation": memorisation}
    return measures, (train_embeddings, test_embeddings, synthetic_embeddings)


def _pair_rows(data: Path, split: str) -> tuple[list[str], list[str], list[int]]:
    """``(image paths, mask paths, manifest line numbers)`` of one split's rows of a segmentation manifest."""
    images, masks, lines = [], [], []
    for line, row in enumerate(read_rows(data, ("image", "mask", "split")), start=2):
        if row["split"] != split:
            continue
        if not row["image"] or not row["mask"]:
            raise MedfmError(f"{display_path(data)}, line {line}: empty 'image' or 'mask'")
        images.append(str((data.parent / row["image"]).resolve()))
        masks.append(str((data.parent / row["mask"]).resolve()))
        lines.append(line)
    if len(images) < 2:
        raise MedfmError(f"{display_path(data)}: {len(images)} row(s) with split {split!r}; the evaluation needs at least 2")
    return images, masks, lines


def _write_seg_manifest(path: Path, rows: list[tuple[Path, Path, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "group"])
        writer.writerows([[str(image), str(mask), group] for image, mask, group in rows])
    return path


def _evaluate_segmentation(model: Generator, data: Path, encoder: Encoder | None, per_class: int, train_split: str,
                           test_split: str, steps: int | None, guidance: float | None, seed: int, n_boot: int, k: int,
                           quantile: float, workers: int | None, budget_minutes: float, max_steps: int | None,
                           log: Callable[[str], None]) -> dict[str, Any]:
    from medfm.train.seg import train_segmenter

    if not model.mask_labels:
        raise MedfmError(f"generator {model.name!r} makes images without masks; --task seg needs an image–mask pair "
                         "generator (medfm train generator --masks)")
    if not budget_minutes > 0:
        raise MedfmError(f"--budget-min must be above 0 minutes; got {budget_minutes}")
    train_images, train_masks, train_lines = _pair_rows(data, train_split)
    test_images, test_masks, _ = _pair_rows(data, test_split)
    if encoder is None:
        encoder = create_encoder(DEFAULT_ENCODER)
    count = per_class * max(1, len(model.classes))
    check_set_sizes(len(test_images), count, k)
    with tempfile.TemporaryDirectory(prefix="medfm-synthetic-") as tmp:
        root = Path(tmp)
        train_files = prepare_real(train_images, model, root / "train", train_split)
        train_mask_files = prepare_real_masks(train_masks, train_images, model, root / "train-masks")
        test_files = prepare_real(test_images, model, root / "heldout", test_split)
        test_mask_files = prepare_real_masks(test_masks, test_images, model, root / "heldout-masks")
        log(f"sampling {count} image–mask pairs")
        (root / "synthetic").mkdir()
        made = generate(model, root / "synthetic", count, seed=seed, steps=steps, guidance=guidance)
        samples = [{"file": Path(item["file"]), "mask": Path(item["mask"]), "condition": item["condition"], "seed": item["seed"]}
                   for item in made["images"]]
        real = [(image, mask, f"real-{n}") for n, (image, mask) in enumerate(zip(train_files, train_mask_files))]
        # each synthetic pair joins a real image's group, so that both trainings validate on the same real images
        added = [(s["file"], s["mask"], real[n % len(real)][2]) for n, s in enumerate(samples)]
        scores = {}
        for name, rows in (("real_only", real), ("real_plus_synthetic", real + added)):
            log(f"training the segmenter on {name.replace('_', ' ')} ({len(rows)} images)")
            trained = train_segmenter(_write_seg_manifest(root / f"{name}.csv", rows), root / name, group_column="group",
                                      budget_minutes=budget_minutes, max_steps=max_steps, seed=seed)
            scores[name] = (_heldout_scores(root / name, test_files, test_mask_files), trained)
        measures, _ = _synthetic_set(encoder, train_files, test_files, samples, train_lines, k, quantile, workers)
    comparison = compare_segmenters(scores["real_only"][0], scores["real_plus_synthetic"][0], n_boot=n_boot, seed=seed)
    return {
        "task": "seg", "data": display_path(data), "mask_labels": model.mask_labels,
        "generator": _generator_entry(model, made), "encoder": {"name": encoder.info.name, "weights_sha256": encoder.info.weights_sha256},
        "n_train": {"real": len(real), "synthetic": len(added)}, "n_heldout": {"real": len(test_files)},
        "synthetic_per_class": per_class, "seed": seed,
        "segmenter": {"head": f"medfm train seg, {budget_minutes:g} min" + (f" or {max_steps} steps" if max_steps else "")
                      + " each", "n_boot": n_boot, "real_only": comparison["baseline"],
                      "real_plus_synthetic": comparison["candidate"], "difference": comparison["difference"],
                      "training": {name: {key: trained[key] for key in ("steps", "training_seconds", "train_images", "val_images")}
                                   for name, (_, trained) in scores.items()}},
        **measures, "settings": _settings(model, train_split, test_split),
    }


def _heldout_scores(model_dir: Path, images: list[Path], masks: list[Path]) -> dict[str, np.ndarray]:
    """Per held-out image: the Dice and HD95 of the segmenter in ``model_dir``, averaged over its labels, and per label
    (``dice <name>``) when it has several; reference masks read as its training read them."""
    from medfm.eval.seg_metrics import score_label_maps
    from medfm.models.registry import create_auto_segmenter
    from medfm.train.seg_data import Case, load_pair

    segmenter = create_auto_segmenter(model_dir)
    values = segmenter.plan.label_values
    rows: dict[str, list[float]] = {"dice": [], "hd95": []}
    for image, mask in zip(images, masks, strict=True):
        pair = load_pair(Case(str(image), (str(mask),), str(image)), segmenter.plan.labels)
        predicted = segmenter.label_map(segmenter.probabilities(pair.pixels, pair.spacing))
        scores = score_label_maps(predicted[..., 0], pair.mask[..., 0], pair.spacing[:2], values)
        rows["dice"].append(float(np.mean([scores[v].dice for v in values])))
        hd95 = [scores[v].hd95 for v in values if np.isfinite(scores[v].hd95)]
        rows["hd95"].append(float(np.mean(hd95)) if hd95 else float("nan"))
        if len(values) > 1:
            for value in values:
                rows.setdefault(f"dice {segmenter.plan.labels[value]}", []).append(scores[value].dice)
    return {name: np.array(column, dtype=np.float64) for name, column in rows.items()}
