"""Text grounding: where in a plane the words are, from a head trained over an image-text model's tower.

The class activation map of a CLIP-style model is as coarse as its last feature map and follows
whatever made the whole-image caption match, not the structure named: medfm-clip-small's 7×7 map
does not find polyps (``benchmarks/text_segment_bench.py``). A grounding head reads the frozen
image tower's last three stage maps (28², 14² and 7² for a 224² plane), modulates each by the
words' text embedding (FiLM: a scale and a shift per channel, as text-conditioned segmenters such
as CLIPSeg condition on the prompt), merges them top-down as a feature pyramid and gives, at 28²,
the probability that each position belongs to what the words name. It is trained on masks named
by words (``medfm train grounding``); the tower and the text tower stay as they are, so one
encoder serves search, zero-shot classification and grounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfm.errors import MedfmError
from medfm.models.preprocess import prepare_plane
from medfm.models.registry import register_family
from medfm.models.tower_head import check_encoder, load_head


class GroundingHead(nn.Module):
    """Stage maps (finest first) + ``(B, text_dim)`` text embeddings → ``(B, 1, H0, W0)`` logits at the finest map's size."""

    def __init__(self, stage_widths: list[int], text_dim: int, width: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(channels, width, 1) for channels in stage_widths)
        self.film = nn.ModuleList(nn.Linear(text_dim, 2 * width) for _ in stage_widths)
        self.merge = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.ReLU())
                                   for _ in stage_widths[:-1])
        self.out = nn.Conv2d(width, 1, 1)
        for film in self.film:  # start as the identity modulation: scale 1, shift 0
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)

    def forward(self, maps: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        conditioned = []
        for features, lateral, film in zip(maps, self.lateral, self.film, strict=True):
            scale, shift = film(text)[:, :, None, None].chunk(2, dim=1)
            conditioned.append(F.relu(lateral(features) * (1 + scale) + shift))
        merged = conditioned[-1]
        for features, merge in zip(reversed(conditioned[:-1]), reversed(self.merge), strict=True):
            merged = merge(features + F.interpolate(merged, size=features.shape[-2:], mode="bilinear", align_corners=False))
        return self.out(merged)


@dataclass(frozen=True)
class GrounderInfo:
    name: str
    encoder: str
    weights_sha256: str | None
    threshold: float


class TextGrounder:
    """A :class:`GroundingHead` over an image-text encoder's frozen tower (medfm-clip-small's family)."""

    #: Side of the square the plane is resized to (twice the encoder's training size: finer maps).
    INPUT_SIZE = 224

    def __init__(self, encoder: Any, head: GroundingHead, stages: list[int], info: GrounderInfo) -> None:
        self.encoder, self.head, self.stages, self.info = encoder, head.eval(), stages, info

    def stage_maps(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, S, S)`` pixels in [0, 1] → the frozen tower's stage maps that the head reads."""
        model = self.encoder.model
        maps = model.image_tower.stage_maps((pixels - model.pixel_mean) / model.pixel_std)
        return [maps[stage] for stage in self.stages]

    @torch.inference_mode()
    def saliency(self, plane: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
        """``(rows, columns)`` float32 probabilities that each pixel of ``plane`` shows what the
        ``(embed_dim,)`` text embedding names."""
        text = torch.as_tensor(np.asarray(text_embedding, np.float32))
        if text.shape != (self.encoder.info.embed_dim,):
            raise MedfmError(f"a text embedding for {self.info.encoder!r} is ({self.encoder.info.embed_dim},); got {tuple(text.shape)}")
        pixels = prepare_plane(plane, self.INPUT_SIZE)[None]
        logits = self.head(self.stage_maps(pixels), text[None])
        fine = F.interpolate(logits, size=plane.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        return torch.sigmoid(fine).numpy().astype(np.float32)


def build_head(config: dict[str, Any], encoder: Any) -> GroundingHead:
    """The untrained head for ``encoder`` (a medfm_clip encoder) that ``config`` describes."""
    tower = encoder.model.image_tower
    widths = [tower.blocks[tower.stage_ends[stage]].conv2.out_channels for stage in config["stages"]]
    return GroundingHead(widths, encoder.info.embed_dim, config["width"])


def ground_with(config: dict[str, Any], weights: Path | None, encoder: Any) -> TextGrounder:
    """The head of ``config`` (with ``weights``; random when ``None``) over ``encoder``, refused in one line when the
    encoder is not a medfm_clip model or not the weights the head was trained over."""
    check_encoder(config, encoder, heads="grounding heads", command="medfm train grounding")
    head = build_head(config, encoder)
    sha256 = load_head(head, weights, f"{config['name']} (medfm_grounding)")
    return TextGrounder(encoder, head, config["stages"], GrounderInfo(config["name"], config["encoder"], sha256, float(config["threshold"])))


@register_family("medfm_grounding")
def build_grounder(config: dict[str, Any], weights: Path | None) -> TextGrounder:
    """Registry builder: the config's head over its own encoder (``config["encoder"]``, a name or an encoder folder)."""
    from medfm.models.registry import create_encoder

    return ground_with(config, weights, create_encoder(config["encoder"]))
