"""The adapter file: only the trained tensors (safetensors) and what they adapt (metadata).

Metadata: ``format``, ``base_model`` (registry name), ``base_sha256`` (the base weights
file), ``method``, ``rank``, and JSON values the trainer adds (``training``: its summary;
for encoders trained with a classification head, ``labels``, the head's tensors being kept
under ``classification_head.``). :func:`apply_adapter` refuses,
in one line, a file made for other base weights: its tensors mean nothing elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfm.errors import MedfmError, display_path
from medfm.models.adapters import add_adapter

FORMAT = "medfm-adapter/1"
#: Key prefix of a classification head trained with an encoder adapter (not part of the encoder).
HEAD_PREFIX = "classification_head."


def network_of(model: Any) -> nn.Module:
    """The torch module a segmenter or encoder runs (``net`` for medfm-interactive, ``model`` for the others)."""
    network = getattr(model, "net", None) or getattr(model, "model", None)
    if not isinstance(network, nn.Module):
        raise MedfmError(f"model {model.info.name!r} cannot be adapted (no torch network)")
    return network


def save_adapter(path: str | os.PathLike, state: dict[str, torch.Tensor], base_name: str, base_sha256: str,
                 method: str, rank: int, extra: dict[str, Any] | None = None) -> Path:
    """Write ``state`` with its metadata (``extra`` values as JSON) to ``path`` atomically; returns the path."""
    from medfm.models.registry import save_weights

    metadata = {"format": FORMAT, "base_model": base_name, "base_sha256": base_sha256, "method": method, "rank": str(rank)}
    metadata.update({key: json.dumps(value) for key, value in (extra or {}).items()})
    save_weights(state, path, metadata=metadata)
    return Path(path)


def read_adapter(path: str | os.PathLike, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of an adapter file (no tensors read unless ``tensors``); MedfmError naming the file if it is not one."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MedfmError(f"{display_path(path)}: adapter file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()} if tensors else {}  # noqa: SIM118 (a safetensors handle, not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise MedfmError(f"{display_path(path)}: not a safetensors adapter file ({str(exc).splitlines()[0]})") from None
    if metadata.get("format") != FORMAT:
        raise MedfmError(f"{display_path(path)}: not a medfm adapter file (no {FORMAT!r} metadata)")
    return state, metadata


def apply_adapter(model: Any, path: str | os.PathLike) -> Any:
    """Load the adapter at ``path`` into ``model`` (a built segmenter or encoder), in place; returns it.

    Refused when the file was made for another base model or other base weights. Afterwards
    ``model.info.weights_sha256`` is the adapter file's sha256, so every output and index
    names the adapted weights, not the base's.
    """
    from medfm.models.registry import sha256_of

    tensors, metadata = read_adapter(path)
    base, sha256 = metadata["base_model"], metadata["base_sha256"]
    if base != model.info.name or sha256 != model.info.weights_sha256:
        given = (model.info.weights_sha256 or "random")[:12]
        raise MedfmError(f"{display_path(path)}: an adapter for {base} (weights {sha256[:12]}), "
                         f"not for {model.info.name} (weights {given}); load it over its own base")
    network = network_of(model)
    add_adapter(network, metadata["method"], int(metadata["rank"]), model.info.name)
    state = {key: value for key, value in tensors.items() if not key.startswith(HEAD_PREFIX)}
    own = network.state_dict()
    wrong = [key for key, value in state.items() if key not in own or own[key].shape != value.shape]
    if wrong:
        raise MedfmError(f"{display_path(path)}: tensor {wrong[0]!r} does not fit {model.info.name}; the file is damaged")
    network.load_state_dict(state, strict=False)
    network.eval().requires_grad_(False)
    model.info = replace(model.info, weights_sha256=sha256_of(Path(path)))
    return model
