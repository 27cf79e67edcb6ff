"""2D segmentation nets whose encoder is a :mod:`medfm.models.encoders.backbone` trunk, so that an
encoder folder written by ``medfm pretrain`` can initialise them (``medfm train seg --init``).

* ``cnn-small``: the residual CNN's stem and stages give features at 1/2 … 1/32 of the input;
  a U-Net decoder (MONAI's up-blocks) climbs back with them as skips.
* ``vit-tiny``: the ViT's patch tokens form a 1/16 map (its position embedding resampled to
  the patch size, as timm's ``dynamic_img_size`` does); as in UNETR, a light convolutional
  pyramid supplies the finer skips the tokens lack.

A full-resolution residual block adds the finest skip in both. The trunks take 3 channels, as
when pretrained: a grey input is repeated to 3 channels (what the encoder's own preprocessing does).
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import nn

from medfm.errors import MedfmError

#: Channels of the full-resolution block, and of the ViT's convolutional pyramid (1/2, 1/4, 1/8).
FULL_CHANNELS, PYRAMID_CHANNELS = 16, (32, 64, 96)


class BackboneUNet(nn.Module):
    """``(B, in_channels, H, W)`` → ``(B, out_channels, H, W)`` logits; ``H`` and ``W`` multiples of
    :attr:`downsampling` (32 for ``cnn-small``, 16 for ``vit-tiny``). ``trunk`` is the pretrainable part,
    with the same keys as the backbone's ``trunk`` (``backbone_arch`` names it)."""

    def __init__(self, in_channels: int, out_channels: int, backbone_arch: str) -> None:
        from monai.networks.blocks import UnetOutBlock, UnetResBlock, UnetUpBlock

        from medfm.models.encoders.backbone import ARCHITECTURES, build_backbone

        super().__init__()
        if in_channels not in (1, 3):
            raise MedfmError(f"a {backbone_arch} backbone net takes grey or RGB images (1 or 3 channels); got {in_channels}")
        self.in_channels, self.backbone_arch = in_channels, backbone_arch
        backbone = build_backbone({"arch": backbone_arch})
        self.trunk = backbone.trunk
        norm = "instance"
        self.full = UnetResBlock(2, 3, FULL_CHANNELS, 3, 1, norm)
        if backbone_arch == "cnn-small":
            settings = ARCHITECTURES[backbone_arch]
            self.stage_ends = [end - 1 for end in accumulate(settings["depths"])]
            levels = [settings["widths"][0], *settings["widths"]]
            self.pyramid = None
        else:
            channels = [FULL_CHANNELS, *PYRAMID_CHANNELS]
            self.pyramid = nn.ModuleList(UnetResBlock(2, channels[i], channels[i + 1], 3, 2, norm) for i in range(3))
            levels = [*PYRAMID_CHANNELS, backbone.embed_dim]
        self.downsampling = 2 ** len(levels)
        channels = [FULL_CHANNELS, *levels]
        self.decoder = nn.ModuleList(UnetUpBlock(2, channels[i + 1], channels[i], 3, 2, 2, norm)
                                     for i in reversed(range(len(levels))))
        self.head = UnetOutBlock(2, FULL_CHANNELS, out_channels)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = batch.expand(-1, 3, -1, -1) if self.in_channels == 1 else batch
        full = self.full(pixels)
        skips = [full, *self._levels(pixels, full)]
        deep = skips.pop()
        for block in self.decoder:
            deep = block(deep, skips.pop())
        return self.head(deep)

    def _levels(self, pixels: torch.Tensor, full: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features, finest first: 1/2, 1/4, … of the input."""
        if self.pyramid is None:
            features = [self.trunk.stem(pixels)]
            x = features[0]
            for index, block in enumerate(self.trunk.blocks):
                x = block(x)
                if index in self.stage_ends:
                    features.append(x)
            return features
        features, x = [], full
        for block in self.pyramid:
            x = block(x)
            features.append(x)
        tokens = self.trunk.forward_features(pixels)  # (B, N, width): no class token
        side = (pixels.shape[2] // 16, pixels.shape[3] // 16)
        features.append(tokens.transpose(1, 2).reshape(len(pixels), -1, *side))
        return features

