"""Domain router: which imaging modality and body region a plane shows, from linear heads over an image-text
model's frozen tower.

Zero-shot routing compares the image embedding with label prompts; medfm-clip-small's embedding of a
112² plane does not tell CT from MRI or the head from the spine well enough (MedPix-2.0: modality 0.82,
region 0.59). As MMed-RAG trains its domain identification, a router here is trained on labelled planes
(``medfm train router``): each axis (``modality``, ``region``) is a multinomial logistic regression over
the frozen tower's stage maps, each pooled by its mean and its maximum and standardised, at the input size
chosen for that axis on validation planes (224² keeps the fine texture that separates CT from MRI). The
encoder stays as it is, so one model serves search, zero-shot classification, grounding and routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfm.models.preprocess import prepare_plane
from medfm.models.registry import register_family
from medfm.models.tower_head import check_encoder, load_head


def pooled_features(encoder: Any, pixels: torch.Tensor, stages: Sequence[int]) -> torch.Tensor:
    """``(B, 3, S, S)`` pixels in [0, 1] → ``(B, F)``: the mean and the maximum of each of ``stages``' maps of
    ``encoder``'s frozen image tower (a medfm_clip encoder)."""
    model = encoder.model
    maps = model.image_tower.stage_maps((pixels - model.pixel_mean) / model.pixel_std)
    return torch.cat([torch.cat([maps[s].mean((2, 3)), maps[s].amax((2, 3))], 1) for s in stages], 1)


class AxisHead(nn.Module):
    """Standardise pooled features, then one linear layer: ``(B, F)`` → ``(B, classes)`` logits."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.linear = nn.Linear(features, classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.scale)


@dataclass(frozen=True)
class RouterInfo:
    name: str
    encoder: str
    weights_sha256: str | None


class DomainRouter:
    """One :class:`AxisHead` per axis over an encoder's frozen tower; ``classes[axis]`` names each head's outputs
    (keys of :data:`medfm.tasks.domains.AXES` where the training labels used them) and ``input_sizes[axis]``
    the square each plane is resized to for it."""

    def __init__(self, encoder: Any, heads: nn.ModuleDict, stages: list[int], classes: dict[str, list[str]],
                 input_sizes: dict[str, int], info: RouterInfo) -> None:
        self.encoder, self.heads, self.stages, self.info = encoder, heads.eval(), stages, info
        self.classes, self.input_sizes = classes, input_sizes

    @property
    def axes(self) -> list[str]:
        return list(self.classes)

    @torch.inference_mode()
    def probabilities(self, planes: Sequence[np.ndarray], axes: Sequence[str] | None = None,
                      batch_size: int = 32) -> dict[str, np.ndarray]:
        """``{axis: (N, len(classes[axis]))}`` softmax probabilities for ``N`` raw planes, for ``axes`` (default: all);
        the tower runs once per input size those axes read."""
        axes = list(self.classes) if axes is None else list(axes)
        features: dict[int, torch.Tensor] = {}
        for size in sorted({self.input_sizes[axis] for axis in axes}):
            features[size] = torch.cat([pooled_features(self.encoder, torch.stack([prepare_plane(p, size) for p in planes[i:i + batch_size]]),
                                                        self.stages) for i in range(0, len(planes), batch_size)])
        return {axis: torch.softmax(self.heads[axis](features[self.input_sizes[axis]]), 1).numpy().astype(np.float64)
                for axis in axes}


def build_heads(config: dict[str, Any], encoder: Any) -> nn.ModuleDict:
    """The untrained heads for ``encoder`` (a medfm_clip encoder) that ``config`` describes."""
    tower = encoder.model.image_tower
    features = 2 * sum(tower.blocks[tower.stage_ends[stage]].conv2.out_channels for stage in config["stages"])
    return nn.ModuleDict({axis: AxisHead(features, len(keys)) for axis, keys in config["classes"].items()})


def route_with(config: dict[str, Any], weights: Path | None, encoder: Any) -> DomainRouter:
    """The router of ``config`` (with ``weights``; untrained when ``None``) over ``encoder``, refused in one line when
    the encoder is not a medfm_clip model or not the weights the router was trained over."""
    check_encoder(config, encoder, heads="domain routers", command="medfm train router")
    heads = build_heads(config, encoder)
    sha256 = load_head(heads, weights, f"{config['name']} (medfm_router)")
    return DomainRouter(encoder, heads, config["stages"], config["classes"], config["input_sizes"],
                        RouterInfo(config["name"], config["encoder"], sha256))


@register_family("medfm_router")
def build_router(config: dict[str, Any], weights: Path | None) -> DomainRouter:
    """Registry builder: the config's router over its own encoder (``config["encoder"]``, a name or an encoder folder)."""
    from medfm.models.registry import create_encoder

    return route_with(config, weights, create_encoder(config["encoder"]))
