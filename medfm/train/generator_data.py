"""Training data of ``medfm train generator``: images and their conditions from a manifest or a folder.

- A CSV manifest (:func:`medfm.io.manifest.read_rows`): an ``image`` column (paths relative to
  the manifest) and, for class or text conditioning, the column named by ``column``
  (default ``label`` for classes, ``text`` for texts); rows with an empty condition are refused.
- A folder: every image under it; with conditioning, the condition of an image is the name of
  the sub-folder of DATA it lies in (``DATA/melanoma/x.png`` is class ``melanoma``).

With ``masks`` (image–mask pair generators, manifests only), the manifest's ``mask`` column gives
each image's label map, read as ``medfm train seg`` reads masks (one label value per pixel, the
image's grid). The generator learns it as one extra channel: label value number i of the K values
found (0 is background) becomes the grey level i/K, so that a sample's mask is read back by
rounding (:func:`medfm.models.generators.pixels.split_mask`).
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
from medfm.models.generators.pixels import label_plane, plane_pixels, resized, resized_labels

#: The manifest columns of the image paths and of the masks of image–mask pair generators.
IMAGE_COLUMN, MASK_COLUMN = "image", "mask"
#: The default condition column by conditioning.
DEFAULT_COLUMNS = {"class": "label", "text": "text"}


@dataclass(frozen=True)
class TrainingItems:
    """Image paths, their conditions (None without conditioning), their masks (pair generators) and a digest
    that names the data."""

    paths: list[Path]
    conditions: list[str | None]
    digest: str
    masks: list[Path] | None = None


def collect(data: str | os.PathLike, condition: str, column: str | None = None, masks: bool = False) -> TrainingItems:
    """The training images of ``data`` (a CSV manifest or a folder) and their conditions (and masks)."""
    data = Path(data)
    if masks and not data.is_file():
        raise MedfmError(f"{display_path(data)}: image–mask pairs come from a CSV manifest with "
                         f"{IMAGE_COLUMN!r} and {MASK_COLUMN!r} columns")
    if data.is_file():
        wanted = None if condition == "none" else column or DEFAULT_COLUMNS[condition]
        columns = (IMAGE_COLUMN,) + ((MASK_COLUMN,) if masks else ()) + ((wanted,) if wanted else ())
        rows = read_rows(data, columns)
        paths, conditions, mask_paths = [], [], []
        for line, row in enumerate(rows, start=2):
            if any(not row[name] for name in columns):
                raise MedfmError(f"{display_path(data)}, line {line}: empty " + " or ".join(repr(c) for c in columns))
            paths.append((data.parent / row[IMAGE_COLUMN]).resolve())
            conditions.append(" ".join(row[wanted].split()) if wanted else None)
            if masks:
                mask_paths.append((data.parent / row[MASK_COLUMN]).resolve())
        digest = hashlib.sha256(data.read_bytes()).hexdigest()
        if masks:
            return _enough(TrainingItems(paths, conditions, digest, mask_paths), data)
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
    return _enough(TrainingItems(paths, conditions, digest), data)


def _enough(items: TrainingItems, data: Path) -> TrainingItems:
    if len(items.paths) < 2:
        raise MedfmError(f"{display_path(data)}: {len(items.paths)} image(s); a generator needs at least 2 to train on")
    return items


def decode(items: TrainingItems, size: int, channels: int | None = None) -> tuple[np.ndarray, int]:
    """``(N, C, size, size)`` uint8 pixels of every training image and C: ``channels``, else 3 if any image is
    colour, else 1. A file that cannot be read as a 2D image stops training with its name."""
    planes = [plane_pixels(load(path), path) for path in items.paths]
    channels = channels or (3 if any(len(p) == 3 for p in planes) else 1)
    pixels = np.stack([np.rint(resized(p, size, channels) * 255.0).astype(np.uint8) for p in planes])
    return pixels, channels


def decode_masks(items: TrainingItems, size: int) -> tuple[np.ndarray, list[int]]:
    """``(N, 1, size, size)`` uint8 mask channels of the pair generator's training images (label value number i
    of the K found as ``round(255 i / K)``, resized by nearest neighbour) and the K label values, ascending."""
    planes = [resized_labels(label_plane(load(mask), load(image), mask), size)
              for image, mask in zip(items.paths, items.masks or [], strict=True)]
    labels = sorted({int(v) for plane in planes for v in np.unique(plane)} - {0})
    if not labels:
        raise MedfmError("every mask is empty; a pair generator needs masks with a structure")
    levels = np.array([0, *labels])
    # every value is one of the levels, so its rank among them is its index
    return np.stack([np.rint(np.searchsorted(levels, p) * 255.0 / len(labels)).astype(np.uint8)[None] for p in planes]), labels
