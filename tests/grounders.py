"""Grounding-head folders for tests: a constant head (every position gets the same probability) over the shipped encoder
and segmenter."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medfm.models.grounding import GroundingHead
from medfm.models.registry import create_encoder, create_segmenter, save_weights, sha256_of

STAGES = [1, 2, 3]
WIDTH = 8


def constant_head_state(logit: float) -> dict[str, torch.Tensor]:
    """A head over medfm-interactive's encoder stages whose every output is ``logit`` (the output layer's bias alone)."""
    net = create_segmenter("medfm-interactive").net
    head = GroundingHead([net.encoder[s][0][0].out_channels for s in STAGES], 256, WIDTH)
    state = head.state_dict()
    state["out.weight"].zero_()
    state["out.bias"].fill_(logit)
    return state


def grounder_config(name: str, weights: Path, encoder_sha256: str | None = None, segmenter_sha256: str | None = None) -> dict:
    return {"name": name, "family": "medfm_grounding", "kind": "grounder", "encoder": "medfm-clip-small",
            "encoder_sha256": encoder_sha256 or create_encoder("medfm-clip-small").info.weights_sha256,
            "segmenter": "medfm-interactive",
            "segmenter_sha256": segmenter_sha256 or create_segmenter("medfm-interactive").info.weights_sha256,
            "width": WIDTH, "stages": STAGES, "threshold": 0.5,
            "weights": {"file": weights.name, "sha256": sha256_of(weights), "dtype": "float32"}}


def constant_grounder_folder(folder: Path, logit: float, encoder_sha256: str | None = None,
                             segmenter_sha256: str | None = None) -> Path:
    """A model folder as ``medfm train grounding`` writes it, holding a constant head."""
    folder.mkdir(parents=True)
    weights = save_weights(constant_head_state(logit), folder / "weights.safetensors")
    (folder / "config.json").write_text(json.dumps(grounder_config(folder.name, weights, encoder_sha256, segmenter_sha256)))
    return folder
