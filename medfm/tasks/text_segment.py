"""Segmentation from words (MedCLIP-SAMv2 style): image–text saliency → box → promptable segmenter.

1. **Saliency.** The text (ensembled over the zero-shot templates) is embedded by the
   image-text encoder, whose :meth:`~medfm.models.encoders.base.Encoder.similarity_map`
   splits the image's similarity to it over a coarse grid (for medfm-clip-small: its class
   activation map, 7×7); the map is resized to the plane (bilinear) and scaled to [0, 1].
2. **Box.** The connected region around the map's maximum where it is at least
   :data:`BOX_THRESHOLD`; its bounding box is the prompt.
3. **Segment.** The box prompts the segmenter (medfm-interactive by default).

The threshold was chosen on Kvasir-SEG images held out from the segmenter's training and
then measured on others (``benchmarks/text_segment_bench.py``). The shipped encoder was
trained on whole-image captions, so its maps are coarse: check the box (``saliency`` can be
saved) before trusting the mask.
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

from medfm.errors import MedfmError
from medfm.io import Image, load, save
from medfm.io.label_maps import save_segmentation
from medfm.models.encoders.base import Encoder
from medfm.models.segmenters.base import Segmenter
from medfm.models.segmenters.prompt import Prompt, mask_box
from medfm.provenance import Provenance
from medfm.tasks.segment import segment
from medfm.tasks.zeroshot import DEFAULT_TEMPLATES, label_embeddings

#: Fraction of the saliency range above which the region around the maximum makes the box.
BOX_THRESHOLD = 0.5
#: Longest text prompt accepted.
MAX_TEXT_CHARS = 200


def text_saliency(plane: np.ndarray, text: str, encoder: Encoder) -> np.ndarray:
    """``(rows, columns)`` float32 in [0, 1]: where ``plane`` looks like ``text`` (see the module)."""
    words = " ".join(text.split())
    if not words:
        raise MedfmError("the text prompt is empty")
    if len(words) > MAX_TEXT_CHARS:
        raise MedfmError(f"the text prompt is {len(words)} characters long; at most {MAX_TEXT_CHARS} are accepted")
    if not encoder.info.has_text:
        raise MedfmError(f"encoder {encoder.info.name!r} has no text tower; text prompts need an image-text model")
    coarse = encoder.similarity_map(plane, label_embeddings([words], encoder, DEFAULT_TEMPLATES)[0])
    rows, columns = plane.shape[:2]
    fine = F.interpolate(torch.from_numpy(coarse)[None, None], size=(rows, columns), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    low, high = float(fine.min()), float(fine.max())
    return ((fine - low) / (high - low) if high > low else np.zeros_like(fine)).astype(np.float32)


def saliency_box(saliency: np.ndarray, threshold: float = BOX_THRESHOLD) -> tuple[float, float, float, float]:
    """The box x0, y0, x1, y1 around the connected region of ``saliency`` ≥ ``threshold`` that holds its maximum."""
    if not 0 <= threshold < 1:
        raise MedfmError(f"the saliency threshold must be in [0, 1); got {threshold}")
    regions, _ = ndimage.label(saliency >= threshold)
    peak = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    return mask_box(regions == regions[peak])


def text_box(plane: np.ndarray, text: str, encoder: Encoder, threshold: float = BOX_THRESHOLD
             ) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """Steps 1 and 2 on one ``(rows, columns[, 3])`` plane: ``(box x0, y0, x1, y1 in plane pixels, saliency)``;
    the workbench prompts a session with the box as :func:`segment_text` prompts the segmenter."""
    saliency = text_saliency(plane, text, encoder)
    return saliency_box(saliency, threshold), saliency


def segment_text(image: Image, text: str, encoder: Encoder, segmenter: Segmenter, *,
                 threshold: float = BOX_THRESHOLD) -> tuple[Image, np.ndarray]:
    """``image`` (one 2D plane) segmented from ``text``: ``(label map, saliency)``; the label
    map's provenance adds ``parameters["text_prompt"]`` (the text, encoder, weights, threshold)."""
    if image.shape[2] * image.shape[3] != 1:
        raise MedfmError(f"text prompts segment one 2D plane; this image has {image.shape[2]} slices and "
                         f"{image.shape[3]} frames (export the plane first)")
    box, saliency = text_box(image.frame(), text, encoder, threshold)
    labels = segment(image, [Prompt(boxes=[box], label=1, label_name=" ".join(text.split()))], segmenter)
    record: Provenance = labels.provenance
    labels.provenance = replace(record, parameters={**record.parameters, "text_prompt": text_prompt_record(text, encoder, threshold)})
    return labels, saliency


def text_prompt_record(text: str, encoder: Encoder, threshold: float = BOX_THRESHOLD) -> dict[str, Any]:
    """What provenance records of a box derived from ``text``: the words, the encoder and its weights, the method."""
    return {"text": " ".join(text.split()), "encoder": encoder.info.name, "encoder_weights_sha256": encoder.info.weights_sha256,
            "method": "class activation map → box", "threshold": threshold}


def segment_text_file(source: str | os.PathLike, output: str | os.PathLike, text: str, encoder: Encoder,
                      segmenter: Segmenter, *, saliency_output: str | os.PathLike | None = None,
                      threshold: float = BOX_THRESHOLD) -> dict[str, Any]:
    """:func:`segment_text` of the file ``source`` into the label map ``output`` (and the saliency,
    8-bit grey, into ``saliency_output``): ``{"output", "box", "pixels", "provenance"}``."""
    labels, saliency = segment_text(load(source), text, encoder, segmenter, threshold=threshold)
    if saliency_output is not None:
        save(Image(np.rint(saliency.T * 255).astype(np.uint8)), Path(saliency_output))
    written = save_segmentation(labels, output)
    box = labels.provenance.prompts[0]["boxes"][0]
    return {"output": str(written), "box": [round(float(v), 1) for v in box], "pixels": int((labels.array > 0).sum()),
            "provenance": labels.provenance}
