"""Format conversion: one image to one file, several DICOM series to one file each."""

from __future__ import annotations

import os
import re
from pathlib import Path

from medfm.io.formats import image_suffix, load_all, save, writer_for
from medfm.io.image import Image

DEFAULT_SUFFIX = ".nii.gz"


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


def convert(source: str | os.PathLike, destination: str | os.PathLike) -> list[Path]:
    """Convert ``source`` to ``destination``'s format and return the files written.

    When ``source`` holds several series, ``destination`` is either a folder (one
    ``series_NNN_description.nii.gz`` each) or a file name whose stem gets the series
    stem appended.
    """
    images = load_all(source)
    destination = Path(destination)
    if len(images) == 1 and not destination.is_dir():
        return [save(images[0], destination)]
    if destination.is_dir() or not destination.suffix:
        targets = [destination / (series_stem(im, n) + DEFAULT_SUFFIX) for n, im in enumerate(images)]
    else:
        stem, suffix = _split_suffix(destination)
        targets = [destination.with_name(f"{stem}_{series_stem(im, n)}{suffix}") for n, im in enumerate(images)]
    seen: set[Path] = set()
    for n, target in enumerate(targets):
        if target in seen:  # two series with the same number and description
            targets[n] = target.with_name(f"{n + 1:03d}_{target.name}")
        seen.add(targets[n])
    return [save(image, target) for image, target in zip(images, targets)]
