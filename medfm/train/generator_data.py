"""Training data of ``medfm train generator``: images and their conditions from a manifest or a folder.

- A CSV manifest (:func:`medfm.io.manifest.read_rows`): an ``image`` column (paths relative to
  the manifest) and, for class or text conditioning, the column named by ``column``
  (default ``label`` for classes, ``text`` for texts); rows with an empty condition are refused.
- A folder: every image under it; with conditioning, the condition of an image is the name of
  the sub-folder of DATA it lies in (``DATA/melanoma/x.png`` is class ``melanoma``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.formats import image_suffix, load
from medfm.io.manifest import read_rows
from medfm.models.generators.pixels import plane_pixels, resized

#: The manifest column of the image paths.
IMAGE_COLUMN = "image"
#: The default condition column by conditioning.
DEFAULT_COLUMNS = {"class": "label", "text": "text"}


@dataclass(frozen=True)
class TrainingItems:
    """Image paths, their conditions (None without conditioning) and a digest that names the data."""

    paths: list[Path]
    conditions: list[str | None]
    digest: str


def collect(data: str | os.PathLike, condition: str, column: str | None = None) -> TrainingItems:
    """The training images of ``data`` (a CSV manifest or a folder) and their conditions."""
    data = Path(data)
    if data.is_file():
        wanted = None if condition == "none" else column or DEFAULT_COLUMNS[condition]
        rows = read_rows(data, (IMAGE_COLUMN,) + ((wanted,) if wanted else ()))
        paths, conditions = [], []
        for line, row in enumerate(rows, start=2):
            if not row[IMAGE_COLUMN] or (wanted and not row[wanted]):
                raise MedfmError(f"{display_path(data)}, line {line}: empty {IMAGE_COLUMN!r}"
                                 + (f" or {wanted!r}" if wanted else ""))
            paths.append((data.parent / row[IMAGE_COLUMN]).resolve())
            conditions.append(" ".join(row[wanted].split()) if wanted else None)
        digest = hashlib.sha256(data.read_bytes()).hexdigest()
    elif data.is_dir():
        paths = sorted(p for p in data.rglob("*") if p.is_file() and image_suffix(p) and not p.name.startswith("."))
        if condition != "none" and any(p.parent == data for p in paths):
            raise MedfmError(f"{display_path(data)}: with --condition {condition}, images go in one sub-folder per "
                             "condition (DATA/NAME/image.png), or give a manifest")
        conditions = [None if condition == "none" else p.relative_to(data).parts[0] for p in paths]
        listing = "\n".join(f"{p.relative_to(data)}\t{p.stat().st_size}\t{c}" for p, c in zip(paths, conditions))
        digest = hashlib.sha256(listing.encode()).hexdigest()
    else:
        raise MedfmError(f"{display_path(data)}: no such manifest or folder")
    if len(paths) < 2:
        raise MedfmError(f"{display_path(data)}: {len(paths)} image(s); a generator needs at least 2 to train on")
    return TrainingItems(paths, conditions, digest)


def decode(items: TrainingItems, size: int, channels: int | None = None) -> tuple[np.ndarray, int]:
    """``(N, C, size, size)`` uint8 pixels of every training image and C: ``channels``, else 3 if any image is
    colour, else 1. A file that cannot be read as a 2D image stops training with its name."""
    planes = [plane_pixels(load(path), path) for path in items.paths]
    channels = channels or (3 if any(len(p) == 3 for p in planes) else 1)
    pixels = np.stack([np.rint(resized(p, size, channels) * 255.0).astype(np.uint8) for p in planes])
    return pixels, channels
