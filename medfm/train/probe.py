"""Fitting a probe on frozen embeddings of a labelled manifest (``medfm fit-probe``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.index import Index
from medfm.io.manifest import read_manifest
from medfm.models.encoders.base import Encoder, model_record
from medfm.models.probe import HEADS, Probe
from medfm.tasks.embed import embed_paths


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
