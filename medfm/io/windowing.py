"""Which intensity window an image is shown (or handed to a model) at: one rule for the workbench
and the language-model inputs.

:func:`initial_window` takes the DICOM header's first WindowCenter/WindowWidth, else the
modality's preset (:data:`MODALITY_WINDOWS`), else :func:`default_window` (the 0.5th to 99.5th
percentile of the image's values).
"""

from __future__ import annotations

import numpy as np

from medfm.io.image import Image

#: Windows ``(center, width)`` for a modality when its header names none.
MODALITY_WINDOWS = {"CT": (40.0, 400.0)}
#: Voxels sampled to find an image's default window.
SAMPLE_VOXELS = 1_000_000


def initial_window(image: Image) -> tuple[float, float, str]:
    """The window an image opens at, ``(center, width, source)``: its DICOM header's first
    WindowCenter/WindowWidth (``"header"``), else its modality's preset (``"preset"``), else
    :func:`default_window` (``"auto"``)."""
    center, width = (first_number(image.metadata.get(key)) for key in ("window_center", "window_width"))
    if center is not None and width is not None and width > 0:
        return center, width, "header"
    if image.modality in MODALITY_WINDOWS:
        return (*MODALITY_WINDOWS[image.modality], "preset")
    return (*default_window(image), "auto")


def first_number(value: object) -> float | None:
    """A header value's first number (WindowCenter may hold several), ``None`` if it has none."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def default_window(image: Image) -> tuple[float, float]:
    """Window ``(center, width)`` spanning the 0.5th to 99.5th percentile of the image's values."""
    # a regular subsample (every step-th voxel along each axis, a view: nothing of the whole
    # image is copied) gives the same percentiles much faster
    step = max(1, int(np.ceil((image.array.size / SAMPLE_VOXELS) ** (1 / 3))))
    values = image.array[::step, ::step, ::step]
    low, high = (float(v) for v in np.percentile(values.astype(np.float32), [0.5, 99.5]))
    return (low + high) / 2, max(high - low, 1e-6)
