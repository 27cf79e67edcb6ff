"""Raw planes → 8-bit RGB pictures, the input that the field's image transforms expect.

open_clip's and timm's transforms were made for photographs (PIL images, 0–255), so
encoders from those libraries first turn each plane into an ``(rows, columns, 3)`` uint8
array by one documented rule, :func:`to_rgb_uint8`:

* ``uint8`` planes are kept as they are; ``bool`` planes become 0 / 255;
* any other dtype is min–max scaled over the plane (all channels together, so colours
  keep their balance) to 0–255; a constant plane becomes 0; NaN counts as the minimum;
* a ``window=(low, high)`` (a CT window in HU, say) replaces min–max: values are clipped
  to it and scaled to 0–255, whatever the dtype;
* grey planes are repeated to 3 channels; RGBA planes lose their alpha.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image as PILImage

from medfm.errors import MedfmError
from medfm.io.image import Image
from medfm.models.encoders.base import Encoder

#: An intensity window ``(low, high)`` in the image's own units.
Window = tuple[float, float]


def check_plane(plane: np.ndarray) -> np.ndarray:
    """``plane`` as ``(rows, columns)`` or ``(rows, columns, 3)``, refusing what no encoder takes.

    Accepts ``(rows, columns)`` and ``(rows, columns, C)`` with C = 1 (grey), 3 (RGB) or 4
    (RGBA, whose alpha is dropped); raises :class:`MedfmError` for empty planes and other
    channel counts.
    """
    array = np.asarray(plane)
    if array.ndim == 3 and array.shape[2] in (1, 4):
        array = array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise MedfmError(
            f"a plane must be (rows, columns) or (rows, columns, C) with C = 1, 3 or 4; got shape {array.shape}"
        )
    if array.size == 0:
        raise MedfmError(f"empty plane (shape {array.shape})")
    return array


def to_rgb_uint8(plane: np.ndarray, window: Window | None = None) -> np.ndarray:
    """A raw plane (see :func:`check_plane`) → ``(rows, columns, 3)`` uint8 by the module's rule."""
    array = check_plane(plane)
    if window is not None:
        low, high = float(window[0]), float(window[1])
        if not high > low:
            raise MedfmError(f"window must be (low, high) with high > low; got {tuple(window)}")
        scaled = (np.clip(array.astype(np.float64), low, high) - low) * (255.0 / (high - low))
        array = np.rint(np.nan_to_num(scaled, nan=0.0)).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        values = array.astype(np.float64)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        array = np.rint(scaled).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def pixel_batch(planes: Sequence[np.ndarray], transform: Callable[[PILImage.Image], torch.Tensor]) -> torch.Tensor:
    """``planes`` through :func:`to_rgb_uint8` and a library's PIL transform → ``(N, 3, H, W)``."""
    return torch.stack([transform(PILImage.fromarray(to_rgb_uint8(plane))) for plane in planes])


#: Planes encoded per volume or video, at most.
MAX_PLANES = 16


def sample_planes(image: Image, max_planes: int = MAX_PLANES, window: Window | None = None) -> list[np.ndarray]:
    """Up to ``max_planes`` evenly spaced planes of ``image`` (see the module), as the
    encoders take them: ``(rows, columns)`` or ``(rows, columns, 3)``; with ``window``,
    already scaled to ``(rows, columns, 3)`` uint8. Raises :class:`MedfmError` for planes no
    encoder takes (empty, or a channel count other than 1, 3, 4)."""
    if max_planes < 1:
        raise MedfmError(f"max_planes must be at least 1; got {max_planes}")
    slices, frames = image.shape[2], image.shape[3]
    count = slices * frames
    taken = min(count, max_planes)
    chosen = [int((index + 0.5) * count / taken) for index in range(taken)]
    planes = [check_plane(image.frame(flat % slices, flat // slices)) for flat in chosen]
    return [to_rgb_uint8(plane, window) for plane in planes] if window is not None else planes


def aggregate(embeddings: np.ndarray) -> np.ndarray:
    """``(N, D)`` unit plane embeddings → ``(D,)`` float32: their mean, re-normalised."""
    mean = embeddings.astype(np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    # Opposite planes can cancel out exactly; the first plane then stands for the image.
    return (mean / norm if norm > 1e-12 else embeddings[0]).astype(np.float32)


def embed_image(image: Image, encoder: Encoder, *, max_planes: int = MAX_PLANES,
                window: Window | None = None) -> np.ndarray:
    """``(D,)`` float32 unit embedding of ``image`` (2D, volume or video); no caching."""
    return aggregate(encoder.encode_planes(sample_planes(image, max_planes, window)))
