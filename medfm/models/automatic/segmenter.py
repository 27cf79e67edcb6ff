"""A trained automatic segmenter: network + plan, loaded from a MODEL_DIR that ``medfm train seg`` wrote.

A MODEL_DIR holds ``config.json`` (name, architecture config, weights file and sha256,
labels), ``plan.json``, ``fingerprint.json``, ``weights.safetensors`` and ``card.md``.
The weights are checked against the recorded sha256 on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfm.errors import MedfmError, display_path
from medfm.io.image import Image
from medfm.models.automatic.network import build_network
from medfm.models.automatic.plan import Plan, normalise
from medfm.models.segmenters.base import SegmenterInfo

CONFIG_FILE, PLAN_FILE, FINGERPRINT_FILE, WEIGHTS_FILE, CARD_FILE = (
    "config.json", "plan.json", "fingerprint.json", "weights.safetensors", "card.md")


def planar_pixels(image: Image, path: str | os.PathLike) -> np.ndarray:
    """A 2D image's pixels as ``(C, I, J)`` (channels, columns axis i, rows axis j); MedfmError for volumes and videos."""
    if not image.is_2d or image.num_frames > 1:
        raise MedfmError(f"{display_path(path)}: is {image.shape[:4]} (I, J, K, T); automatic segmentation handles 2D images "
                         "in this version (3D volumes and videos are not supported yet)")
    return np.moveaxis(np.asarray(image.array[:, :, 0, 0, :]), -1, 0)


def resize(planes: torch.Tensor, size: tuple[int, int], labels: bool = False) -> torch.Tensor:
    """``(N, C, H, W)`` to ``size``: nearest for label maps, antialiased bilinear otherwise."""
    if tuple(planes.shape[-2:]) == tuple(size):
        return planes
    if labels:
        return F.interpolate(planes, size=size, mode="nearest-exact")
    return F.interpolate(planes, size=size, mode="bilinear", align_corners=False, antialias=True)


def scaled_size(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


class AutoSegmenter:
    """``probabilities(pixels)`` for one 2D image, with the plan's preprocessing inside."""

    def __init__(self, network: nn.Module, plan: Plan, info: SegmenterInfo, config: dict[str, Any] | None = None) -> None:
        self.network = network.eval()
        self.plan = plan
        self.info = info
        self.config = config or {}

    @torch.no_grad()
    def probabilities(self, pixels: np.ndarray, flips: bool = False) -> np.ndarray:
        """``pixels``: ``(C, I, J)`` raw → ``(1 + labels, I, J)`` float32 class probabilities on the same grid.

        With ``flips``, the mean over the image and its mirror images along each axis
        (test-time augmentation).
        """
        from monai.inferers import sliding_window_inference

        if pixels.shape[0] != self.plan.in_channels:
            raise MedfmError(f"the model takes {self.plan.in_channels}-channel images; this image has {pixels.shape[0]}")
        native = tuple(pixels.shape[1:])
        batch = resize(torch.from_numpy(normalise(pixels, self.plan))[None], scaled_size(native, self.plan.scale))
        work = tuple(batch.shape[-2:])
        padded = F.pad(batch, _padding(work, self.plan.patch_size))
        flip_sets = [()] + ([(2,), (3,), (2, 3)] if flips else [])
        total = torch.zeros((1, self.plan.out_channels, *padded.shape[-2:]))
        for axes in flip_sets:
            view = padded.flip(axes) if axes else padded
            logits = sliding_window_inference(view, self.plan.patch_size, 4, _main_output(self.network),
                                              overlap=self.plan.sliding_window_overlap, mode="gaussian")
            probabilities = torch.softmax(logits, dim=1)
            total += probabilities.flip(axes) if axes else probabilities
        total = total[..., : work[0], : work[1]] / len(flip_sets)
        return resize(total, native)[0].numpy()

    def label_map(self, probabilities: np.ndarray) -> np.ndarray:
        """``(1 + labels, I, J)`` probabilities → ``(I, J)`` map of the plan's label values (0 background)."""
        values = np.array([0, *self.plan.label_values], dtype=np.uint16)
        return values[np.argmax(probabilities, axis=0)]


def _padding(size: tuple[int, ...], patch: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad's (last-axis first) padding that brings ``size`` up to at least ``patch``."""
    return (0, max(0, patch[1] - size[1]), 0, max(0, patch[0] - size[0]))


def _main_output(network: nn.Module):
    """The network as a function of its full-resolution output only (DynUNet in training mode stacks deep-supervision heads)."""

    def forward(batch: torch.Tensor) -> torch.Tensor:
        output = network(batch)
        return output[:, 0] if output.dim() == batch.dim() + 1 else output

    return forward


def load_auto_segmenter(model_dir: str | os.PathLike) -> AutoSegmenter:
    """The segmenter in ``model_dir``, its weights checked against the sha256 in its config."""
    from safetensors.torch import load_model

    from medfm.models.registry import sha256_of

    folder = Path(model_dir)
    name = display_path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise MedfmError(f"{name}: not a model folder written by `medfm train seg` (no {CONFIG_FILE})")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        plan = Plan.from_dict(json.loads((folder / PLAN_FILE).read_text()))
    except (OSError, ValueError) as exc:
        raise MedfmError(f"{name}: cannot read its config or plan ({exc})") from None
    if config.get("kind") != "auto-segmenter":
        raise MedfmError(f"{name}: {CONFIG_FILE} is not an automatic segmenter's (kind {config.get('kind')!r})")
    weights = folder / config["weights"]["file"]
    if not weights.is_file():
        raise MedfmError(f"{display_path(weights)}: the model's weights are missing")
    digest = sha256_of(weights)
    if digest != config["weights"]["sha256"]:
        raise MedfmError(f"{display_path(weights)}: does not match the sha256 in {CONFIG_FILE}; the file is damaged or replaced")
    network = build_network(config["network"], plan.in_channels, plan.out_channels, plan.dims)
    load_model(network, str(weights))
    return AutoSegmenter(network, plan, SegmenterInfo(config["name"], digest), config)
