"""Closed questions about one or more images, answered offline by a trained domain router or zero-shot classification.

:func:`parse_question` turns a question into a label set: the imaging modality ("what
modality is this?", "is this a CT?"), the body region ("which body part?", "is this the
chest?"), a finding's presence ("is there a pleural effusion?": the finding against "no
finding") or explicit choices (``choices``, or "... X, Y or Z?" in the question).
:func:`ask` embeds every image, averages the unit embeddings (several frames or slices of
one question, MedFrameQA style) and classifies the mean; a best label less similar than
``abstain_below`` answers "cannot tell". With a ``router`` (:mod:`medfm.models.router`, trained on labelled
planes; ``registry.router_for`` gives the one shipped for an encoder), modality and region questions
are answered by its probabilities, averaged over each image's planes and then over the images;
abstention still reads the zero-shot similarity (is the image like any label at all). A modality question about
images that record their modality (DICOM's Modality: CT, MR, US, …; :data:`~medfm.tasks.domains.RECORDED_MODALITIES`) is answered from
that record, with the images' own reading beside it. Open questions need a language model (:mod:`medfm.tasks.vlm`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfm.catalog.store import ImageRecord
from medfm.errors import MedfmError
from medfm.index import Index
from medfm.models.encoders.base import Encoder
from medfm.models.encoders.planes import aggregate
from medfm.provenance import Provenance, text_id
from medfm.tasks.classify import check_labels
from medfm.tasks.domains import AXES, AbstainBelow, recorded_modality, threshold_for
from medfm.tasks.embed import content_sha256, planes_and_modality, record_sha256
from medfm.tasks.zeroshot import (
    DEFAULT_SCALE,
    DEFAULT_TEMPLATES,
    label_embeddings,
    probabilities,
)

if TYPE_CHECKING:
    from medfm.models.router import DomainRouter

#: The answer when the images are like none of the labels.
CANNOT_TELL = "cannot tell"
#: Longest question accepted (the text tower reads a few hundred tokens at most).
MAX_QUESTION_CHARS = 500
_MODALITY_WORDS = ("modality", "kind of scan", "type of scan", "kind of image", "type of image", "imaging technique",
                   "which scan", "what scan", "acquired")
_REGION_WORDS = ("region", "body part", "organ", "anatomy", "which part", "what part", "where")
_PRESENCE = re.compile(r"^(?:is|are) there (?:an? |any )?(?P<finding>.+?)\??$|^does (?:it|this|the image) show (?:an? |any )?(?P<shown>.+?)\??$")
_OPTIONS = re.compile(r"(?:is (?:it|this)|are these|:)\s+(?P<options>[^:?]+\bor\b[^:?]+)\??$")
#: Words of a yes/no question that name a modality or region label, by key.
_SYNONYMS = {"ct": ("ct", "computed tomography"), "mri": ("mri", "mr", "magnetic resonance"), "xray": ("x-ray", "radiograph"),
             "ultrasound": ("ultrasound", "sonography"), "endoscopy": ("endoscopy", "colonoscopy"),
             "dermoscopy": ("dermoscopy",), "fundus": ("fundus",), "microscopy": ("microscopy", "smear"),
             "head": ("head", "brain"), "chest": ("chest", "thorax", "lung"), "abdomen": ("abdomen",), "pelvis": ("pelvis",),
             "msk": ("spine", "musculoskeletal"), "colon": ("colon",), "skin": ("skin",), "eye": ("eye", "retina"),
             "blood": ("blood",)}


@dataclass(frozen=True)
class Question:
    """A parsed closed question: ``labels`` with their ``templates``; ``kind`` (``modality``,
    ``region``, ``presence``, ``choice``); ``expected``: the label a yes/no question asks
    about (the answer is then "yes" or "no"), else None."""

    kind: str
    labels: tuple[str, ...]
    templates: tuple[str, ...]
    expected: str | None = None


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9-]+", text.lower())


def parse_question(question: str, choices: Sequence[str] | None = None) -> Question:
    """The label set a closed question asks to choose from (see the module docstring)."""
    text = " ".join(question.split())
    if not text:
        raise MedfmError("the question is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise MedfmError(f"the question is {len(text)} characters long; at most {MAX_QUESTION_CHARS} are accepted")
    lowered = text.lower()
    if choices:
        return Question("choice", tuple(check_labels([c.strip() for c in choices])), DEFAULT_TEMPLATES)
    if options := _OPTIONS.search(lowered):
        names = [n.strip(" .").removeprefix("a ").removeprefix("an ").strip() for n in re.split(r",|\bor\b", options["options"])]
        return Question("choice", tuple(check_labels([n for n in names if n])), DEFAULT_TEMPLATES)
    for axis, cue_words in (("modality", _MODALITY_WORDS), ("region", _REGION_WORDS)):
        classes, templates = AXES[axis]
        if any(cue in lowered for cue in cue_words):
            return Question(axis, tuple(classes.values()), templates)
    if lowered.startswith(("is this", "is it", "was this", "is the image")):
        words = " ".join(_words(lowered))
        for axis in ("modality", "region"):
            classes, templates = AXES[axis]
            for key, label in classes.items():
                if any(re.search(rf"\b{re.escape(s)}\b", words) for s in _SYNONYMS[key]):
                    return Question(axis, tuple(classes.values()), templates, expected=label)
    if presence := _PRESENCE.match(lowered):
        finding = (presence["finding"] or presence["shown"]).strip(" .")
        return Question("presence", (finding, f"no {finding}"), DEFAULT_TEMPLATES, expected=finding)
    raise MedfmError("cannot parse the question: ask about the modality, the body region or a finding's presence "
                     "(\"is there a ...?\"), or give the possible answers (--choices)")


def ask(images: Sequence[str | os.PathLike | ImageRecord], question: str, encoder: Encoder, *,
        choices: Sequence[str] | None = None, index: Index | None = None, k: int = 5,
        abstain_below: AbstainBelow = None, exclude: Collection[int] = (), router: DomainRouter | None = None,
        templates: Sequence[str] | None = None, phrasings: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Answer a closed ``question`` about ``images`` (files, DICOM folders or catalog records; several
    are one question's frames or slices): ``{"answer", "confidence", "probabilities", "similarity",
    "abstained", "question_kind", "method", "per_image": [{"prediction", "confidence"}], "evidence"
    (with an ``index``: the ``k`` nearest cases other than the index items ``exclude``, without
    paths), "provenance"}``.
    A modality answered from the images' DICOM header has ``method`` "recorded modality (DICOM header)", confidence 1
    and the pixels' reading as ``image_prediction`` and ``image_confidence``.
    ``confidence`` is the probability of the chosen label (also for "yes"/"no"); ``similarity`` the
    images' cosine to the label prompts they are most like, which the question's threshold
    (:func:`~medfm.tasks.domains.threshold_for` its kind in ``abstain_below``) reads.
    ``templates`` and ``phrasings`` (a prompt set :func:`~medfm.tasks.classify.read_templates` reads) replace the
    question's own templates, and phrase its labels, wherever the labels are read zero-shot.
    """
    if not images:
        raise MedfmError("a question needs at least one image")
    parsed = parse_question(question, choices)
    if not encoder.info.has_text:
        raise MedfmError(f"encoder {encoder.info.name!r} has no text tower; questions need an image-text model")
    # each image is read once: its planes give both the embedding (as embed_paths aggregates them) and the router's answer
    read = [planes_and_modality(image) for image in images]
    planes = [image for image, _ in read]
    embeddings = np.stack([aggregate(encoder.encode_planes(image)) for image in planes])
    mean = embeddings.mean(axis=0)
    mean = (mean / np.linalg.norm(mean)).astype(np.float32)
    templates = tuple(templates or parsed.templates)
    # a prompt set chosen for more labels than the question's may be reused: its other labels' phrasings go unused
    phrasings = {label: list(phrasings[label]) for label in parsed.labels if label in (phrasings or {})}
    texts = label_embeddings(list(parsed.labels), encoder, templates, phrasings)
    similarity = float((mean @ texts.T).max())
    if router is not None and parsed.kind in router.axes:
        labels, per_image = _routed(planes, router, parsed.kind)
        method = {"method": "domain router", "router": router.info.name, "router_sha256": router.info.weights_sha256}
    else:
        labels = parsed.labels
        per_image = probabilities(np.vstack([mean[None], embeddings]), texts, getattr(encoder, "logit_scale", DEFAULT_SCALE))
        method = {"method": "zero-shot closed question", "labels": list(parsed.labels), "templates": list(templates),
                  **({"phrasings": phrasings} if phrasings else {})}
    proba = per_image[0]
    best = int(proba.argmax())
    threshold = threshold_for(abstain_below, parsed.kind)
    abstained = threshold is not None and similarity < threshold
    prediction = labels[best]
    recorded_key = recorded_modality([modality for _, modality in read]) if parsed.kind == "modality" else None
    recorded = AXES["modality"][0][recorded_key] if recorded_key else None
    image_reading = {"image_prediction": prediction, "image_confidence": round(float(proba[best]), 6)}
    if recorded not in labels:  # a router of the user's without this modality: the images answer
        recorded = None
    if recorded is not None:
        # the scanner's own record beats a reading of the pixels; the reading stays in the answer beside it
        best = labels.index(recorded)
        prediction, abstained, proba = recorded, False, np.eye(len(labels))[best]
        method = {**method, "method": "recorded modality (DICOM header)", "image_method": method["method"]}
    if abstained:
        answer = CANNOT_TELL
    elif parsed.expected is not None:
        answer = "yes" if prediction == parsed.expected else "no"
    else:
        answer = prediction
    result: dict[str, Any] = {
        "answer": answer, "prediction": prediction, "confidence": round(float(proba[best]), 6),
        "probabilities": {label: round(float(p), 6) for label, p in zip(labels, proba, strict=True)},
        "similarity": round(similarity, 6), "abstained": abstained, "question_kind": parsed.kind, "method": method["method"],
        "per_image": [{"prediction": labels[int(row.argmax())], "confidence": round(float(row.max()), 6)} for row in per_image[1:]],
        **(image_reading if recorded is not None else {}),
    }
    if index is not None:
        index.check_model(encoder.info)
        result["evidence"] = [{key: value for key, value in hit.to_dict().items() if key != "path"}
                              for hit in index.search(mean, k + len(exclude)) if hit.id not in exclude][:k]
    result["provenance"] = Provenance(
        kind="report", model=encoder.info.name, weights_sha256=encoder.info.weights_sha256,
        inputs=tuple(f"file-sha256:{record_sha256(p) if isinstance(p, ImageRecord) else content_sha256(Path(p))}"
                     for p in images),
        prompts=({"question": text_id(question)},),
        parameters={**method, "abstain_below": threshold,
                    **({"evidence": {"index": index.location, "k": k}} if index is not None else {})},
    )
    return result


def routing_model(encoder: Encoder, router: str | os.PathLike | None = None) -> DomainRouter | None:
    """The router that answers ``encoder``'s modality and region questions: ``router`` (a name or a folder ``medfm
    train router`` wrote), refused in one line when trained over other weights; else the one shipped for them, or None."""
    from medfm.models.registry import create_router, router_for

    if router is None:
        return router_for(encoder)
    chosen = create_router(router)
    if chosen.encoder.info.weights_sha256 != encoder.info.weights_sha256:
        raise MedfmError(f"{chosen.info.name}: trained over {chosen.info.encoder}, not over the weights of {encoder.info.name!r} "
                         "that answer this question")
    return chosen


def _routed(planes: Sequence[list[np.ndarray]], router: DomainRouter, axis: str) -> tuple[tuple[str, ...], np.ndarray]:
    """``(label texts, (1 + images, labels) probabilities)``: the router's ``axis`` for the images together (first
    row), then for each image (its ``planes``); an image's probabilities are the mean over its planes."""
    words = AXES[axis][0]
    each = np.array([router.probabilities(image, [axis])[axis].mean(axis=0) for image in planes])
    return tuple(words.get(key, key) for key in router.classes[axis]), np.vstack([each.mean(axis=0)[None], each])
