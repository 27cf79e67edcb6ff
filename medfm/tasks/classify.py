"""Classify images: zero-shot from label prompts, or with a fitted probe; nearest cases as evidence.

:func:`fit_probe` fits a :class:`~medfm.tasks.probe.Probe` on a labelled manifest (a CSV
with a path column and a label column; relative paths are relative to the CSV), taking
embeddings from an index where it holds the image and from the encoder otherwise, and
chooses its operating point on a calibration manifest. :func:`classify` gives, for each
image, label probabilities and a prediction, and with an index the ``k`` most similar
indexed cases.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.catalog.store import ImageRecord
from medfm.errors import MedfmError, display_path
from medfm.index import Index
from medfm.index.base import model_record
from medfm.models.encoders.base import Encoder
from medfm.tasks.embed import embed_paths
from medfm.tasks.probe import HEADS, Probe
from medfm.tasks.zeroshot import DEFAULT_SCALE, DEFAULT_TEMPLATES, label_embeddings, probabilities

#: The image-text model for zero-shot classification when none is named.
DEFAULT_MODEL = "medfm-clip-small"


def read_manifest(path: str | os.PathLike, label_column: str, path_column: str = "path") -> tuple[list[str], list[str]]:
    """``(image paths, labels)`` from a CSV manifest; every row needs both columns filled."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in (path_column, label_column) if c not in columns]
            if missing:
                raise MedfmError(f"{display_path(path)}: no column {missing[0]!r}; the columns are {', '.join(columns) or '(none)'}")
            rows = list(reader)
    except OSError as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the manifest ({exc.strerror or exc})") from None
    images, labels = [], []
    for line, row in enumerate(rows, start=2):
        if not (row.get(path_column) or "").strip() or not (row.get(label_column) or "").strip():
            raise MedfmError(f"{display_path(path)}, line {line}: empty {path_column!r} or {label_column!r}")
        images.append(str((path.parent / row[path_column].strip()).resolve()))
        labels.append(row[label_column].strip())
    if not images:
        raise MedfmError(f"{display_path(path)}: the manifest has no rows")
    return images, labels


def _embeddings(paths: list[str], encoder: Encoder | None, index: Index | None, batch_size: int) -> np.ndarray:
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


def fit_probe(
    manifest: str | os.PathLike,
    label_column: str,
    *,
    encoder: Encoder | None = None,
    index: Index | None = None,
    method: str = "logistic",
    k: int = 10,
    calibration: str | os.PathLike | None = None,
    target: str = "youden",
    value: float | None = None,
    positive: str | None = None,
    path_column: str = "path",
    batch_size: int = 32,
) -> Probe:
    """A probe fitted on ``manifest``'s images and labels (``method``: ``"logistic"`` or
    ``"knn"`` with ``k`` neighbours), with an operating point (``target``: ``"sensitivity"``,
    ``"specificity"`` with ``value``, or ``"youden"``) chosen on ``calibration`` if given.

    Needs ``encoder`` or ``index`` (or both: they must hold the same model).
    """
    if method not in HEADS:
        raise MedfmError(f"method must be one of {', '.join(HEADS)}; got {method!r}")
    if encoder is None and index is None:
        raise MedfmError("fitting a probe needs a model or an index to take embeddings from")
    if encoder is not None and index is not None:
        index.check_model(encoder.info)
    model = model_record(encoder.info) if encoder is not None else dict(index.model)
    paths, labels = read_manifest(manifest, label_column, path_column)
    head = HEADS[method](k) if method == "knn" else HEADS[method]()
    head.fit(_embeddings(paths, encoder, index, batch_size), labels)
    counts = {label: labels.count(label) for label in head.classes_}
    probe = Probe(head, model, training={"manifest": Path(manifest).name, "label_column": label_column, "counts": counts})
    if calibration is not None:
        cal_paths, cal_labels = read_manifest(calibration, label_column, path_column)
        probe.calibrate(_embeddings(cal_paths, encoder, index, batch_size), cal_labels, target, value, positive)
    return probe


def _entries(path: str | os.PathLike, what: str) -> list[str]:
    """The non-blank lines of a text file that do not start with ``#``, stripped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MedfmError(f"{display_path(path)}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the {what} file ({exc})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_labels(labels: str | None = None, labels_file: str | os.PathLike | None = None) -> list[str]:
    """Class names from comma-separated ``labels`` or ``labels_file`` (one per line, ``#`` lines ignored)."""
    if (labels is None) == (labels_file is None):
        raise MedfmError("give the labels as a comma-separated list or as a file, not both")
    if labels_file is not None:
        names = _entries(labels_file, "labels")
    else:
        names = [name.strip() for name in labels.split(",") if name.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise MedfmError(f"zero-shot classification needs at least two distinct labels; got {names}")
    return names


def read_templates(path: str | os.PathLike) -> list[str]:
    """Prompt templates, one per line with ``{}`` for the label; blank and ``#`` lines ignored."""
    templates = _entries(path, "templates")
    if not templates:
        raise MedfmError(f"{display_path(path)}: no templates in the file")
    return templates


def classify(
    paths: Sequence[str | os.PathLike | ImageRecord],
    encoder: Encoder,
    *,
    labels: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    probe: Probe | None = None,
    index: Index | None = None,
    k: int = 5,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """One result per image: ``{"path", "model", "probabilities": {label: p}, "prediction"}``
    (``"image_id"`` instead of ``"path"`` for a catalog record, read from exactly its own files),
    plus ``"operating_point"`` with a calibrated probe and ``"evidence"`` (the ``k`` most
    similar indexed cases, best first) with an ``index``.

    Zero-shot with ``labels`` (and prompt ``templates``, ensembled), or with a fitted ``probe``.
    """
    if (labels is None) == (probe is None):
        raise MedfmError("give labels for zero-shot classification or a probe, not both")
    if probe is not None:
        probe.check_model(encoder.info)
    if index is not None:
        index.check_model(encoder.info)
    embeddings = embed_paths(list(paths), encoder, batch_size=batch_size)
    if probe is not None:
        proba, predicted = probe.predict(embeddings)
        classes = probe.classes
    else:
        classes = list(labels)
        # the same prompt ensembling and logit scale as medfm.tasks.zeroshot.zero_shot, on
        # the aggregated embedding of each whole image (zero_shot itself takes one plane)
        scale = getattr(encoder, "logit_scale", DEFAULT_SCALE)
        proba = probabilities(embeddings, label_embeddings(classes, encoder, templates), scale)
        predicted = [classes[i] for i in proba.argmax(axis=1)]
    results = []
    for row, path in enumerate(paths):
        named = {"image_id": path.id} if isinstance(path, ImageRecord) else {"path": display_path(path)}
        result = {**named, "model": model_record(encoder.info),
                  "probabilities": {c: round(float(p), 6) for c, p in zip(classes, proba[row])},
                  "prediction": predicted[row]}
        if probe is not None and probe.operating_point is not None:
            result["operating_point"] = probe.operating_point
        if probe is None:
            result["templates"] = list(templates or DEFAULT_TEMPLATES)
        if index is not None:
            result["evidence"] = [hit.to_dict() for hit in index.search(embeddings[row], k)]
        results.append(result)
    return results
