"""The denoising network of a generator: MONAI's ``DiffusionModelUNet``, conditioned on a class or a text.

Class conditioning uses the U-Net's class embedding with one extra, last index meaning
"no condition" (what classifier-free guidance samples against). Text conditioning feeds
the frozen MiniLM sentence embedding (384-d, :class:`medfm.models.encoders.medfm_clip.MiniLM`)
as a one-token cross-attention context; zeros mean "no condition".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfm.errors import MedfmError

#: How a generator is conditioned.
CONDITIONS = ("class", "text", "none")
#: The MiniLM sentence embedding's width (the cross-attention context of text generators).
TEXT_DIM = 384

#: The U-Net shape chosen by image size when the user names none: small enough to train on a CPU.
DEFAULT_NETWORKS: dict[int, dict[str, Any]] = {
    64: {"channels": [32, 64, 128], "attention_levels": [False, False, True], "num_res_blocks": 1,
         "norm_num_groups": 16, "num_head_channels": 32},
    128: {"channels": [32, 64, 128, 128], "attention_levels": [False, False, False, True], "num_res_blocks": 1,
          "norm_num_groups": 16, "num_head_channels": 32},
}


def default_network(size: int) -> dict[str, Any]:
    """The U-Net arguments for ``size``² images: the 64² shape up to 64, the 128² shape above."""
    return dict(DEFAULT_NETWORKS[64 if size <= 64 else 128])


def build_unet(network: dict[str, Any], channels: int, condition: str, num_classes: int) -> nn.Module:
    """A 2D ``DiffusionModelUNet`` from ``network`` (its keyword arguments) for ``channels``-channel images."""
    from monai.networks.nets import DiffusionModelUNet

    extra: dict[str, Any] = {}
    if condition == "class":
        extra["num_class_embeds"] = num_classes + 1  # the last index is "no condition"
    elif condition == "text":
        extra.update(with_conditioning=True, cross_attention_dim=TEXT_DIM)
    try:
        return DiffusionModelUNet(spatial_dims=2, in_channels=channels, out_channels=channels, **network, **extra)
    except (TypeError, ValueError) as exc:
        raise MedfmError(f"the generator's U-Net arguments {network} do not make a DiffusionModelUNet: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def downsampling_factor(network: dict[str, Any]) -> int:
    """Image sides must be multiples of this (each level but the last halves them)."""
    return 2 ** (len(network["channels"]) - 1)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ema_average(decay: float):
    """``avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`: an exponential moving average whose
    decay warms up as ``(1 + n) / (10 + n)`` so that a short training's average is not its initialisation."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return rate * averaged + (1.0 - rate) * current

    return average
