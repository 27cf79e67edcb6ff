"""What every interactive (promptable) segmenter offers: encode a plane once, decode per prompt.

Follows segment-anything's ``SamPredictor``: :meth:`Segmenter.set_image` runs the
expensive image encoder, :meth:`Segmenter.predict` only decodes. The base class owns
what all segmenters share — the plane check, the embedding cache keyed by the plane's
content (so re-propagating through a volume re-encodes nothing), prompt validation and
the "no image set" error; a family implements :meth:`_encode` and :meth:`_decode`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.models.encoders.planes import check_plane
from medfm.models.segmenters.prompt import Prompt, check_prompt


@dataclass(frozen=True)
class SegmenterInfo:
    """Provenance stamped on every segmentation: which model, which weights."""

    name: str
    weights_sha256: str | None = None


@dataclass
class Prediction:
    """``mask``: (rows, columns) bool; ``logits``: (rows, columns) float32, mask = logits > 0;
    ``score``: the model's confidence in the mask (SAM's predicted IoU), higher is better."""

    mask: np.ndarray
    logits: np.ndarray
    score: float


class Segmenter(ABC):
    """A promptable 2D segmenter. Subclasses call ``super().__init__(info)``.

    ``cache_size`` embeddings (one per distinct plane) are kept, most recent first, so
    going back to a plane already seen skips the encoder.
    """

    info: SegmenterInfo

    def __init__(self, info: SegmenterInfo, cache_size: int = 64) -> None:
        self.info = info
        self.cache_size = cache_size
        self._embeddings: OrderedDict[str, Any] = OrderedDict()
        self._current: tuple[str, tuple[int, int]] | None = None

    def set_image(self, plane: np.ndarray) -> None:
        """Encode ``plane``: (rows, columns) or (rows, columns, C) with C = 1, 3 or 4, any dtype.

        The expensive step; a plane with the same content as a cached one is not re-encoded.
        """
        plane = check_plane(plane)
        digest = hashlib.sha256(f"{plane.shape}{plane.dtype.str}".encode())
        digest.update(np.ascontiguousarray(plane).data)
        key = digest.hexdigest()
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
        else:
            self._embeddings[key] = self._encode(plane)
            while len(self._embeddings) > self.cache_size:
                self._embeddings.popitem(last=False)
        self._current = (key, plane.shape[:2])

    def predict(self, prompt: Prompt) -> Prediction:
        """Decode one prompt on the plane given to :meth:`set_image` (cheap)."""
        if self._current is None:
            raise MedfmError(f"segmenter {self.info.name!r}: no image set; call set_image(plane) before predict(prompt)")
        key, shape = self._current
        check_prompt(prompt, shape)
        return self._decode(self._embeddings[key], prompt, shape)

    def reset_image(self) -> None:
        """Forget the current plane and its embedding."""
        if self._current is not None:
            self._embeddings.pop(self._current[0], None)
        self._current = None

    @abstractmethod
    def _encode(self, plane: np.ndarray) -> Any:
        """The embedding of a checked plane ((rows, columns) or (rows, columns, 3), any dtype):
        whatever :meth:`_decode` needs, computed once per plane."""

    @abstractmethod
    def _decode(self, embedding: Any, prompt: Prompt, shape: tuple[int, int]) -> Prediction:
        """The prediction for a validated ``prompt`` on a plane of ``shape`` (rows, columns)."""
