"""Zero-shot classification with an image-text encoder: prompt ensembles against image embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medfm.errors import MedfmError
from medfm.io.image import Image
from medfm.models.encoders.base import Encoder

#: Generic prompts; ``{}`` is the label. Each label's prompts are averaged (CLIP's prompt ensembling).
DEFAULT_TEMPLATES = ("{}", "a medical image of {}", "an image showing {}", "a photo of {}")
#: Logit scale for encoders that do not expose a learned one (CLIP's final value).
DEFAULT_SCALE = 100.0


def label_embeddings(labels: Sequence[str], encoder: Encoder, templates: Sequence[str] | None = None,
                     phrasings: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
    """``(L, D)`` unit rows: the renormalised mean of each label's unit prompt embeddings, one prompt per
    template and phrasing of the label (``phrasings[label]``, the texts that stand for it in the templates;
    the label itself when it has none): CLIP's prompt ensembling over both."""
    templates = tuple(templates or DEFAULT_TEMPLATES)
    if not labels:
        raise MedfmError("zero-shot classification needs at least one label")
    if any("{}" not in t for t in templates):
        raise MedfmError(f"every template must contain '{{}}' for the label; got {list(templates)}")
    texts = [tuple((phrasings or {}).get(label, (label,))) for label in labels]
    if any(not text or not all(p.strip() for p in text) for text in texts):
        raise MedfmError("a label's phrasings are empty or blank; give each at least one text")
    prompts = [template.format(phrasing) for text in texts for phrasing in text for template in templates]
    per_label = np.split(encoder.encode_text(prompts), np.cumsum([len(text) * len(templates) for text in texts])[:-1])
    mean = np.stack([prompts_of_label.mean(axis=0) for prompts_of_label in per_label])
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def probabilities(image_embeddings: np.ndarray, label_embeddings: np.ndarray, scale: float) -> np.ndarray:
    """``(N, D)`` and ``(L, D)`` unit rows → ``(N, L)`` softmax of ``scale · cos``."""
    logits = scale * image_embeddings @ label_embeddings.T
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def zero_shot(planes_or_images: Sequence[np.ndarray | Image], labels: list[str], encoder: Encoder,
              templates: Sequence[str] | None = None) -> np.ndarray:
    """``(N, L)`` probabilities that each of N inputs shows each of L ``labels``.

    ``planes_or_images``: raw 2D planes ``(rows, columns[, C])`` or :class:`~medfm.io.Image`
    objects (their first plane, ``frame(0, 0)``, is classified). ``templates`` are prompts
    with ``{}`` for the label (default :data:`DEFAULT_TEMPLATES`). Rows sum to 1.
    """
    if not encoder.info.has_text:
        raise MedfmError(f"encoder {encoder.info.name!r} has no text tower; zero-shot needs an image-text model")
    planes = [item.frame(0, 0) if isinstance(item, Image) else item for item in planes_or_images]
    scale = getattr(encoder, "logit_scale", DEFAULT_SCALE)
    return probabilities(encoder.encode_planes(planes), label_embeddings(labels, encoder, templates), scale)
