"""Family ``open_clip``: open_clip image-text models from local files, BiomedCLIP included.

Two kinds of config:

* ``"architecture": "ViT-B-16"`` (an open_clip built-in): random without a checkpoint;
  a checkpoint is an official open_clip state dict (``.pt``/``.bin``/``.safetensors``) or
  a folder in the hub layout (its weights file, and its ``open_clip_config.json``'s
  ``preprocess_cfg`` if any).
* ``"checkpoint_required"`` (``biomedclip.json``): the architecture comes from the
  folder, in the Hugging Face hub layout of an open_clip model — ``open_clip_config.json``,
  ``open_clip_pytorch_model.bin`` (or ``open_clip_model.safetensors``…) and, for a
  Hugging Face text tower, the tokenizer files. open_clip would fetch that tower's
  *config* from the hub (``text_cfg.hf_model_name``); here it is read from the folder's
  ``config.json`` when there is one, else from the transformers config that medfm ships
  for the config's ``text_tower`` (``text_towers/<name>/config.json``), so loading makes
  no network call.

Preprocessing is open_clip's eval transform for the model (``image_transform_v2`` with
the model's preprocess config), after :mod:`planes`' uint8 rule.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2

from medfm.errors import MedfmError, display_path
from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.models.encoders.checkpoint import mismatch, read_state_dict, weights_file
from medfm.models.encoders.planes import pixel_batch
from medfm.models.registry import register_family, sha256_of

#: Transformers configs of the Hugging Face text towers that hub folders refer to by name.
TEXT_TOWERS_DIR = Path(__file__).parent / "text_towers"
#: Weights files of open_clip's hub layout, preferred first (as open_clip chooses).
HUB_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
)
HUB_CONFIG = "open_clip_config.json"


class OpenClipEncoder(Encoder):
    """:class:`Encoder` around an open_clip model, its eval transform and its tokenizer."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: EncoderInfo) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        preprocess = open_clip.get_model_preprocess_cfg(model)
        self.transform = image_transform_v2(PreprocessCfg(**preprocess), is_train=False)

    def pixels(self, planes: Sequence[np.ndarray]) -> torch.Tensor:
        return pixel_batch(planes, self.transform)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels, normalize=True).float()

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise MedfmError("encode_text takes a list of texts, not one string")
        if not texts:
            return np.zeros((0, self.info.embed_dim), np.float32)
        return self.model.encode_text(self.tokenizer(list(texts)), normalize=True).float().numpy()


def _hub_config(folder: Path) -> dict[str, Any]:
    """The folder's ``open_clip_config.json``: ``model_cfg`` (architecture) and ``preprocess_cfg``."""
    path = folder / HUB_CONFIG
    if not path.is_file():
        raise MedfmError(f"{display_path(folder)}: not an open_clip hub folder (no {HUB_CONFIG})")
    try:
        config = json.loads(path.read_text())
    except ValueError:
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg", {}).get("text_cfg"), dict):
        raise MedfmError(f"{display_path(path)}: not an open_clip config (needs model_cfg with text_cfg)")
    return config


def _text_tower_dir(folder: Path, config: dict[str, Any]) -> Path:
    """Where the Hugging Face text tower's transformers ``config.json`` lies, locally."""
    own = folder / "config.json"
    if own.is_file() and "model_type" in json.loads(own.read_text()):
        return folder
    if "text_tower" not in config:
        raise MedfmError(f"{display_path(folder)}: the text tower needs a transformers config.json in the folder")
    return TEXT_TOWERS_DIR / config["text_tower"]


def _load(model: torch.nn.Module, path: Path, architecture: str) -> None:
    """open_clip's own loader (it converts older layouts), with a one-line error on mismatch."""
    try:
        incompatible = open_clip.load_checkpoint(model, str(path), strict=False)
        problem = mismatch(model.state_dict(), read_state_dict(path)) if any(incompatible) else None
    except MedfmError:
        raise
    except Exception as exc:  # a shape mismatch (RuntimeError) or a layout open_clip cannot convert
        problem = mismatch(model.state_dict(), read_state_dict(path)) or str(exc).strip().splitlines()[0][:200]
    if problem:
        raise MedfmError(f"{display_path(path)}: not a checkpoint of {architecture}: {problem}")


@register_family("open_clip")
def build_open_clip(config: dict[str, Any], weights: Path | None) -> OpenClipEncoder:
    """Registry builder: a built-in architecture, or the architecture of a hub folder ``weights``."""
    name = config["name"]
    folder = weights if weights is not None and weights.is_dir() else None
    if config.get("architecture"):
        architecture = config["architecture"]
        model_cfg = open_clip.get_model_config(architecture)
        preprocess = _hub_config(folder).get("preprocess_cfg") if folder and (folder / HUB_CONFIG).is_file() else None
        model = open_clip.create_model(architecture, force_preprocess_cfg=preprocess)
        tokenizer = open_clip.get_tokenizer(architecture)
    else:
        if folder is None:
            raise MedfmError(f"model {name!r} needs a folder as its checkpoint: {config['checkpoint_required']}")
        model_cfg = _hub_config(folder)["model_cfg"]
        architecture = f"the open_clip model of {display_path(folder / HUB_CONFIG)}"
        local = f"local-dir:{folder}"
        text_cfg = model_cfg["text_cfg"]
        if "hf_model_name" in text_cfg:
            text_cfg = {**text_cfg, "hf_model_name": str(_text_tower_dir(folder, config)), "hf_model_pretrained": False}
        model = open_clip.create_model(local, load_weights=False, pretrained_text=False, text_cfg=text_cfg)
        try:
            tokenizer = open_clip.get_tokenizer(local)
        except (OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0][:200]
            raise MedfmError(f"{display_path(folder)}: cannot read its tokenizer files ({reason})") from None
    weights_sha256 = None
    if weights is not None:
        path = weights_file(weights, HUB_WEIGHTS)
        _load(model, path, architecture)
        weights_sha256 = sha256_of(path)
    info = EncoderInfo(name, int(model_cfg["embed_dim"]), weights_sha256, has_text=True,
                       extra={"family": "open_clip", "architecture": config.get("architecture") or "hub folder"})
    return OpenClipEncoder(model, tokenizer, info)
