"""Classify images: zero-shot from label prompts, or with a fitted probe; nearest cases as evidence.

:func:`classify` gives, for each image, label probabilities and a prediction, and with an
index the ``k`` most similar indexed cases. Probes are fitted by :mod:`medfm.train.probe`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from medfm.catalog.store import ImageRecord
from medfm.errors import FileError, MedfmError, display_path
from medfm.index import Index
from medfm.models.encoders.base import Encoder, model_record
from medfm.models.probe import Probe
from medfm.progress import progress_bar
from medfm.provenance import Provenance
from medfm.scale import Runner
from medfm.tasks.batch import BatchInput, BatchReport, failure
from medfm.tasks.embed import content_sha256, embed_paths, record_sha256
from medfm.tasks.zeroshot import (
    DEFAULT_SCALE,
    DEFAULT_TEMPLATES,
    label_embeddings,
    probabilities,
)

#: The prediction of an image that is like none of the labels (see ``abstain_below``).
OTHER = "other"
#: Longest zero-shot label: a prompt beyond a text tower's context (CLIP reads 77 tokens) is cut off silently.
MAX_LABEL_CHARS = 200


def _entries(path: str | os.PathLike, what: str) -> list[str]:
    """The non-blank lines of a text file that do not start with ``#``, stripped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MedfmError(f"{display_path(path)}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the {what} file ({exc})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def check_labels(labels: Sequence[str]) -> list[str]:
    """The class names of a zero-shot classification, checked: at least two, distinct, none blank,
    none longer than :data:`MAX_LABEL_CHARS`."""
    names = list(labels)
    if any(not name.strip() for name in names):
        raise MedfmError("a zero-shot label is blank; every label must name a class")
    if too_long := [name for name in names if len(name) > MAX_LABEL_CHARS]:
        raise MedfmError(f"zero-shot labels must be at most {MAX_LABEL_CHARS} characters; one has {len(too_long[0])}")
    if len(names) < 2 or len(set(names)) != len(names):
        shown = names if len(names) <= 10 else [*names[:10], "..."]
        raise MedfmError(f"zero-shot classification needs at least two distinct labels; got {shown}")
    return names


def read_labels(labels: str | None = None, labels_file: str | os.PathLike | None = None) -> list[str]:
    """Class names from comma-separated ``labels`` or ``labels_file`` (one per line, ``#`` lines ignored),
    checked by :func:`check_labels`."""
    if (labels is None) == (labels_file is None):
        raise MedfmError("give the labels as a comma-separated list or as a file, not both")
    if labels_file is not None:
        names = _entries(labels_file, "labels")
    else:
        names = [name.strip() for name in labels.split(",") if name.strip()]
    return check_labels(names)


def read_templates(path: str | os.PathLike) -> tuple[list[str], dict[str, list[str]]]:
    """The zero-shot prompts of a file, ``(templates, phrasings)``: a ``.json`` file (``medfm optimize-prompts -o
    NAME.json``) is an object ``{"templates": [...], "phrasings": {label: [texts]}}`` (``phrasings`` optional: see
    :func:`read_phrasings`); any other holds one template per line and no phrasings. Templates have ``{}`` for the
    label; blank and ``#`` lines are ignored."""
    if Path(path).suffix.lower() == ".json":
        saved = _json_object(path, "templates")
        templates = saved.get("templates")
        if not isinstance(templates, list) or not all(isinstance(t, str) and t.strip() for t in templates) or not templates:
            raise MedfmError(f"{display_path(path)}: 'templates' must be a non-empty list of texts")
        return [t.strip() for t in templates], _phrasings(saved.get("phrasings", {}), path)
    templates = _entries(path, "templates")
    if not templates:
        raise MedfmError(f"{display_path(path)}: no templates in the file")
    return templates, {}


def read_phrasings(path: str | os.PathLike, labels: Collection[str] | None = None) -> dict[str, list[str]]:
    """Label phrasings from a JSON file ``{label: [texts]}``: for some labels, the texts that may stand for
    them in the templates ("CT": ["computed tomography", "CT scan"]); with ``labels``, each must be one of them."""
    phrasings = _phrasings(_json_object(path, "phrasings"), path)
    if labels is not None and (unknown := sorted(set(phrasings) - set(labels))):
        shown = sorted(labels) if len(labels) <= 10 else [*sorted(labels)[:10], "..."]
        raise MedfmError(f"{display_path(path)}: phrasings for labels {unknown} that are not among the labels {shown}")
    return phrasings


def _json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MedfmError(f"{display_path(path)}: {what} file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the {what} file ({' '.join(str(exc).split())})") from None
    if not isinstance(saved, dict):
        raise MedfmError(f"{display_path(path)}: the {what} file must hold a JSON object")
    return saved


def _phrasings(value: Any, path: str | os.PathLike) -> dict[str, list[str]]:
    """``value`` checked as phrasings (an object of non-empty lists of non-blank texts), stripped."""
    def bad(label: str) -> bool:
        texts = value[label]
        return (not label.strip() or not isinstance(texts, list) or not texts
                or not all(isinstance(t, str) and t.strip() and len(t) <= MAX_LABEL_CHARS for t in texts))

    if not isinstance(value, dict):
        raise MedfmError(f"{display_path(path)}: phrasings must be a JSON object {{label: [texts]}}")
    if wrong := [label for label in value if bad(label)]:
        raise MedfmError(f"{display_path(path)}: the phrasings of {wrong[0]!r} must be a non-empty list of non-empty texts "
                         f"(at most {MAX_LABEL_CHARS} characters each)")
    return {label: list(dict.fromkeys(t.strip() for t in texts)) for label, texts in value.items()}


def classify(
    paths: Sequence[str | os.PathLike | ImageRecord],
    encoder: Encoder,
    *,
    labels: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    phrasings: Mapping[str, Sequence[str]] | None = None,
    probe: Probe | None = None,
    index: Index | None = None,
    k: int = 5,
    batch_size: int = 32,
    abstain_below: float | None = None,
    progress: bool = False,
    runner: Runner | None = None,
) -> list[dict[str, Any]]:
    """One result per image: ``{"path", "model", "probabilities": {label: p}, "prediction"}``
    (``"image_id"`` instead of ``"path"`` for a catalog record, read from exactly its own files),
    plus ``"operating_point"`` with a calibrated probe and ``"evidence"`` (the ``k`` most
    similar indexed cases, best first) with an ``index``, and ``"provenance"``: a
    :class:`~medfm.provenance.Provenance` of kind ``classification`` (the encoder and its
    weights, the file's sha256 as input; ``parameters``: the method, classes, templates or
    probe head and operating point, and the index that gave the evidence).

    Zero-shot with ``labels`` (checked by :func:`check_labels`; with prompt ``templates``,
    ensembled, and with ``phrasings``, the texts that stand for some labels in the templates:
    :func:`~medfm.tasks.zeroshot.label_embeddings`), or with a fitted ``probe``. Results and
    provenance name the phrasings used (``"phrasings"``, when any label has them). Zero-shot results
    also hold ``"similarity"``, the best label's cosine similarity, and ``"ood_score"`` (1 minus
    it): softmax probabilities
    always name a label, however unlike the image every label is. With ``abstain_below`` (a
    similarity; :func:`medfm.models.registry.abstention_threshold` gives the calibrated
    one), an image whose best similarity is below it gets the prediction ``"other"`` and
    ``"abstained": true``. An image that cannot be read or embedded raises
    :class:`~medfm.errors.FileError`.
    ``progress`` shows a bar of the images embedded on stderr. ``runner``
    (:func:`medfm.scale.encoder_runner` for ``encoder``) embeds the images on its workers; the
    rest runs here, so the results are those of a plain run.
    """
    if labels is None and probe is None:
        raise MedfmError("classification needs labels (zero-shot) or a fitted probe; neither was given")
    if labels is not None and probe is not None:
        raise MedfmError("give labels for zero-shot classification or a probe, not both")
    if abstain_below is not None and probe is not None:
        raise MedfmError("abstaining is calibrated for zero-shot classification; a probe has its own operating point")
    if probe is not None and (templates is not None or phrasings is not None):
        raise MedfmError("prompt templates are for zero-shot classification; a probe classifies the embeddings without prompts")
    if labels is not None:
        labels = check_labels(labels)
        # a prompt set chosen for more labels than these may be reused: its other labels' phrasings go unused
        phrasings = {label: list(phrasings[label]) for label in labels if label in (phrasings or {})}
    if probe is not None:
        probe.check_model(encoder.info)
    if index is not None:
        index.check_model(encoder.info)
    with progress_bar(progress) as bar:
        task = bar.add_task("Classifying", total=len(paths))
        embeddings = embed_paths(list(paths), encoder, batch_size=batch_size, runner=runner,
                                 progress=lambda done, _: bar.update(task, completed=done))
    if probe is not None:
        proba, predicted = probe.predict(embeddings)
        classes = probe.classes
    else:
        classes = list(labels)
        # the same prompt ensembling and logit scale as medfm.tasks.zeroshot.zero_shot, on
        # the aggregated embedding of each whole image (zero_shot itself takes one plane)
        scale = getattr(encoder, "logit_scale", DEFAULT_SCALE)
        texts = label_embeddings(classes, encoder, templates, phrasings)
        proba = probabilities(embeddings, texts, scale)
        predicted = [classes[i] for i in proba.argmax(axis=1)]
        similarity = (embeddings @ texts.T).max(axis=1)
    base = _provenance(encoder, classes, templates, phrasings, probe, index, k, abstain_below)
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
            if phrasings:
                result["phrasings"] = phrasings
            result["similarity"] = round(float(similarity[row]), 6)
            result["ood_score"] = round(1.0 - float(similarity[row]), 6)
            if abstain_below is not None:
                result["abstained"] = bool(similarity[row] < abstain_below)
                if result["abstained"]:
                    result["prediction"] = OTHER
        if index is not None:
            result["evidence"] = [hit.to_dict() for hit in index.search(embeddings[row], k)]
        digest = record_sha256(path) if isinstance(path, ImageRecord) else content_sha256(Path(path))
        result["provenance"] = replace(base, inputs=(f"file-sha256:{digest}",))
        results.append(result)
    return results


def classify_files(inputs: Sequence[BatchInput], encoder: Encoder, **options: Any) -> BatchReport:
    """:func:`classify` (with its keyword ``options``) over many inputs: an input that cannot be read or
    embedded is reported in the :class:`BatchReport` and the others are classified.

    The images before a bad one are embedded again after it is set aside, from the embedding
    cache where the encoder's weights allow one.
    """
    report = BatchReport(len(inputs))
    remaining = list(inputs)
    while remaining:
        try:
            report.results = classify([item.path for item in remaining], encoder, **options)
        except FileError as exc:
            # the file itself before a folder holding it: a folder's DICOM series is an input beside its pictures
            bad = next((item for item in remaining if item.path == Path(exc.path)),
                       next((item for item in remaining if _holds(item.path, Path(exc.path))), None))
            if bad is None:
                raise
            report.failures.append(failure(bad.path, exc))
            remaining.remove(bad)
            continue
        break
    return report


def _holds(source: Path, path: Path) -> bool:
    """Whether ``path`` is the input ``source`` or a file inside it (a DICOM series folder)."""
    return path == source or source in path.parents


def _provenance(encoder: Encoder, classes: Sequence[str], templates: Sequence[str] | None,
                phrasings: Mapping[str, list[str]] | None, probe: Probe | None, index: Index | None, k: int,
                abstain_below: float | None) -> Provenance:
    """What every result of one :func:`classify` call shares (all but the input)."""
    if probe is None:
        parameters: dict[str, Any] = {"method": "zero-shot", "classes": list(classes),
                                      "templates": list(templates or DEFAULT_TEMPLATES), "abstain_below": abstain_below}
        if phrasings:
            parameters["phrasings"] = dict(phrasings)
    else:
        parameters = {"method": "probe", "head": type(probe.head).__name__, "classes": list(classes),
                      "operating_point": probe.operating_point}
    if index is not None:
        parameters["evidence"] = {"index": index.location, "size": len(index), "k": k}
    return Provenance(kind="classification", model=encoder.info.name, weights_sha256=encoder.info.weights_sha256,
                      parameters=parameters)
