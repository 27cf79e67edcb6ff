"""medfm's compact super-resolution network: early fusion of neighbouring frames, a residual over bicubic.

Family ``medfm_upscale`` (config ``medfm-upscale.json``, or the ``config.json`` of a folder that
``medfm train upscale`` wrote). The network sees ``frames`` planes stacked as channels — a video's
frames ``t-1, t, t+1`` (MedVSR's neighbouring-frame input; the frames are fused by the first
convolution, without explicit motion alignment), or one still repeated — and predicts the
centre plane ``scale`` times larger: the bicubic upsampling of the centre plus a learned
residual from residual blocks at the low resolution and a PixelShuffle (ESPCN/EDSR) tail.

The input contract is the model's own (:class:`Upscaler`): luminance planes in [0, 1]; the task
(:mod:`medfm.tasks.upscale`) windows images into it and colour through YCbCr.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfm.models.encoders.checkpoint import load_exactly, read_state_dict, weights_file
from medfm.models.registry import register_family, sha256_of

WEIGHTS_FILE = "weights.safetensors"


class ResidualBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class UpscaleNet(nn.Module):
    """``(N, frames, H, W)`` planes in [0, 1] → ``(N, 1, scale·H, scale·W)``: the centre plane, upscaled."""

    def __init__(self, scale: int, frames: int, features: int, blocks: int) -> None:
        super().__init__()
        self.scale, self.frames = scale, frames
        self.head = nn.Conv2d(frames, features, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(features) for _ in range(blocks)])
        self.tail = nn.Conv2d(features, scale * scale, 3, padding=1)
        # A zero tail starts the network at plain bicubic: training only ever adds detail to it.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        centre = planes[:, self.frames // 2: self.frames // 2 + 1]
        base = F.interpolate(centre, scale_factor=self.scale, mode="bicubic", align_corners=False)
        features = self.head(planes)
        return base + F.pixel_shuffle(self.tail(self.body(features) + features), self.scale)


@dataclass
class Upscaler:
    """A loaded super-resolution network with its name, weights hash and input contract.

    ``scale``: the factor one pass gives; ``frames``: planes per input (odd; the centre is upscaled).
    """

    net: UpscaleNet
    name: str
    weights_sha256: str | None

    @property
    def scale(self) -> int:
        return self.net.scale

    @property
    def frames(self) -> int:
        return self.net.frames

    @torch.inference_mode()
    def upscale_planes(self, planes: np.ndarray) -> np.ndarray:
        """``(N, frames, H, W)`` float luminance in [0, 1] → ``(N, scale·H, scale·W)`` float32, clipped to [0, 1].

        Planes go through the network one at a time, so memory stays that of one plane.
        """
        self.net.eval()
        out = [self.net(torch.from_numpy(np.ascontiguousarray(plane, np.float32))[None])[0, 0].clamp_(0, 1).numpy()
               for plane in planes]
        return np.stack(out)


def build_net(config: dict[str, Any]) -> UpscaleNet:
    return UpscaleNet(int(config["scale"]), int(config["frames"]), int(config["features"]), int(config["blocks"]))


@register_family("medfm_upscale")
def build_upscaler(config: dict[str, Any], weights: Path | None) -> Upscaler:
    """Registry builder: the config's network, filled from its safetensors weights (random without)."""
    net = build_net(config)
    sha256 = None
    if weights is not None:
        path = weights_file(weights, [config.get("weights", {}).get("file", WEIGHTS_FILE)])
        load_exactly(net, read_state_dict(path), path, f"{config['name']} (medfm_upscale)")
        sha256 = sha256_of(path)
    return Upscaler(net.eval(), config["name"], sha256)
