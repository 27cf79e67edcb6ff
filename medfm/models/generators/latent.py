"""The latent space of a latent generator: MONAI's ``AutoencoderKL``, whose scaled latents the U-Net generates.

At 128² and above a U-Net over pixels is slow on a CPU; a latent generator (Rombach et al.'s latent
diffusion, as MONAI's generative tutorials build it) trains and samples in the autoencoder's
latent grid, 4× smaller per side with the default autoencoder, and decodes once at the end.
Latents are the encoder's means times ``scale_factor`` (one over their standard deviation on the
training images), so that they have about unit variance, as the noise they are generated from.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfm.errors import MedfmError

#: The autoencoder's arguments when the user names none: 4× smaller per side, 4 latent channels, small enough for a CPU.
DEFAULT_AUTOENCODER: dict[str, Any] = {
    "channels": [32, 64, 64], "num_res_blocks": 1, "attention_levels": [False, False, False], "latent_channels": 4,
    "norm_num_groups": 16, "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False,
}


def build_autoencoder(arguments: dict[str, Any], channels: int) -> nn.Module:
    """A 2D ``AutoencoderKL`` from ``arguments`` (its keyword arguments) for ``channels``-channel images."""
    from monai.networks.nets import AutoencoderKL

    try:
        return AutoencoderKL(spatial_dims=2, in_channels=channels, out_channels=channels, **arguments)
    except (TypeError, ValueError) as exc:
        raise MedfmError(f"the autoencoder arguments {arguments} do not make an AutoencoderKL: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def latent_factor(arguments: dict[str, Any]) -> int:
    """How many times smaller per side the latent grid is than the image (each level but the last halves it)."""
    return 2 ** (len(arguments["channels"]) - 1)


class LatentSpace:
    """Images in the generator's pixel range to scaled latents and back."""

    def __init__(self, autoencoder: nn.Module, scale_factor: float) -> None:
        self.autoencoder = autoencoder.eval()
        self.scale_factor = float(scale_factor)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mean, _ = self.autoencoder.encode(x)
        return mean * self.scale_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z / self.scale_factor)
