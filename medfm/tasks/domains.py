"""The domain router: which imaging modality and body region an image shows, zero-shot, with abstention.

The label sets and prompts are those the shipped image-text model was trained and measured
with (``medfm train clip``; numbers in ``medfm/models/cards/medfm-clip-small.md``), so that
the router's accuracy is the card's. Report drafting (:mod:`medfm.tasks.report`) routes the
study and its retrieved cases with it (the cases are stored vectors, which only a zero-shot router
can read). Closed questions (:mod:`medfm.tasks.ask`), which have the planes, answer "which modality /
which body part" with the trained router of :mod:`medfm.models.router` where one ships for the
encoder, and with this one otherwise.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medfm.models.encoders.base import Encoder
from medfm.tasks.zeroshot import DEFAULT_SCALE, label_embeddings, probabilities

#: Zero-shot label texts for each modality key.
MODALITIES = {"ct": "CT", "mri": "MRI", "xray": "X-ray", "ultrasound": "ultrasound", "endoscopy": "endoscopy",
              "dermoscopy": "dermoscopy", "fundus": "fundus photograph", "microscopy": "microscopy"}
#: Zero-shot label texts for each body-region key.
REGIONS = {"head": "head", "chest": "chest", "abdomen": "abdomen", "pelvis": "pelvis",
           "msk": "spine and musculoskeletal system", "colon": "colon", "skin": "skin", "eye": "eye",
           "blood": "blood"}
MODALITY_TEMPLATES = ("a {} image", "a {} scan", "a medical image acquired with {}", "{}")
REGION_TEMPLATES = ("a medical image of the {}", "an image of the {}", "a scan of the {}", "the {}")
#: DICOM Modality codes → the modality keys above they record. A study that records one is routed (and a modality
#: question answered) by that record: the scanner knows; codes not listed (OT, XA, PT, …) leave it to the pixels.
RECORDED_MODALITIES = {"CT": "ct", "MR": "mri", "CR": "xray", "DX": "xray", "MG": "xray", "US": "ultrasound",
                       "ES": "endoscopy", "OP": "fundus", "SM": "microscopy"}
#: Each routed axis: its label set and prompt templates.
AXES = {"modality": (MODALITIES, MODALITY_TEMPLATES), "region": (REGIONS, REGION_TEMPLATES)}
#: Where routing and closed questions abstain: one similarity for every axis, or one per axis (``default`` for
#: the axes not named), as :func:`medfm.models.registry.question_abstention` gives them; None: never.
AbstainBelow = float | Mapping[str, float] | None
#: Label embeddings by encoder and axis: routing a study and its retrieved cases encodes the prompts once.
_LABELS: weakref.WeakKeyDictionary[Encoder, dict[str, np.ndarray]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Routed:
    """One axis of one routing: the best ``key`` (None when abstaining), its ``label`` text,
    ``probability`` (softmax over the label set), ``similarity`` (cosine to the label's
    prompts), whether the router ``abstained`` (similarity under the threshold) and the ``source``
    of the answer: ``image``, or ``DICOM header`` (:func:`recorded_route`)."""

    key: str | None
    label: str | None
    probability: float
    similarity: float
    abstained: bool
    source: str = "image"

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "label": self.label, "probability": round(self.probability, 6),
                "similarity": round(self.similarity, 6), "abstained": self.abstained, "source": self.source}


def recorded_modality(codes: Sequence[str]) -> str | None:
    """The modality key that images record (:data:`RECORDED_MODALITIES`), when every one records the same; else None."""
    keys = {RECORDED_MODALITIES.get(code.upper()) for code in codes}
    return keys.pop() if len(keys) == 1 and None not in keys else None


def recorded_route(key: str, by_image: Routed) -> Routed:
    """The modality routing of a study that records modality ``key``, keeping the image's similarity for reference."""
    return Routed(key, MODALITIES[key], 1.0, by_image.similarity, False, "DICOM header")


def threshold_for(abstain_below: AbstainBelow, axis: str) -> float | None:
    """The similarity under which answers on ``axis`` abstain: each label set's similarities run differently
    (a body region's best prompt is less like an image than its modality's), so each is calibrated on its own."""
    if isinstance(abstain_below, Mapping):
        return abstain_below.get(axis, abstain_below["default"])
    return abstain_below


def route(embeddings: np.ndarray, encoder: Encoder, axis: str, abstain_below: AbstainBelow = None) -> list[Routed]:
    """``(N, D)`` unit image embeddings → one :class:`Routed` per row on ``axis`` (``modality``
    or ``region``); rows less like every label than :func:`threshold_for` ``axis`` abstain."""
    abstain_below = threshold_for(abstain_below, axis)
    classes, templates = AXES[axis]
    by_axis = _LABELS.setdefault(encoder, {})
    if axis not in by_axis:
        by_axis[axis] = label_embeddings(list(classes.values()), encoder, templates)
    texts = by_axis[axis]
    proba = probabilities(embeddings, texts, getattr(encoder, "logit_scale", DEFAULT_SCALE))
    similarity = embeddings @ texts.T
    keys = list(classes)
    routed = []
    for row in range(len(embeddings)):
        best = int(proba[row].argmax())
        abstained = abstain_below is not None and float(similarity[row, best]) < abstain_below
        routed.append(Routed(None if abstained else keys[best], None if abstained else classes[keys[best]],
                             float(proba[row, best]), float(similarity[row, best]), abstained))
    return routed
