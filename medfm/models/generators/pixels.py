"""Images in and out of a generator: one plane as ``(C, rows, columns)`` pixels in [0, 1], and back.

8-bit images are divided by 255 (a generated PNG reads back as it was written); other
dtypes (CT in HU, 16-bit MR) go through the robust window of :mod:`medfm.models.preprocess`.
Grey images have one channel, colour images three (alpha is dropped). An image–mask pair generator's
sample has one more channel, its mask (see :mod:`medfm.train.generator_data`).
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


def split_mask(planes: np.ndarray, labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A pair generator's ``(C + 1, S, S)`` sample in [0, 1] as the ``(C, S, S)`` image and the ``(S, S)`` label
    map: the last channel's grey level rounded to the nearest of 0, 1/K, ..., 1 for the K ``labels``."""
    levels = np.array([0, *labels])
    index = np.clip(np.rint(np.asarray(planes[-1]) * len(labels)), 0, len(labels)).astype(np.int64)
    return np.asarray(planes[:-1]), levels[index]


def label_plane(mask: Image, image: Image, path: str | os.PathLike) -> np.ndarray:
    """A 2D mask's ``(rows, columns)`` label values (as :func:`medfm.io.label_maps.mask_values` reads them); MedfmError
    naming ``path`` unless it lies on ``image``'s grid."""
    from medfm.io.label_maps import mask_values

    plane = mask_values(mask, path)
    if plane.shape != image.spatial_shape or plane.shape[2] != 1:
        raise MedfmError(f"{display_path(path)}: the mask is {'x'.join(map(str, plane.shape[:2]))} but its image is "
                         f"{'x'.join(map(str, image.spatial_shape[:2]))}; masks must lie on their image's grid")
    return np.asarray(plane[:, :, 0]).T


def resized_labels(plane: np.ndarray, size: int) -> np.ndarray:
    """``(rows, columns)`` label values as ``(size, size)`` by nearest neighbour (no value is invented)."""
    tensor = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=(size, size), mode="nearest-exact")[0, 0].numpy().astype(plane.dtype)
