"""Held-out measure of a super-resolution model against bicubic and Lanczos interpolation.

For each held-out source (:mod:`medfm.train.upscale_data`) the central crop of at most
``max_side`` pixels of up to ``frames_per_video`` frames (stills: the image) is the reference; its
area-downsampled version is upscaled by the model (a video's frames with their neighbours), by
Pillow's bicubic and by Pillow's Lanczos filter, and each is compared with the reference by PSNR
and SSIM on luminance in [0, 1], ignoring a border of ``scale`` pixels.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image as PILImage

from medfm.errors import MedfmError
from medfm.eval.image_metrics import psnr, ssim
from medfm.tasks.upscale import check_scale, upscale_sequence
from medfm.train.upscale_data import Source, area_downsample, luminance_planes

METHODS = ("model", "bicubic", "lanczos")


def pillow_upscale(plane: np.ndarray, scale: int, method: str) -> np.ndarray:
    """``(H, W)`` float plane upscaled by Pillow's ``"bicubic"`` or ``"lanczos"`` filter, clipped to [0, 1]."""
    resample = {"bicubic": PILImage.Resampling.BICUBIC, "lanczos": PILImage.Resampling.LANCZOS}[method]
    picture = PILImage.fromarray(np.ascontiguousarray(plane, np.float32), mode="F")
    size = (plane.shape[1] * scale, plane.shape[0] * scale)
    return np.clip(np.asarray(picture.resize(size, resample), np.float32), 0, 1)


def central_crop(planes: np.ndarray, max_side: int, multiple: int) -> np.ndarray:
    _, rows, columns = planes.shape
    height, width = (min(n, max_side) // multiple * multiple for n in (rows, columns))
    top, left = (rows - height) // 2, (columns - width) // 2
    return planes[:, top: top + height, left: left + width]


def evaluate_upscaler(upscaler: Any, sources: Sequence[Source], scale: int = 2, max_side: int = 256,
                      frames_per_video: int = 4, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Mean PSNR (dB) and SSIM of the model, bicubic and Lanczos per dataset and over all planes, and the
    model's gain over bicubic; ``sources`` are the held-out ones."""
    passes = check_scale(scale, upscaler)
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for number, source in enumerate(sources):
        planes, video = luminance_planes(source.path)
        if video:  # frames spread over the clip, each with its neighbours
            centres = np.linspace(1, len(planes) - 2, frames_per_video).round().astype(int) if len(planes) >= 3 else []
            stacks = [planes[c - 1: c + 2] for c in centres]
        else:
            stacks = [planes[:1]]
        for stack in stacks:
            reference = central_crop(stack, max_side, scale)
            if min(reference.shape[1:]) < 8 * scale:
                continue
            low = area_downsample(reference, scale)
            estimate = upscale_sequence(upscaler, low, passes, neighbours=video)[len(low) // 2]
            centre, target = low[len(low) // 2], reference[len(low) // 2]
            for method, plane in (("model", estimate), ("bicubic", pillow_upscale(centre, scale, "bicubic")),
                                  ("lanczos", pillow_upscale(centre, scale, "lanczos"))):
                scores[source.dataset][f"psnr_{method}"].append(psnr(plane, target, border=scale))
                scores[source.dataset][f"ssim_{method}"].append(ssim(plane, target, border=scale))
        if log and (number + 1) % 25 == 0:
            log(f"evaluated {number + 1}/{len(sources)} held-out sources")
    if not scores:
        raise MedfmError("no held-out image was large enough to measure super-resolution on")
    per_dataset = {name: summarise(values) for name, values in sorted(scores.items())}
    pooled: dict[str, list[float]] = defaultdict(list)
    for values in scores.values():
        for key, numbers in values.items():
            pooled[key] += numbers
    return {"scale": scale, "sources": len(sources), "model": upscaler.name, "weights_sha256": upscaler.weights_sha256,
            "low_resolution": "area (box) average", "max_side": max_side, "per_dataset": per_dataset,
            "all": summarise(pooled)}


def summarise(values: dict[str, list[float]]) -> dict[str, Any]:
    finite = {key: [v for v in numbers if math.isfinite(v)] for key, numbers in values.items()}
    means = {key: float(np.mean(numbers)) for key, numbers in finite.items()}
    return {"planes": len(values["psnr_model"]),
            "psnr": {method: means[f"psnr_{method}"] for method in METHODS},
            "ssim": {method: means[f"ssim_{method}"] for method in METHODS},
            "psnr_gain_vs_bicubic_db": means["psnr_model"] - means["psnr_bicubic"],
            "psnr_gain_vs_lanczos_db": means["psnr_model"] - means["psnr_lanczos"]}
