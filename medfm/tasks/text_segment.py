"""Segmentation from words (MedCLIP-SAMv2 style): image–text saliency → box → promptable segmenter.

1. **Saliency.** The text (ensembled over the zero-shot templates) is embedded by the
   image-text encoder. With a grounding head for the encoder's weights (:mod:`medfm.models.grounding`;
   medfm ships one for medfm-clip-small, :func:`medfm.models.registry.grounder_for` finds it), the
   saliency is the head's probability that each pixel shows what the words name. Without one,
   it is the encoder's :meth:`~medfm.models.encoders.base.Encoder.similarity_map` (for
   medfm-clip-small: its 7×7 class activation map) resized to the plane and scaled to [0, 1].
2. **Box.** The connected region around the map's maximum where it is at least
   :data:`BOX_THRESHOLD`; its bounding box is the prompt. A grounding map that never reaches
   the threshold means the words were not found: refused in one line, no mask written.
3. **Segment.** The box prompts the segmenter (medfm-interactive by default).

Measured on images held out from every model involved (``benchmarks/text_segment_bench.py``);
the words the shipped head was trained on are in its card. Check the box (``saliency`` can
be saved) before trusting the mask.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medfm.errors import MedfmError, display_path
from medfm.io import Image, load, save
from medfm.io.label_maps import save_segmentation
from medfm.models.encoders.base import Encoder
from medfm.models.grounding import TextGrounder
from medfm.models.segmenters.base import Segmenter
from medfm.models.segmenters.prompt import Prompt, mask_box
from medfm.provenance import Provenance
from medfm.tasks.segment import segment
from medfm.tasks.zeroshot import DEFAULT_TEMPLATES, label_embeddings

#: Fraction of the class activation map's range above which the region around the maximum makes the box
#: (a grounding head brings its own probability threshold, chosen on its validation images).
BOX_THRESHOLD = 0.5
#: Longest text prompt accepted.
MAX_TEXT_CHARS = 200


class WordsNotFound(MedfmError):
    """No position of a saliency map reaches the threshold: what the words name is not in the plane."""


def grounding_models(grounder: str | os.PathLike | None = None) -> tuple[Encoder, TextGrounder | None]:
    """The encoder and grounding head that text prompts use: the head ``grounder`` (a name or a folder ``medfm train
    grounding`` wrote) over its own encoder, else the default encoder with the head shipped for its weights (or none)."""
    from medfm.models.registry import (
        DEFAULT_ENCODER,
        create_encoder,
        create_grounder,
        grounder_for,
    )

    if grounder is not None:
        head = create_grounder(grounder)
        return head.encoder, head
    encoder = create_encoder(DEFAULT_ENCODER)
    return encoder, grounder_for(encoder)


def text_saliency(plane: np.ndarray, text: str, encoder: Encoder, grounder: TextGrounder | None = None) -> np.ndarray:
    """``(rows, columns)`` float32 in [0, 1]: where ``plane`` looks like ``text`` (see the module)."""
    words = " ".join(text.split())
    if not words:
        raise MedfmError("the text prompt is empty")
    if len(words) > MAX_TEXT_CHARS:
        raise MedfmError(f"the text prompt is {len(words)} characters long; at most {MAX_TEXT_CHARS} are accepted")
    if not encoder.info.has_text:
        raise MedfmError(f"encoder {encoder.info.name!r} has no text tower; text prompts need an image-text model")
    if grounder is not None and grounder.encoder.info.weights_sha256 != encoder.info.weights_sha256:
        raise MedfmError(f"grounding head {grounder.info.name!r} reads {grounder.info.encoder!r}, not {encoder.info.name!r}")
    embedding = label_embeddings([words], encoder, DEFAULT_TEMPLATES)[0]
    if grounder is not None:
        return grounder.saliency(plane, embedding)
    coarse = encoder.similarity_map(plane, embedding)
    rows, columns = plane.shape[:2]
    fine = F.interpolate(torch.from_numpy(coarse)[None, None], size=(rows, columns), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    low, high = float(fine.min()), float(fine.max())
    return ((fine - low) / (high - low) if high > low else np.zeros_like(fine)).astype(np.float32)


def saliency_box(saliency: np.ndarray, threshold: float = BOX_THRESHOLD) -> tuple[float, float, float, float]:
    """The box x0, y0, x1, y1 around the connected region of ``saliency`` ≥ ``threshold`` that holds its maximum;
    refused when no position reaches ``threshold``."""
    if not 0 <= threshold < 1:
        raise MedfmError(f"the saliency threshold must be in [0, 1); got {threshold}")
    peak = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    if saliency[peak] < threshold:
        raise WordsNotFound(f"not found: the saliency peaks at {float(saliency[peak]):.2f}, under the threshold {threshold}")
    regions, _ = ndimage.label(saliency >= threshold)
    return mask_box(regions == regions[peak])


def box_threshold(grounder: TextGrounder | None, threshold: float | None = None) -> float:
    """``threshold`` if given, else the grounding head's own, else :data:`BOX_THRESHOLD`."""
    if threshold is not None:
        return threshold
    return grounder.info.threshold if grounder is not None else BOX_THRESHOLD


def text_box(plane: np.ndarray, text: str, encoder: Encoder, grounder: TextGrounder | None = None,
             threshold: float | None = None) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """Steps 1 and 2 on one ``(rows, columns[, 3])`` plane: ``(box x0, y0, x1, y1 in plane pixels, saliency)``;
    the workbench prompts a session with the box as :func:`segment_text` prompts the segmenter."""
    saliency = text_saliency(plane, text, encoder, grounder)
    try:
        return saliency_box(saliency, box_threshold(grounder, threshold)), saliency
    except WordsNotFound as exc:
        raise WordsNotFound(f"{' '.join(text.split())!r} {exc}") from None


def segment_text(image: Image, text: str, encoder: Encoder, segmenter: Segmenter, *, grounder: TextGrounder | None = None,
                 threshold: float | None = None) -> tuple[Image, np.ndarray]:
    """``image`` (one 2D plane) segmented from ``text``: ``(label map, saliency)``; the label
    map's provenance adds ``parameters["text_prompt"]`` (the text, encoder, grounding head, weights, threshold)."""
    if image.shape[2] * image.shape[3] != 1:
        raise MedfmError(f"text prompts segment one 2D plane; this image has {image.shape[2]} slices and "
                         f"{image.shape[3]} frames (export the plane first)")
    box, saliency = text_box(image.frame(), text, encoder, grounder, threshold)
    labels = segment(image, [Prompt(boxes=[box], label=1, label_name=" ".join(text.split()))], segmenter)
    record: Provenance = labels.provenance
    labels.provenance = replace(record, parameters={**record.parameters,
                                                    "text_prompt": text_prompt_record(text, encoder, grounder, threshold)})
    return labels, saliency


def text_prompt_record(text: str, encoder: Encoder, grounder: TextGrounder | None = None,
                       threshold: float | None = None) -> dict[str, Any]:
    """What provenance records of a box derived from ``text``: the words, the encoder, the grounding head and their
    weights, the method and the threshold."""
    record = {"text": " ".join(text.split()), "encoder": encoder.info.name, "encoder_weights_sha256": encoder.info.weights_sha256,
              "threshold": box_threshold(grounder, threshold)}
    if grounder is None:
        return {**record, "method": "class activation map → box"}
    return {**record, "grounder": grounder.info.name, "grounder_weights_sha256": grounder.info.weights_sha256,
            "method": "grounding head → box"}


def segment_text_file(source: str | os.PathLike, output: str | os.PathLike, text: str, encoder: Encoder,
                      segmenter: Segmenter, *, grounder: TextGrounder | None = None,
                      saliency_output: str | os.PathLike | None = None, threshold: float | None = None) -> dict[str, Any]:
    """:func:`segment_text` of the file ``source`` into the label map ``output`` (and the saliency,
    8-bit grey, into ``saliency_output``): ``{"output", "box", "pixels", "provenance"}``."""
    image = load(source)
    try:
        labels, saliency = segment_text(image, text, encoder, segmenter, grounder=grounder, threshold=threshold)
    except MedfmError as exc:
        raise MedfmError(f"{display_path(source)}: {exc}") from None
    if saliency_output is not None:
        save(Image(np.rint(saliency.T * 255).astype(np.uint8)), Path(saliency_output))
    written = save_segmentation(labels, output)
    box = labels.provenance.prompts[0]["boxes"][0]
    return {"output": str(written), "box": [round(float(v), 1) for v in box], "pixels": int((labels.array > 0).sum()),
            "provenance": labels.provenance}
