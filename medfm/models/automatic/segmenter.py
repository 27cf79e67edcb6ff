"""A trained automatic segmenter: network + plan, loaded from a MODEL_DIR that ``medfm train seg`` wrote.

A MODEL_DIR holds ``config.json`` (name, architecture config, weights file and sha256,
labels), ``plan.json``, ``fingerprint.json``, ``weights.safetensors`` and ``card.md``.
The weights are checked against the recorded sha256 on load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


#: What a labelled input is, as :func:`pixel_stack` sees it.
KINDS = ("2d", "volume", "video")


def pixel_stack(image: Image, path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """``(pixels (C, I, J, N), kind)``: a 2D image (N = 1), a volume (N = its slices) or a video (N = its frames).

    A 4D series (slices and frames both) is refused with one line naming the file.
    """
    slices, frames = image.spatial_shape[2], image.num_frames
    if slices > 1 and frames > 1:
        raise MedfmError(f"{display_path(path)}: is {image.shape[:4]} (I, J, K, T), a 4D series; automatic segmentation "
                         "takes 2D images, volumes or videos: split it into volumes first")
    if frames > 1:
        return np.moveaxis(np.asarray(image.array[:, :, 0, :, :]), -1, 0), "video"
    return np.moveaxis(np.asarray(image.array[:, :, :, 0, :]), -1, 0), "volume" if slices > 1 else "2d"


def resize(batch: torch.Tensor, size: tuple[int, ...], labels: bool = False) -> torch.Tensor:
    """``(N, C, *spatial)`` (2 or 3 spatial axes) to ``size``: nearest for label maps, else (antialiased) bi/trilinear."""
    if tuple(batch.shape[2:]) == tuple(size):
        return batch
    if labels:
        return F.interpolate(batch, size=size, mode="nearest-exact")
    if len(size) == 2:
        return F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(batch, size=size, mode="trilinear", align_corners=False)


def working_size(shape: tuple[int, ...], spacing: tuple[float, ...], plan: Plan) -> tuple[int, ...]:
    """The grid the network sees: a 3D plan resamples to its ``target_spacing``, a 2D plan scales by ``scale``."""
    if plan.target_spacing is not None:
        return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, plan.target_spacing))
    return tuple(max(1, round(n * plan.scale)) for n in shape)


class AutoSegmenter:
    """``probabilities(pixels)`` for one image, volume or video, with the plan's preprocessing inside."""

    def __init__(self, network: nn.Module, plan: Plan, info: SegmenterInfo, config: dict[str, Any] | None = None) -> None:
        self.network = network.eval()
        self.plan = plan
        self.info = info
        self.config = config or {}

    @torch.no_grad()
    def probabilities(self, pixels: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
                      flips: bool = False) -> np.ndarray:
        """``pixels``: ``(C, I, J, N)`` raw (:func:`pixel_stack`) → ``(1 + labels, I, J, N)`` float32 class
        probabilities on the same grid; ``spacing``: mm along i, j, k (a 3D plan resamples by it).

        A 2D plan segments each of the N planes; a 3D plan the volume, through MONAI's sliding
        window with the plan's overlap and Gaussian blending. With ``flips``, the mean over the
        input and its mirror images along each axis (test-time augmentation).
        """
        if pixels.shape[0] != self.plan.in_channels:
            raise MedfmError(f"the model takes {self.plan.in_channels}-channel images; this image has {pixels.shape[0]}")
        if self.plan.dims == 3:
            if pixels.shape[3] == 1:
                raise MedfmError("the model segments volumes (a 3D plan); this is a single 2D plane")
            return self._window(pixels, tuple(spacing[:3]), flips)
        planes = [self._window(pixels[..., n], tuple(spacing[:2]), flips) for n in range(pixels.shape[3])]
        return np.stack(planes, axis=-1)

    def _window(self, pixels: np.ndarray, spacing: tuple[float, ...], flips: bool) -> np.ndarray:
        """``(C, *spatial)`` → ``(1 + labels, *spatial)`` through the network at the plan's working grid."""
        from monai.inferers import sliding_window_inference

        native = tuple(pixels.shape[1:])
        batch = resize(torch.from_numpy(normalise(pixels, self.plan))[None], working_size(native, spacing, self.plan))
        axes_all = tuple(range(2, batch.dim()))
        flip_sets = [()] + ([(a,) for a in axes_all] + [axes_all] if flips else [])
        total = torch.zeros((1, self.plan.out_channels, *batch.shape[2:]))
        for axes in flip_sets:
            view = batch.flip(axes) if axes else batch
            logits = sliding_window_inference(view, self.plan.patch_size, 4, _main_output(self.network),
                                              overlap=self.plan.sliding_window_overlap, mode="gaussian")
            probabilities = torch.softmax(logits, dim=1)
            total += probabilities.flip(axes) if axes else probabilities
        return resize(total / len(flip_sets), native)[0].numpy()

    def label_map(self, probabilities: np.ndarray) -> np.ndarray:
        """``(1 + labels, ...)`` probabilities → a map of the plan's label values (0 background) on the same grid."""
        values = np.array([0, *self.plan.label_values], dtype=np.uint16)
        return values[np.argmax(probabilities, axis=0)]


#: Layers whose dropout :func:`dropout_at_inference` turns on when a network was trained with dropout.
DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
#: Activations after which :func:`dropout_at_inference` drops features when the network has no dropout of its own.
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.ELU)
#: The rate of the dropout injected after each activation (small: the network never learnt to expect it).
INJECTED_DROPOUT = 0.1


@contextmanager
def dropout_at_inference(network: nn.Module, rate: float = INJECTED_DROPOUT) -> Iterator[str]:
    """Dropout active in ``network`` while inside (Monte Carlo dropout); yields ``"trained"`` or ``"injected"``.

    A network trained with dropout (a MONAI U-Net or TransUNet whose config sets ``dropout``) gets its own
    dropout layers back in training mode, and nothing else changes (normalisation layers stay in inference
    mode). A network without (the shipped architectures train with ``dropout`` 0) gets element-wise dropout
    at ``rate`` on the output of every activation, through forward hooks ("dropout injection" after training,
    Ledda et al. 2023); the output layer has no activation after it, so the logits themselves are never dropped.
    Everything is as before on exit.
    """
    own = [module for module in network.modules() if isinstance(module, DROPOUT_LAYERS) and module.p > 0]
    if own:
        for module in own:
            module.train()
        try:
            yield "trained"
        finally:
            for module in own:
                module.eval()
        return
    hooks = [module.register_forward_hook(lambda _module, _inputs, output: F.dropout(output, rate, training=True))
             for module in network.modules() if isinstance(module, ACTIVATIONS)]
    if not hooks:
        raise MedfmError("the model has neither dropout layers nor activations to drop features after; "
                         "MC-dropout cannot sample it")
    try:
        yield "injected"
    finally:
        for hook in hooks:
            hook.remove()


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
    except (OSError, ValueError) as exc:
        raise MedfmError(f"{name}: cannot read its config ({exc})") from None
    if not isinstance(config, dict) or config.get("kind") != "auto-segmenter":  # before the plan: other kinds have none
        from medfm.models.registry import describe_model_config

        raise MedfmError(f"{name}: not a model folder written by `medfm train seg`; its {CONFIG_FILE} is for "
                         f"{describe_model_config(config)}")
    try:
        plan = Plan.from_dict(json.loads((folder / PLAN_FILE).read_text()))
    except (OSError, ValueError) as exc:
        raise MedfmError(f"{name}: cannot read its plan ({exc})") from None
    weights = folder / config["weights"]["file"]
    if not weights.is_file():
        raise MedfmError(f"{display_path(weights)}: the model's weights are missing")
    digest = sha256_of(weights)
    if digest != config["weights"]["sha256"]:
        raise MedfmError(f"{display_path(weights)}: does not match the sha256 in {CONFIG_FILE}; the file is damaged or replaced")
    network = build_network(config["network"], plan.in_channels, plan.out_channels, plan.dims)
    load_model(network, str(weights))
    return AutoSegmenter(network, plan, SegmenterInfo(config["name"], digest), config)
