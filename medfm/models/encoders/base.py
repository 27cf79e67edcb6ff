"""What every image(-text) encoder offers, whatever library it comes from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medfm.errors import MedfmError


@dataclass(frozen=True)
class EncoderInfo:
    """Provenance stamped on every embedding and index: which model, which weights."""

    name: str
    embed_dim: int
    weights_sha256: str | None = None
    has_text: bool = False
    extra: dict = field(default_factory=dict)


class Encoder:
    """Turns 2D planes (and, for image-text models, text) into L2-normalised embeddings.

    The encoder carries its own preprocessing (resize, channels, normalisation): callers
    pass raw planes as they come out of :meth:`medfm.io.Image.frame`, never normalised
    tensors. Volumes and videos are embedded plane by plane by :func:`medfm.models.encoders.planes.embed_image`.
    """

    info: EncoderInfo
    #: Planes per forward pass in :meth:`encode_planes`, which bounds its memory on long series.
    batch_size: int = 32

    @torch.inference_mode()
    def encode_planes(self, planes: Sequence[np.ndarray]) -> np.ndarray:
        """``planes``: 2D arrays ``(rows, columns)`` or ``(rows, columns, C)`` with C = 1, 3
        or 4 (alpha ignored), any dtype and range (:func:`medfm.models.encoders.planes.check_plane`
        is the shared check). Returns ``(N, embed_dim)`` float32, each row of unit length;
        ``(0, embed_dim)`` for no planes. Encoders that implement :meth:`pixels` and
        :meth:`embed_pixels` get this in batches of :attr:`batch_size`."""
        out = [np.zeros((0, self.info.embed_dim), np.float32)]
        for start in range(0, len(planes), self.batch_size):
            out.append(self.embed_pixels(self.pixels(planes[start:start + self.batch_size])).numpy())
        return np.concatenate(out)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, embed_dim)`` float32 unit rows; image-only encoders refuse."""
        raise MedfmError(f"encoder {self.info.name!r} has no text tower; use an image-text model")

    def pixels(self, planes: Sequence[np.ndarray]) -> torch.Tensor:
        """``planes`` (as :meth:`encode_planes` takes them) → the ``(N, 3, H, W)`` network input (for fine-tuning)."""
        raise MedfmError(f"encoder {self.info.name!r} cannot be fine-tuned")

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """:meth:`pixels`' output → ``(N, embed_dim)`` unit rows, differentiable (for fine-tuning)."""
        raise MedfmError(f"encoder {self.info.name!r} cannot be fine-tuned")

    def similarity_map(self, plane: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
        """``(h, w)`` float32: how much each region of ``plane`` adds to its similarity with
        the ``(embed_dim,)`` ``text_embedding`` (a coarse grid over the whole plane, rows
        first); encoders that cannot split their similarity over the image refuse."""
        raise MedfmError(f"encoder {self.info.name!r} gives no similarity map; text prompts need an image-text CNN such as medfm-clip-small")


def model_record(info: EncoderInfo) -> dict[str, Any]:
    """What an index or probe stores of the model that made its vectors.

    Refuses a model whose weights are not identified (randomly initialised, no sha256):
    it gives other embeddings each time it is loaded, so stored vectors could never be
    matched again and every later query would be silently wrong.
    """
    if not info.weights_sha256:
        raise MedfmError(f"model {info.name!r} has no identified weights (randomly initialised): its embeddings "
                         "change on every load, so they cannot be stored; give a checkpoint")
    return {"name": info.name, "embed_dim": int(info.embed_dim), "weights_sha256": info.weights_sha256}
