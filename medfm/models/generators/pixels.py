"""Images in and out of a generator: one plane as ``(C, rows, columns)`` pixels in [0, 1], and back.

8-bit images are divided by 255 (a generated PNG reads back as it was written); other
dtypes (CT in HU, 16-bit MR) go through the robust window of :mod:`medfm.models.preprocess`.
Grey images have one channel, colour images three (alpha is dropped).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError, display_path
from medfm.io.image import Image
from medfm.models.preprocess import ROBUST_PERCENTILES


def plane_pixels(image: Image, path: str | os.PathLike) -> np.ndarray:
    """A 2D image's ``(C, rows, columns)`` float32 pixels in [0, 1], C = 1 (grey) or 3 (colour)."""
    if not image.is_2d or image.num_frames > 1:
        raise MedfmError(f"{display_path(path)}: is {image.shape[:4]} (I, J, K, T); generators take 2D images")
    if image.num_channels == 2 or image.num_channels > 4:
        raise MedfmError(f"{display_path(path)}: has {image.num_channels} channels; generators take grey or RGB images")
    planes = np.asarray(image.array[:, :, 0, 0, :3 if image.num_channels >= 3 else 1]).transpose(2, 1, 0)
    if planes.dtype == np.uint8:
        return planes.astype(np.float32) / 255.0
    values = planes.astype(np.float32)
    low, high = np.percentile(values, ROBUST_PERCENTILES)
    return np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)


def resized(pixels: np.ndarray, size: int, channels: int) -> np.ndarray:
    """``(C, rows, columns)`` pixels as ``(channels, size, size)``: antialiased bilinear resize to a square (the
    whole field of view kept), grey repeated to colour or colour to BT.601 luminance as ``channels`` asks."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
    if tuple(tensor.shape[-2:]) != (size, size):
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    planes = tensor[0].clamp(0.0, 1.0).numpy()
    if len(planes) == channels:
        return planes
    if channels == 3:
        return np.repeat(planes, 3, axis=0)
    from medfm.eval.radiomics_features import LUMINANCE_WEIGHTS

    return np.tensordot(np.asarray(LUMINANCE_WEIGHTS, np.float32), planes, axes=1)[None]


def to_image(pixels: np.ndarray) -> Image:
    """``(C, S, S)`` pixels in [0, 1] as an 8-bit 2D medfm Image (nominal 1 mm pixels)."""
    array = np.rint(np.clip(np.asarray(pixels), 0.0, 1.0) * 255.0).astype(np.uint8).transpose(2, 1, 0)
    image = Image(np.ascontiguousarray(array[:, :, None, None, :]), np.eye(4))
    image.metadata["spacing_known"] = False
    return image
