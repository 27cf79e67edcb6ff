"""Text grounding: where in a plane the words are, from a head over a promptable segmenter's image features.

The class activation map of a CLIP-style model is as coarse as its last feature map and follows
whatever made the whole-image caption match, not the structure named: medfm-clip-small's 7×7 map
does not find polyps (``benchmarks/text_segment_bench.py``), and a head over its tower, trained on
whole-image captions at 112², still confuses a polyp with the mucosa around it. The features of
medfm-interactive's image encoder were trained to delineate structures, so the grounding head reads
those: the segmenter's encoder runs on the plane at its working size (128²), the head modulates its
stage maps at strides 4, 8 and 16 by the words' text embedding from the image-text encoder (FiLM: a
scale and a shift per channel, as text-conditioned segmenters such as CLIPSeg condition on the
prompt), merges them top-down as a feature pyramid and gives, at a quarter of the working size, the
probability that each position belongs to what the words name. It is trained on masks named by
words (``medfm train grounding``); the segmenter and both towers of the encoder stay as they are.
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
from medfm.models.segmenters.medfm_interactive import MedfmInteractiveSegmenter
from medfm.models.tower_head import load_head


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
    segmenter: str
    weights_sha256: str | None
    threshold: float


class TextGrounder:
    """A :class:`GroundingHead` over a medfm_interactive segmenter's frozen image encoder, conditioned by an
    image-text encoder's text embeddings."""

    def __init__(self, encoder: Any, segmenter: MedfmInteractiveSegmenter, head: GroundingHead, stages: list[int],
                 info: GrounderInfo) -> None:
        self.encoder, self.segmenter, self.head, self.stages, self.info = encoder, segmenter, head.eval(), stages, info

    @property
    def size(self) -> int:
        """Side of the square the plane is resized to: the segmenter's working size."""
        return self.segmenter.size

    def stage_maps(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, S, S)`` pixels in [0, 1] → the segmenter's encoder maps that the head reads."""
        maps = self.segmenter.net.encode(pixels)
        return [maps[stage] for stage in self.stages]

    @torch.inference_mode()
    def saliency(self, plane: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
        """``(rows, columns)`` float32 probabilities that each pixel of ``plane`` shows what the
        ``(embed_dim,)`` text embedding names."""
        text = torch.as_tensor(np.asarray(text_embedding, np.float32))
        if text.shape != (self.encoder.info.embed_dim,):
            raise MedfmError(f"a text embedding for {self.info.encoder!r} is ({self.encoder.info.embed_dim},); got {tuple(text.shape)}")
        pixels = prepare_plane(plane, self.size)[None]
        logits = self.head(self.stage_maps(pixels), text[None])
        fine = F.interpolate(logits, size=plane.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        return torch.sigmoid(fine).numpy().astype(np.float32)


def check_models(config: dict[str, Any], encoder: Any, segmenter: Any) -> None:
    """Refuse, in one line, an encoder without a text tower, a segmenter that is not medfm_interactive, or either of them
    with other weights than the head was trained over."""
    name, retrain = config["name"], "retrain it (medfm train grounding)"
    if not encoder.info.has_text:
        raise MedfmError(f"{name}: grounding heads read the words through an image-text encoder; {encoder.info.name!r} has no text tower")
    if not isinstance(segmenter, MedfmInteractiveSegmenter):
        raise MedfmError(f"{name}: grounding heads read a medfm_interactive segmenter's image encoder; {segmenter.info.name!r} is not one")
    for kind, model in (("encoder", encoder), ("segmenter", segmenter)):
        if model.info.weights_sha256 != config[f"{kind}_sha256"]:
            raise MedfmError(f"{name}: trained over {config[kind]} weights {config[f'{kind}_sha256'][:12]}…, but "
                             f"{(model.info.weights_sha256 or 'random')[:12]}… are in use; {retrain}")


def build_head(config: dict[str, Any], encoder: Any, segmenter: MedfmInteractiveSegmenter) -> GroundingHead:
    """The untrained head that ``config`` describes, over ``segmenter``'s encoder stages and ``encoder``'s text embeddings."""
    widths = [segmenter.net.encoder[stage][0][0].out_channels for stage in config["stages"]]
    return GroundingHead(widths, encoder.info.embed_dim, config["width"])


def ground_with(config: dict[str, Any], weights: Path | None, encoder: Any, segmenter: Any = None) -> TextGrounder:
    """The head of ``config`` (with ``weights``; random when ``None``) over ``encoder``'s text embeddings and the image
    features of ``segmenter`` (default: the one ``config`` names), refused in one line when either is not what the
    head was trained over (:func:`check_models`)."""
    from medfm.models.registry import create_segmenter

    segmenter = create_segmenter(config["segmenter"]) if segmenter is None else segmenter
    check_models(config, encoder, segmenter)
    head = build_head(config, encoder, segmenter)
    sha256 = load_head(head, weights, f"{config['name']} (medfm_grounding)")
    info = GrounderInfo(config["name"], config["encoder"], config["segmenter"], sha256, float(config["threshold"]))
    return TextGrounder(encoder, segmenter, head, config["stages"], info)


@register_family("medfm_grounding")
def build_grounder(config: dict[str, Any], weights: Path | None) -> TextGrounder:
    """Registry builder: the config's head over its own encoder and segmenter (names or model folders)."""
    from medfm.models.registry import create_encoder

    return ground_with(config, weights, create_encoder(config["encoder"]))
