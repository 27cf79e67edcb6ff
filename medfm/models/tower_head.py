"""Small heads trained over frozen medfm models (domain routers over a medfm_clip image tower, text grounding heads):
the encoder a router accepts, and the loading of every such head's weights, shared so that they refuse alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from medfm.errors import MedfmError


def check_encoder(config: dict[str, Any], encoder: Any, *, heads: str, command: str) -> None:
    """Refuse, in one line, an ``encoder`` that is not a medfm_clip model or not the weights ``config`` was trained
    over; ``heads`` names the kind in the message ("grounding heads"), ``command`` the one that trains a new one."""
    if encoder.info.extra.get("family") != "medfm_clip":
        raise MedfmError(f"{config['name']}: {heads} read a medfm_clip image tower; {encoder.info.name!r} is not one")
    if encoder.info.weights_sha256 != config["encoder_sha256"]:
        raise MedfmError(f"{config['name']}: trained over {config['encoder']} weights {config['encoder_sha256'][:12]}…, but "
                         f"{(encoder.info.weights_sha256 or 'random')[:12]}… are in use; retrain it ({command})")


def load_head(head: nn.Module, weights: Path | None, description: str) -> str | None:
    """Fill ``head`` from ``weights`` (a float16 safetensors file, computed in float32; a file of another shape is
    refused in one line naming ``description``); ``None`` leaves it untrained. Returns the weights' sha256 or None."""
    from medfm.models.encoders.checkpoint import load_exactly, read_state_dict
    from medfm.models.registry import sha256_of

    if weights is None:
        return None
    load_exactly(head, {k: v.float() for k, v in read_state_dict(weights).items()}, weights, description)
    return sha256_of(weights)
