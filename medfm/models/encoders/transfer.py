"""Starting another network's encoder from an encoder folder that ``medfm pretrain`` wrote.

The folder's ``encoder.safetensors`` holds a :class:`~medfm.models.encoders.backbone.Backbone`
(``trunk.*`` tensors). A network whose encoder is that trunk — medfm-clip's image tower
(``cnn-small``), the ``auto-backbone-*`` segmentation nets — receives it tensor for tensor;
anything else is refused in one line naming the mismatch, before any data is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medfm.errors import MedfmError, display_path
from medfm.models.encoders.checkpoint import mismatch, read_state_dict
from medfm.models.registry import read_model_folder_config, sha256_of

TRUNK_PREFIX = "trunk."


@dataclass(frozen=True)
class PretrainedTrunk:
    """A verified encoder folder's trunk: ``state`` (keys without ``trunk.``), its ``arch`` and provenance."""

    folder: Path
    arch: str
    weights_sha256: str
    state: dict[str, torch.Tensor]

    def provenance(self) -> dict[str, str]:
        """What a trained model's card and config record about its initialisation."""
        return {"encoder_dir": display_path(self.folder), "arch": self.arch, "weights_sha256": self.weights_sha256}


def read_pretrained_trunk(encoder_dir: str | os.PathLike, wanted_arch: str | None, target: str) -> PretrainedTrunk:
    """The trunk of ``encoder_dir`` (weights checked against the sha256 of its config), refused unless it is a
    ``wanted_arch`` backbone; ``wanted_arch`` ``None`` means ``target`` (e.g. "architecture auto-unet") has no
    encoder a pretrained one fits."""
    folder = Path(encoder_dir)
    if not (folder / "config.json").is_file():
        raise MedfmError(f"{display_path(folder)}: not an encoder folder (no config.json); give a folder written by medfm pretrain")
    config = read_model_folder_config(folder, "encoder")
    if config.get("family") != "medfm_backbone":
        raise MedfmError(f"{display_path(folder)}: a {config.get('family')!r} encoder cannot initialise {target}; "
                         "only encoders written by medfm pretrain (family medfm_backbone) can")
    if wanted_arch is None:
        raise MedfmError(f"{display_path(folder)}: {target} has no encoder that a pretrained {config['arch']} fits; "
                         f"choose an architecture built on the {config['arch']} backbone")
    if config["arch"] != wanted_arch:
        raise MedfmError(f"{display_path(folder)}: a {config['arch']} encoder does not fit {target}, whose encoder is {wanted_arch}")
    weights = folder / Path(str(config["weights"].get("file"))).name
    if not weights.is_file():
        raise MedfmError(f"{display_path(weights)}: the encoder folder's weights are missing")
    sha256 = sha256_of(weights)
    if sha256 != config["weights"].get("sha256"):
        raise MedfmError(f"{display_path(weights)}: does not match the sha256 in its config; the file is damaged")
    state = {key.removeprefix(TRUNK_PREFIX): value for key, value in read_state_dict(weights).items()
             if key.startswith(TRUNK_PREFIX)}
    return PretrainedTrunk(folder, config["arch"], sha256, state)


def load_pretrained_trunk(trunk: nn.Module, pretrained: PretrainedTrunk, target: str) -> None:
    """Copy ``pretrained`` into ``trunk`` (``target``'s encoder) if every key and shape matches, else a one-line error."""
    problem = mismatch(trunk.state_dict(), pretrained.state)
    if problem:
        raise MedfmError(f"{display_path(pretrained.folder)}: its {pretrained.arch} encoder does not fit {target}: {problem}")
    trunk.load_state_dict(pretrained.state, strict=True)
