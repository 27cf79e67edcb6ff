"""medfm's forecaster: a neural ODE in the latent space of a small convolutional autoencoder (ImageFlowNet-style).

Family ``medfm_forecast`` (the ``config.json`` of a folder that ``medfm train forecast`` wrote). The
encoder maps the last two observed frames (the state needs the direction of change, not only
the position) to a latent grid ``z(0)``; the latent follows ``dz/dt = f(z)`` (a small CNN),
integrated by torchdiffeq with fixed-step RK4 to ``t = 1 … K`` sequence steps; the decoder turns
each ``z(t)`` into an image **change**, and the forecast is the last frame plus
``D(z(t)) − D(z(0))``: a network that has learnt nothing forecasts "no change", the same as
repeating the last image.

Input contract: ``(N, 2, size, size)`` grey frames in [0, 1] at the config's ``size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfm.models.encoders.checkpoint import load_exactly, read_state_dict, weights_file
from medfm.models.registry import register_family, sha256_of

WEIGHTS_FILE = "weights.safetensors"
CONTEXT = 2


class LatentDynamics(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.Tanh(), nn.Conv2d(hidden, channels, 3, padding=1))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ForecastNet(nn.Module):
    """``(N, 2, S, S)`` last two frames → ``(N, K, S, S)`` forecasts at steps ``1 … K``."""

    def __init__(self, size: int, features: int, latent: int) -> None:
        super().__init__()
        self.size = size
        self.encoder = nn.Sequential(
            nn.Conv2d(CONTEXT, features, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(features, 2 * features, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * features, latent, 3, stride=2, padding=1))
        self.dynamics = LatentDynamics(latent, 2 * features)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent, 2 * features, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * features, features, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(features, 1, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, frames: torch.Tensor, steps: int) -> torch.Tensor:
        from torchdiffeq import odeint

        times = torch.arange(steps + 1, dtype=frames.dtype)
        path = odeint(self.dynamics, self.encoder(frames), times, method="rk4", options={"step_size": 0.5})
        changes = self.decoder(path.flatten(0, 1)).unflatten(0, path.shape[:2])[:, :, 0]  # (K + 1, N, S, S)
        return (frames[:, -1][None] + changes[1:] - changes[:1]).clamp(0, 1).transpose(0, 1)


@dataclass
class Forecaster:
    """A loaded forecaster with its name and weights hash."""

    net: ForecastNet
    name: str
    weights_sha256: str | None

    @property
    def size(self) -> int:
        return self.net.size

    @torch.inference_mode()
    def forecast(self, frames: np.ndarray, steps: int) -> np.ndarray:
        """``(N, 2, size, size)`` float in [0, 1] → ``(N, steps, size, size)`` float32."""
        self.net.eval()
        return self.net(torch.from_numpy(np.ascontiguousarray(frames, np.float32)), steps).numpy()


def build_net(config: dict[str, Any]) -> ForecastNet:
    return ForecastNet(int(config["size"]), int(config["features"]), int(config["latent"]))


@register_family("medfm_forecast")
def build_forecaster(config: dict[str, Any], weights: Path | None) -> Forecaster:
    """Registry builder: the config's network, filled from its safetensors weights (random without)."""
    net = build_net(config)
    sha256 = None
    if weights is not None:
        path = weights_file(weights, [config.get("weights", {}).get("file", WEIGHTS_FILE)])
        load_exactly(net, read_state_dict(path), path, f"{config['name']} (medfm_forecast)")
        sha256 = sha256_of(path)
    return Forecaster(net.eval(), config["name"], sha256)
