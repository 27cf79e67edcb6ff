"""Family ``medfm_backbone``: image-only encoders that ``medfm pretrain`` trains (and that start random).

Four architectures, chosen by ``config["arch"]``:

* ``cnn-small`` — medfm-clip-small's image tower (:class:`~medfm.models.encoders.medfm_clip.ImageTower`,
  residual CNN, widths 32/64/128/256), pooled 256-d features;
* ``vit-tiny`` — a timm ViT (patch 16, width 192, 6 blocks, 3 heads, no class token, mean
  pooling, any input size that is a multiple of the patch): MAE needs patch tokens;
* ``kan-vit-tiny`` — the same ViT with MedViTV2-style KAN feed-forwards
  (:class:`~medfm.models.encoders.kan.KanMlp`, hidden width = width);
* ``dct-vit-tiny`` — the same ViT with DCT-HistoTransformer-style attention on the token map's low
  DCT frequencies (:class:`~medfm.models.encoders.dct_attention.DctAttention`); it needs the whole
  token grid, so MAE (which drops tokens) cannot train it.

Preprocessing is medfm's own (:func:`~medfm.models.preprocess.prepare_plane`: robust
min–max, grey to 3 channels, square resize to ``image_size``, then ``pixel_mean``/``pixel_std``),
so an encoder folder written by ``medfm pretrain`` embeds raw planes like the shipped models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfm.errors import MedfmError
from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.models.encoders.checkpoint import load_exactly, read_state_dict
from medfm.models.preprocess import prepare_plane
from medfm.models.registry import register_family, sha256_of

#: Architecture name → its arguments; a config may override any of them.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "cnn-small": {"widths": [32, 64, 128, 256], "depths": [1, 1, 2, 2]},
    "vit-tiny": {"patch_size": 16, "width": 192, "depth": 6, "heads": 3},
    "kan-vit-tiny": {"patch_size": 16, "width": 192, "depth": 6, "heads": 3, "block": "kan"},
    "dct-vit-tiny": {"patch_size": 16, "width": 192, "depth": 6, "heads": 3, "block": "dct"},
}
#: What every backbone config holds besides its architecture (medfm-clip-small's input contract).
DEFAULT_INPUT = {"image_size": 112, "pixel_mean": [0.4, 0.4, 0.4], "pixel_std": [0.3, 0.3, 0.3]}


class Backbone(nn.Module):
    """``(B, 3, S, S)`` pixels in [0, 1] → ``(B, embed_dim)`` pooled features (normalisation inside).

    ``trunk`` is the architecture's network; for ``vit-tiny``, :meth:`tokens` also gives the
    patch tokens of a subset of patches (MAE's visible ones).
    """

    def __init__(self, arch: str, image_size: int, pixel_mean: Sequence[float], pixel_std: Sequence[float], **options: Any) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise MedfmError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
        self.arch, self.image_size = arch, image_size
        settings = {**ARCHITECTURES[arch], **options}
        if arch == "cnn-small":
            from medfm.models.encoders.medfm_clip import ImageTower

            self.trunk = ImageTower(settings["widths"], settings["depths"])
            self.embed_dim = settings["widths"][-1]
            self.patch_size = 32  # the tower's total stride: smaller images have no feature map to pool
            self.masks_tokens = False
        else:
            from timm.models.vision_transformer import VisionTransformer

            self.patch_size = settings["patch_size"]
            if image_size % self.patch_size:
                raise MedfmError(f"image_size {image_size} is not a multiple of the patch size {self.patch_size}")
            self.trunk = VisionTransformer(img_size=image_size, patch_size=self.patch_size, embed_dim=settings["width"],
                                           depth=settings["depth"], num_heads=settings["heads"], num_classes=0,
                                           class_token=False, global_pool="avg", dynamic_img_size=True,
                                           **_vit_blocks(settings.get("block")))
            self.embed_dim = settings["width"]
            self.masks_tokens = settings.get("block") != "dct"  # MAE's encoder sees a subset of the tokens
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.pixel_mean) / self.pixel_std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalise(pixels))

    def tokens(self, pixels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """ViTs whose blocks take any subset of tokens (:attr:`masks_tokens`) only: ``(B, K, width)`` encoded tokens of the patches ``keep`` ``(B, K)`` (row-major patch
        indices) of ``(B, 3, S, S)`` pixels, the others dropped before the blocks (MAE's encoder)."""
        vit = self.trunk
        x = vit.patch_embed(self.normalise(pixels))  # (B, H', W', width) with dynamic_img_size
        x = x.flatten(1, 2) + vit.pos_embed  # pos_embed: (1, N, width), no class token
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        return vit.norm(vit.blocks(x))


def _vit_blocks(block: str | None) -> dict[str, Any]:
    """timm ``VisionTransformer`` arguments for the block variant: KAN feed-forward or DCT attention."""
    if block == "kan":
        from medfm.models.encoders.kan import KanMlp

        return {"mlp_layer": KanMlp, "mlp_ratio": 1.0}
    if block == "dct":
        from medfm.models.encoders.dct_attention import DctAttention

        return {"attn_layer": DctAttention}
    return {}


def build_backbone(config: dict[str, Any]) -> Backbone:
    """The untrained :class:`Backbone` that ``config`` describes (``arch`` plus optional overrides)."""
    options = {key: config[key] for key in ("widths", "depths", "patch_size", "width", "depth", "heads") if key in config}
    inputs = {key: config.get(key, value) for key, value in DEFAULT_INPUT.items()}
    return Backbone(config["arch"], **inputs, **options)


class BackboneEncoder(Encoder):
    """:class:`Encoder` around a :class:`Backbone`: raw planes → unit embeddings."""

    def __init__(self, model: Backbone, info: EncoderInfo, batch_size: int = 64) -> None:
        self.model = model.eval()
        self.info = info
        self.batch_size = batch_size

    def pixels(self, planes: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.stack([prepare_plane(p, self.model.image_size) for p in planes])

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(pixels), dim=-1)


@register_family("medfm_backbone")
def build_backbone_encoder(config: dict[str, Any], weights: Path | None) -> BackboneEncoder:
    """Registry builder: ``config``'s backbone with ``weights`` (a safetensors file; random when ``None``)."""
    model = build_backbone(config)
    if weights is not None:
        load_exactly(model, read_state_dict(weights), weights, f"medfm_backbone {config['arch']!r}")
    info = EncoderInfo(config["name"], model.embed_dim, sha256_of(weights) if weights else None, has_text=False,
                       extra={"family": "medfm_backbone", "arch": config["arch"], "image_size": model.image_size})
    return BackboneEncoder(model, info)
