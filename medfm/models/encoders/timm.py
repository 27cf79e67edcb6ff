"""Family ``timm``: timm image backbones with weights from a local checkpoint (image only).

A config names the timm ``architecture`` (``"resnet18"``); the model is built with
``timm.create_model(architecture, pretrained=False, num_classes=0)`` — pooled features,
no classifier, no download — and filled from the checkpoint, a state dict file
(``.safetensors``/``.pth``/``.bin``) or a folder in timm's hub layout (``model.safetensors``
or ``pytorch_model.bin``, with ``config.json`` whose ``pretrained_cfg`` then sets the
preprocessing). A checkpoint's classifier weights are ignored. Without a checkpoint the
backbone is randomly initialised. Preprocessing is timm's own eval transform from
``resolve_data_config`` (resize, centre crop, mean/std), after :mod:`planes`' uint8 rule.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import create_transform, resolve_data_config

from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.models.encoders.checkpoint import load_exactly, read_state_dict, weights_file
from medfm.models.encoders.planes import pixel_batch
from medfm.models.registry import register_family, sha256_of

#: Weights files of timm's hub layout, preferred first.
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class TimmEncoder(Encoder):
    """:class:`Encoder` around a timm backbone with ``num_classes=0`` (pooled features)."""

    def __init__(self, model: torch.nn.Module, info: EncoderInfo) -> None:
        self.model = model.eval()
        self.info = info
        self.transform = create_transform(**resolve_data_config(model=model), is_training=False)

    def pixels(self, planes: Sequence[np.ndarray]) -> torch.Tensor:
        return pixel_batch(planes, self.transform)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(pixels).float(), dim=-1)


def _hub_pretrained_cfg(folder: Path) -> dict[str, Any]:
    """The ``pretrained_cfg`` (mean, std, input size…) of a timm hub folder's ``config.json``."""
    config = folder / "config.json"
    return json.loads(config.read_text()).get("pretrained_cfg", {}) if config.is_file() else {}


@register_family("timm")
def build_timm(config: dict[str, Any], weights: Path | None) -> TimmEncoder:
    """Registry builder: ``config["architecture"]`` with ``weights`` (random when ``None``)."""
    architecture = config["architecture"]
    overlay = _hub_pretrained_cfg(weights) if weights is not None and weights.is_dir() else {}
    model = timm.create_model(architecture, pretrained=False, num_classes=0, pretrained_cfg_overlay=overlay)
    weights_sha256 = None
    if weights is not None:
        path = weights_file(weights, HUB_WEIGHTS)
        state = read_state_dict(path)
        # The backbone embeds; a trained classifier (ImageNet's 1000 classes, say) has no use here.
        classifier = model.pretrained_cfg.get("classifier") or ()
        prefixes = tuple(f"{name}." for name in ([classifier] if isinstance(classifier, str) else classifier))
        state = {key: value for key, value in state.items() if not key.startswith(prefixes)}
        load_exactly(model, state, path, f"timm {architecture!r}")
        weights_sha256 = sha256_of(path)
    info = EncoderInfo(config["name"], model.num_features, weights_sha256, has_text=False,
                       extra={"family": "timm", "architecture": architecture})
    return TimmEncoder(model, info)
