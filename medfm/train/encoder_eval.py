"""Held-out retrieval and zero-shot evaluation of any encoder (``medfm evaluate retrieval|zeroshot``).

The data is a labelled CSV manifest (one image file per row, paths relative to it), or a
split manifest from ``medfm train clip --manifest-only`` (rows that are video frames and
npz rows too, paths relative to ``data_root``). Images are embedded through the encoder's
own preprocessing; the measures are :mod:`medfm.eval.retrieval`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.retrieval import (
    leave_one_out_retrieval,
    retrieval_cutoffs,
    summarise_by_class,
    text_to_image_recall,
    zero_shot_summary,
)
from medfm.io.manifest import read_rows
from medfm.models.encoders.base import Encoder
from medfm.tasks.domains import AXES
from medfm.tasks.embed import embed_paths
from medfm.tasks.zeroshot import DEFAULT_SCALE, DEFAULT_TEMPLATES, label_embeddings, probabilities
from medfm.train.clip_data import MANIFEST_COLUMNS, read_plane, read_split_manifest


@dataclass
class EvaluationSet:
    """Embedded rows of a labelled data set: ``embeddings`` ``(N, D)`` unit rows and, per row,
    its label, caption (or None) and group (rows of one group are one patient or case)."""

    source: str
    embeddings: np.ndarray
    labels: list[str]
    captions: list[str | None]
    groups: list[str]


def is_split_manifest(path: Path) -> bool:
    """Whether ``path``'s columns are those of ``medfm train clip --manifest-only``."""
    return set(read_rows(path)[0]) == set(MANIFEST_COLUMNS)


def embed_evaluation_set(data: str | os.PathLike, encoder: Encoder, *, label_column: str = "label", path_column: str = "path",
                         caption_column: str | None = None, group_column: str | None = None, split: str | None = None,
                         data_root: Path | None = None) -> EvaluationSet:
    """The rows of manifest ``data`` (only ``split``'s, when given), embedded by ``encoder``.

    A split manifest brings its own columns (``caption``, ``group``); its ``label_column`` is one
    of ``dataset``, ``modality``, ``region`` or ``label`` and its paths lie under ``data_root``.
    """
    data = Path(data)
    if is_split_manifest(data):
        if label_column not in ("dataset", "modality", "region", "label"):
            raise MedfmError(f"{display_path(data)}: a split manifest's label column is dataset, modality, region or label; "
                             f"got {label_column!r}")
        if data_root is None:
            raise MedfmError(f"{display_path(data)}: a split manifest needs the data folder its paths are in")
        samples = read_split_manifest(data, split)
        _check_count(data, len(samples), split)
        embeddings = encoder.encode_planes([read_plane(data_root, s) for s in samples])
        return EvaluationSet(display_path(data), embeddings, [getattr(s, label_column) for s in samples],
                             [s.caption for s in samples], [s.group for s in samples])
    required = (path_column, label_column, *([caption_column] if caption_column else []), *([group_column] if group_column else []),
                *(["split"] if split else []))
    rows = [row for row in read_rows(data, required) if split is None or row["split"] == split]
    _check_count(data, len(rows), split)
    paths = [str((data.parent / row[path_column]).resolve()) for row in rows]
    for line, row in enumerate(rows, start=2):
        if not row[path_column] or not row[label_column]:
            raise MedfmError(f"{display_path(data)}, row {line - 1}: empty {path_column!r} or {label_column!r}")
    return EvaluationSet(display_path(data), embed_paths(paths, encoder, cache=False), [row[label_column] for row in rows],
                         [row[caption_column] or None if caption_column else None for row in rows],
                         [row[group_column] if group_column else path for row, path in zip(rows, paths, strict=True)])


def _check_count(data: Path, count: int, split: str | None) -> None:
    if count < 2:
        where = f" in split {split!r}" if split else ""
        raise MedfmError(f"{display_path(data)}: {count} image(s){where}; an evaluation needs at least 2")


def _model(encoder: Encoder) -> dict:
    return {"name": encoder.info.name, "weights_sha256": encoder.info.weights_sha256}


def evaluate_retrieval(dataset: EvaluationSet, encoder: Encoder, *, ks: Sequence[int] | None = None,
                       n_boot: int = 1000, seed: int = 0) -> dict:
    """Image→image precision@k and mAP, overall and by class (leave-one-out, own group excluded),
    and, when rows have captions and the encoder a text tower, text→image recall@k (``ks``: see
    :func:`~medfm.eval.retrieval.retrieval_cutoffs`)."""
    ks = retrieval_cutoffs(ks, len(dataset.labels), dataset.groups)
    per_query = leave_one_out_retrieval(dataset.embeddings, dataset.labels, ks, dataset.groups)
    result = {"model": _model(encoder), "data": dataset.source, "n": len(dataset.labels),
              "groups": len(set(dataset.groups)), "image_to_image": summarise_by_class(
                  per_query, dataset.labels, groups=dataset.groups, n_boot=n_boot, seed=seed)}
    captioned: dict[str, set[int]] = {}
    rows = [row for row, caption in enumerate(dataset.captions) if caption]
    for position, row in enumerate(rows):
        captioned.setdefault(dataset.captions[row], set()).add(position)
    if captioned and encoder.info.has_text:
        queries = list(captioned)
        result["text_to_image"] = text_to_image_recall(encoder.encode_text(queries), dataset.embeddings[rows],
                                                       [captioned[q] for q in queries], ks, n_boot, seed)
    return result


def evaluate_zeroshot(dataset: EvaluationSet, encoder: Encoder, *, label_column: str = "label",
                      templates: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Zero-shot accuracy and macro AUC over the data's labels, with bootstrap intervals.

    For a ``modality`` or ``region`` column whose values are medfm's domain keys, the whole
    domain label set and its prompts are offered (as the model card measures them);
    otherwise each distinct label is its own prompt text, in ``templates`` (default
    :data:`~medfm.tasks.zeroshot.DEFAULT_TEMPLATES`).
    """
    if not encoder.info.has_text:
        raise MedfmError(f"encoder {encoder.info.name!r} has no text tower; zero-shot evaluation needs an image-text model")
    axis = AXES.get(label_column)
    if axis is not None and set(dataset.labels) <= set(axis[0]):
        keys, texts, templates = list(axis[0]), list(axis[0].values()), axis[1]
    else:
        keys = texts = sorted(set(dataset.labels))
        if len(keys) < 2:  # one label is always right: accuracy 1 and an undefined AUC would say nothing
            raise MedfmError(f"{dataset.source}: zero-shot evaluation needs at least two distinct labels in column "
                             f"{label_column!r}; got {keys}")
        templates = tuple(templates or DEFAULT_TEMPLATES)
    proba = probabilities(dataset.embeddings, label_embeddings(texts, encoder, templates),
                          getattr(encoder, "logit_scale", DEFAULT_SCALE))
    labels = np.array([keys.index(label) for label in dataset.labels])
    return {"model": _model(encoder), "data": dataset.source, "label_column": label_column, "labels": dict(zip(keys, texts, strict=True)),
            "templates": list(templates), "groups": len(set(dataset.groups)),
            **zero_shot_summary(proba, labels, keys, groups=dataset.groups, n_boot=n_boot, seed=seed)}
