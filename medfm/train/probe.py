"""Fitting a probe on frozen embeddings of a labelled manifest (``medfm fit-probe``)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.bootstrap import bootstrap
from medfm.eval.cls_metrics import accuracy_and_auc
from medfm.index import Index
from medfm.io.manifest import read_manifest
from medfm.models.encoders.base import Encoder, model_record
from medfm.models.probe import HEADS, Probe
from medfm.tasks.embed import embed_paths


def manifest_embeddings(paths: list[str], encoder: Encoder | None, index: Index | None, batch_size: int = 32) -> np.ndarray:
    """``(N, D)``: stored vectors for paths the index holds, the encoder's for the rest."""
    found = {}
    if index is not None:
        by_path = {metadata.get("path"): item for item, metadata in index.records()}
        found = {row: by_path[p] for row, p in enumerate(paths) if p in by_path}
    rest = [row for row in range(len(paths)) if row not in found]
    if rest and encoder is None:
        raise MedfmError(f"{len(rest)} of {len(paths)} manifest images are not in index {index.location} "
                         f"(first: {display_path(paths[rest[0]])}); give a model to embed them")
    dim = index.model["embed_dim"] if index is not None else encoder.info.embed_dim
    out = np.zeros((len(paths), dim), np.float32)
    if found:
        out[list(found)] = index.vectors(list(found.values()))
    if rest:
        out[rest] = embed_paths([paths[row] for row in rest], encoder, batch_size=batch_size)
    return out


def operating_target(sensitivity: float | None, specificity: float | None) -> tuple[str, float | None]:
    """``(target, value)`` for :meth:`Probe.calibrate` from at most one of a target sensitivity and specificity."""
    if sensitivity is not None and specificity is not None:
        raise MedfmError("give a target sensitivity or a target specificity, not both")
    if sensitivity is not None:
        return "sensitivity", sensitivity
    if specificity is not None:
        return "specificity", specificity
    return "youden", None


def fit_probe(
    manifest: str | os.PathLike,
    label_column: str,
    *,
    encoder: Encoder | None = None,
    index: Index | None = None,
    method: str = "logistic",
    k: int = 10,
    calibration: str | os.PathLike | None = None,
    target_sensitivity: float | None = None,
    target_specificity: float | None = None,
    positive: str | None = None,
    path_column: str = "path",
    batch_size: int = 32,
    balanced: bool = False,
) -> Probe:
    """A probe fitted on ``manifest``'s images and labels (``method``: ``"logistic"``, with
    ``balanced`` class weights for a rare class, or ``"knn"`` with ``k`` neighbours) and, if
    ``calibration`` names a labelled manifest, an operating point chosen on it: the threshold
    reaching ``target_sensitivity`` or ``target_specificity`` (at most one), else the one
    maximising Youden's J.

    Needs ``encoder`` or ``index`` (or both: they must hold the same model). A target without
    a calibration manifest raises rather than being ignored.
    """
    target, value = operating_target(target_sensitivity, target_specificity)
    if target != "youden" and calibration is None:
        raise MedfmError(f"a target {target} ({value}) is reached on a calibration manifest; give one")
    if method not in HEADS:
        raise MedfmError(f"method must be one of {', '.join(HEADS)}; got {method!r}")
    if balanced and method != "logistic":
        raise MedfmError("balanced class weights are for the logistic-regression head; a kNN head votes by neighbours")
    if encoder is None and index is None:
        raise MedfmError("fitting a probe needs a model or an index to take embeddings from")
    if encoder is not None and index is not None:
        index.check_model(encoder.info)
    model = model_record(encoder.info) if encoder is not None else dict(index.model)
    paths, labels = read_manifest(manifest, label_column, path_column)
    _check_class_sizes(manifest, label_column, labels)
    def new_head():
        return HEADS[method](k) if method == "knn" else HEADS[method](class_weight="balanced" if balanced else None)

    embeddings = manifest_embeddings(paths, encoder, index, batch_size)
    head = new_head().fit(embeddings, labels)
    counts = {label: labels.count(label) for label in head.classes_}
    probe = Probe(head, model, training={"manifest": Path(manifest).name, "label_column": label_column, "counts": counts,
                                         "balanced": balanced, "cross_validation": cross_validate(new_head, embeddings, labels)})
    if calibration is not None:
        cal_paths, cal_labels = read_manifest(calibration, label_column, path_column)
        probe.calibrate(manifest_embeddings(cal_paths, encoder, index, batch_size), cal_labels, target, value, positive)
    return probe


def _check_class_sizes(manifest: str | os.PathLike, label_column: str, labels: list[str]) -> None:
    """Refuse, before embedding anything, a class seen once: a probe cannot be checked on it (no image of it is
    left to predict) and a column of mostly unique values (captions, ids) is no set of classes."""
    counts = Counter(labels)
    single = sorted(label for label, count in counts.items() if count < 2)
    if single:
        more = f" (and {len(single) - 1} other classes)" if len(single) > 1 else ""
        raise MedfmError(f"{display_path(manifest)}: each class of {label_column!r} needs at least 2 rows; "
                         f"{single[0]!r} has 1{more}")


def cross_validate(new_head, embeddings: np.ndarray, labels: list[str], folds: int = 5, seed: int = 0) -> dict:
    """What a probe of this kind reaches on images it was not fitted on, against guessing.

    Stratified ``folds``-fold cross-validation (fewer when the rarest class has fewer
    images): every image is predicted by a head fitted on the other folds. Accuracy and AUC
    (binary, or the macro one-vs-rest AUC) of those out-of-fold predictions come with 95 %
    bootstrap intervals over images, beside the majority-class baseline (always answering
    the commonest class); ``beats_baseline`` is whether the accuracy interval lies above it.
    ``new_head()`` makes an unfitted head.
    """
    from sklearn.model_selection import StratifiedKFold

    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    majority = int(np.bincount(y).argmax())
    baseline = {"class": classes[majority], "accuracy": float(np.mean(y == majority))}
    folds = min(folds, int(np.bincount(y).min()))
    if folds < 2:
        return {"folds": 0, "skipped": "a class has fewer than 2 images", "majority_baseline": baseline}
    scores = np.zeros((len(y), len(classes)))
    for train, held_out in StratifiedKFold(folds, shuffle=True, random_state=seed).split(embeddings, y):
        head = new_head().fit(embeddings[train], [labels[i] for i in train])
        scores[np.ix_(held_out, [classes.index(c) for c in head.classes_])] = head.predict_proba(embeddings[held_out])

    estimates = bootstrap(lambda rows: accuracy_and_auc(scores[rows], y[rows]), len(y), n_boot=500, seed=seed)
    return {"folds": folds, **{name: estimate.as_dict() for name, estimate in estimates.items()},
            "majority_baseline": baseline, "beats_baseline": bool(estimates["accuracy"].low > baseline["accuracy"])}
