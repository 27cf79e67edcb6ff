"""Classify images: zero-shot from label prompts, or with a fitted probe; nearest cases as evidence.

:func:`classify` gives, for each image, label probabilities and a prediction, and with an
index the ``k`` most similar indexed cases. Probes are fitted by :mod:`medfm.train.probe`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfm.errors import MedfmError, display_path
from medfm.index import Index
from medfm.models.encoders.base import Encoder, model_record
from medfm.models.probe import Probe
from medfm.tasks.embed import embed_paths
from medfm.tasks.zeroshot import DEFAULT_SCALE, DEFAULT_TEMPLATES, label_embeddings, probabilities

#: The image-text model for zero-shot classification when none is named.
DEFAULT_MODEL = "medfm-clip-small"


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
    paths: Sequence[str | os.PathLike],
    encoder: Encoder,
    *,
    labels: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    probe: Probe | None = None,
    index: Index | None = None,
    k: int = 5,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """One result per image: ``{"path", "model", "probabilities": {label: p}, "prediction"}``,
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
        result = {"path": display_path(path), "model": model_record(encoder.info),
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
