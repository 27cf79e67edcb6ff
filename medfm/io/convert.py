"""Format conversion: one image to one file, several DICOM series to one file each; optionally windowed
to 8 bits (a CT to PNG)."""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError
from medfm.io.formats import image_suffix, load_all, output_folder, save, writer_for
from medfm.io.image import Image

DEFAULT_SUFFIX = ".nii.gz"
#: CT windows as ``(center, width)`` in HU: the workbench's preset menu.
WINDOW_PRESETS = {"soft-tissue": (40.0, 400.0), "lung": (-600.0, 1500.0), "bone": (300.0, 1500.0), "brain": (40.0, 80.0)}


def parse_window(text: str) -> tuple[float, float]:
    """``(center, width)`` from a preset name (:data:`WINDOW_PRESETS`) or ``"center,width"``; width > 0."""
    if text.strip().lower() in WINDOW_PRESETS:
        return WINDOW_PRESETS[text.strip().lower()]
    try:
        center, width = (float(v) for v in text.split(","))
    except ValueError:
        raise MedfmError(f"window must be CENTER,WIDTH (e.g. 40,400) or one of {', '.join(WINDOW_PRESETS)}; got {text!r}") from None
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise MedfmError(f"window width must be a positive number and the center finite; got {text!r}")
    return center, width


def apply_window(image: Image, center: float, width: float) -> Image:
    """``image`` as 8-bit grey: ``center - width/2`` and below black, ``center + width/2`` and above white,
    linear in between (the display convention of the workbench)."""
    if image.num_channels > 1:
        raise MedfmError(f"a window applies to grey images; this one has {image.num_channels} channels")
    scaled = (image.array.astype(np.float32) - (center - width / 2)) / width * 255.0
    return image.with_array(np.clip(np.round(scaled), 0, 255).astype(np.uint8))


def series_stem(image: Image, index: int) -> str:
    """A file-name stem from non-identifying series attributes: ``series_003_T1_MPRAGE``."""
    number = image.metadata.get("series_number")
    stem = f"series_{int(number):03d}" if isinstance(number, int) else f"series_{index + 1:03d}"
    description = re.sub(r"[^A-Za-z0-9]+", "_", str(image.metadata.get("series_description", ""))).strip("_")
    return f"{stem}_{description[:40]}" if description else stem


def _split_suffix(path: Path) -> tuple[str, str]:
    writer_for(path)  # refuse an unwritable name before reading anything
    suffix = image_suffix(path)
    return path.name[: -len(suffix)], path.name[-len(suffix):]


def convert(source: str | os.PathLike, destination: str | os.PathLike,
            window: tuple[float, float] | None = None) -> list[Path]:
    """Convert ``source`` to ``destination``'s format and return the files written.

    When ``source`` holds several series, ``destination`` is either a folder (one
    ``series_NNN_description.nii.gz`` each, created if its parent exists) or a file name
    whose stem gets the series stem appended. ``window`` ``(center, width)`` maps the values
    to 8-bit grey first (:func:`apply_window`), as formats like PNG need for a CT.
    """
    images = load_all(source)
    if window is not None:
        images = [apply_window(image, *window) for image in images]
    destination = Path(destination)
    if len(images) == 1 and not destination.is_dir():
        return [save(images[0], destination)]
    into_folder = destination.is_dir() or not destination.suffix
    if into_folder:
        targets = [destination / (series_stem(im, n) + DEFAULT_SUFFIX) for n, im in enumerate(images)]
    else:
        stem, suffix = _split_suffix(destination)
        targets = [destination.with_name(f"{stem}_{series_stem(im, n)}{suffix}") for n, im in enumerate(images)]
    seen: set[Path] = set()
    for n, target in enumerate(targets):
        if target in seen:  # two series with the same number and description
            targets[n] = target.with_name(f"{n + 1:03d}_{target.name}")
        seen.add(targets[n])
    with output_folder(destination) if into_folder else nullcontext():
        return [save(image, target) for image, target in zip(images, targets)]
