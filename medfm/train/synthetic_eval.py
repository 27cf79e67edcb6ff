"""Is synthetic data useful? (``medfm evaluate synthetic GEN_DIR --task cls --data MANIFEST``)

A logistic-regression probe on frozen embeddings is fitted twice on the manifest's training split:
on the real images alone, and on them plus ``per_class`` synthetic images of each class; both are
scored on the held-out split, and the difference comes with a paired bootstrap interval. Beside it:
FRD and improved precision/recall of the synthetic set against the held-out real images, and the
memorisation check (each sample's nearest real training image by embedding cosine). Every image,
real or synthetic, is prepared as the generator's training prepares images (see
:mod:`medfm.train.generator_eval`), so the probe compares content, not resolution.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.synthetic import DEFAULT_K, NEAR_COPY_QUANTILE, compare_classifiers, near_copies, precision_recall
from medfm.io.manifest import read_rows
from medfm.models.encoders.base import Encoder
from medfm.models.probe import LinearProbe
from medfm.models.registry import DEFAULT_ENCODER, create_encoder
from medfm.tasks.embed import embed_paths
from medfm.tasks.generate import generate, open_generator
from medfm.train.generator_eval import frd_summary, prepare_real

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
                       near_copy_quantile: float = NEAR_COPY_QUANTILE, workers: int | None = None) -> dict[str, Any]:
    """The probe on real training images against real plus ``per_class`` synthetic images per class, on the
    held-out split of manifest ``data`` (column ``split``: ``train_split`` and ``test_split`` rows), with FRD,
    precision/recall and the near-copy check of the synthetic set (see the module docstring); embeddings are
    ``encoder``'s (default: :data:`~medfm.models.registry.DEFAULT_ENCODER`)."""
    if task == "seg":
        raise MedfmError("evaluate synthetic --task seg is not available yet: the generators make images without masks; use --task cls")
    if task not in TASKS:
        raise MedfmError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise MedfmError(f"--per-class must be a positive number of images; got {per_class!r}")
    data = Path(data)
    model = open_generator(generator)
    if model.condition == "none":
        raise MedfmError(f"generator {model.name!r} is unconditional; a classification evaluation needs synthetic images of each class")
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
    if encoder is None:
        encoder = create_encoder(DEFAULT_ENCODER)
    with tempfile.TemporaryDirectory(prefix="medfm-synthetic-") as tmp:
        root = Path(tmp)
        train_files = prepare_real(train_paths, model, root / "train", train_split)
        test_files = prepare_real(test_paths, model, root / "heldout", test_split)
        synthetic, samples = root / "synthetic", []
        synthetic.mkdir()
        for number, label in enumerate(classes):
            (root / f"class-{number}").mkdir()
            made = generate(model, root / f"class-{number}", per_class, condition=label, seed=seed + number * per_class,
                            steps=steps, guidance=guidance)
            for item in made["images"]:
                target = synthetic / f"{len(samples):05d}.png"
                os.replace(item["file"], target)
                samples.append({"file": target, "condition": label, "seed": item["seed"]})
        train_embeddings = embed_paths(train_files, encoder, cache=False)
        test_embeddings = embed_paths(test_files, encoder, cache=False)
        synthetic_embeddings = embed_paths([s["file"] for s in samples], encoder, cache=False)
        frd = frd_summary(root / "heldout", synthetic, workers)
    synthetic_labels = [s["condition"] for s in samples]
    real_only = LinearProbe().fit(train_embeddings, train_labels)
    augmented = LinearProbe().fit(np.concatenate([train_embeddings, synthetic_embeddings]), train_labels + synthetic_labels)
    y = np.array([classes.index(label) for label in test_labels])
    comparison = compare_classifiers(y, real_only.predict_proba(test_embeddings), augmented.predict_proba(test_embeddings),
                                     n_boot=n_boot, seed=seed)
    memorisation = near_copies(synthetic_embeddings, train_embeddings, test_embeddings, near_copy_quantile)
    for sample, check in zip(samples, memorisation["samples"], strict=True):
        # the manifest line rather than the path: file names can carry patient identifiers
        check.update(condition=sample["condition"], seed=sample["seed"],
                     nearest_training_line=train_lines[check.pop("nearest_training")])
    return {
        "task": task, "data": display_path(data), "classes": classes,
        "generator": {"name": model.name, "weights_sha256": model.weights_sha256, "method": model.method,
                      "size": model.size, "channels": model.channels, "steps": made["steps"], "guidance": made["guidance"]},
        "encoder": {"name": encoder.info.name, "weights_sha256": encoder.info.weights_sha256},
        "n_train": dict(sorted(Counter(train_labels).items())), "n_heldout": dict(sorted(Counter(test_labels).items())),
        "synthetic_per_class": per_class, "seed": seed,
        "classifier": {"head": "logistic regression on frozen embeddings", "n_boot": n_boot,
                       "real_only": comparison["baseline"], "real_plus_synthetic": comparison["candidate"],
                       "difference": comparison["difference"]},
        "frd": frd, "precision_recall": precision_recall(test_embeddings, synthetic_embeddings, k),
        "memorisation": memorisation,
        "settings": {"preparation": f"every image resized to {model.size}x{model.size}, {model.channels} channel(s), 8-bit, "
                                    "as the generator's training prepared images",
                     "comparisons": f"FRD and precision/recall: synthetic against the {test_split!r} rows; "
                                    f"near-copies: against the {train_split!r} rows",
                     "splits": {"train": train_split, "heldout": test_split}},
    }
