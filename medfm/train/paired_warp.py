"""The augmentation of the trainings that learn where a structure is (medfm-interactive, the text grounding head):
one random warp of a picture and its targets, and intensity jitter of the picture."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def warp_pair(pictures: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 3, S, S)`` pictures in [0, 1] and ``(B, C, S, S)`` targets, warped alike: flips, rotation by up to 20° (half
    of the samples), scale 0.8–1.25 and shift ±10 %; the pictures' contrast, brightness and gamma jittered. The targets
    are resampled bilinearly (soft at the edges); callers that need binary masks threshold them."""
    batch, channels = pictures.shape[0], pictures.shape[1]
    angle = rng.uniform(-0.35, 0.35, batch) * (rng.random(batch) < 0.5)
    scale = np.exp(rng.uniform(np.log(0.8), np.log(1.25), batch))
    flip = np.where(rng.random((2, batch)) < 0.5, -1.0, 1.0)
    theta = np.zeros((batch, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = np.cos(angle) * scale * flip[0], -np.sin(angle) * scale
    theta[:, 1, 0], theta[:, 1, 1] = np.sin(angle) * scale, np.cos(angle) * scale * flip[1]
    theta[:, :, 2] = rng.uniform(-0.1, 0.1, (batch, 2))
    grid = F.affine_grid(torch.from_numpy(theta), list(pictures.shape), align_corners=False)
    warped = F.grid_sample(torch.cat([pictures, targets], 1), grid, align_corners=False)
    contrast = torch.from_numpy(rng.uniform(0.75, 1.25, (batch, 1, 1, 1)).astype(np.float32))
    brightness = torch.from_numpy(rng.uniform(-0.1, 0.1, (batch, 1, 1, 1)).astype(np.float32))
    gamma = torch.from_numpy(np.exp(rng.uniform(-0.3, 0.3, (batch, 1, 1, 1))).astype(np.float32))
    return ((warped[:, :channels] - 0.5) * contrast + 0.5 + brightness).clamp(0, 1) ** gamma, warped[:, channels:]
