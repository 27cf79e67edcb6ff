"""The labelled images ``medfm train seg`` learns from: a CSV manifest ``image,mask`` read, checked and fingerprinted.

Every pair is checked before training starts (the mask exists, has the image's grid and
only declared label values); a bad pair stops everything with one line naming the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.formats import load
from medfm.io.manifest import read_manifest
from medfm.models.automatic.segmenter import planar_pixels

#: Fraction of groups (subjects, or images) held out for validation; training never sees them.
VAL_FRACTION = 0.2
#: Pixels drawn per image for the intensity statistics.
_SAMPLES_PER_IMAGE = 10_000


@dataclass(frozen=True)
class Case:
    """One labelled image: its paths and the group (subject) it belongs to."""

    image: str
    mask: str
    group: str


def parse_labels(text: str | None) -> dict[int, str] | None:
    """``"1=liver,2=tumour"`` → ``{1: "liver", 2: "tumour"}``; None when not given."""
    if not text:
        return None
    labels = {}
    for part in text.split(","):
        value, sep, name = part.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip() or int(value) == 0:
            raise MedfmError(f"--labels takes VALUE=NAME pairs with values above 0 (e.g. 1=liver,2=tumour); got {part!r}")
        labels[int(value)] = name.strip()
    return labels


def read_cases(manifest: str | os.PathLike, group_column: str | None = None,
               only: Mapping[str, str] | None = None) -> list[Case]:
    """The manifest's ``image,mask`` rows (paths relative to it), with their group (the image itself without ``group_column``).

    ``only``: keep the rows whose columns hold these values (``{"split": "dev"}``).
    """
    images, masks = read_manifest(manifest, "mask", "image")
    masks = [str((Path(manifest).parent / mask).resolve()) for mask in masks]
    groups = read_manifest(manifest, group_column, "image")[1] if group_column else images
    keep = np.ones(len(images), dtype=bool)
    for column, value in (only or {}).items():
        keep &= np.array(read_manifest(manifest, column, "image")[1]) == value
    cases = [Case(i, m, g) for i, m, g, k in zip(images, masks, groups, keep) if k]
    if not cases:
        raise MedfmError(f"{display_path(manifest)}: no rows to train on"
                         + (f" with {', '.join(f'{c}={v}' for c, v in only.items())}" if only else ""))
    for case in cases:
        for path in (case.image, case.mask):
            if not Path(path).is_file():
                raise MedfmError(f"{display_path(path)}: listed in {display_path(manifest)} but not found")
    return cases


def split_cases(cases: list[Case], val_fraction: float = VAL_FRACTION) -> tuple[list[Case], list[Case]]:
    """``(train, validation)``: whole groups held out by a hash of the group, so a subject is never on both sides."""
    groups = sorted({case.group for case in cases})
    if len(groups) < 2:
        raise MedfmError(f"training needs at least 2 labelled images (or subjects) to hold one out for validation; got {len(groups)}")
    ranked = sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    held = set(ranked[: max(1, round(len(groups) * val_fraction))])
    return [c for c in cases if c.group not in held], [c for c in cases if c.group in held]


def load_pair(case: Case, labels: Mapping[int, str] | None) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(pixels (C, I, J), mask (I, J) of label values, image)``; MedfmError naming the file for any mismatch."""
    image, mask_image = load(case.image), load(case.mask)
    pixels = planar_pixels(image, case.image)
    if mask_image.spatial_shape != image.spatial_shape:
        raise MedfmError(f"{display_path(case.mask)}: mask shape {mask_image.spatial_shape[:2]} differs from its image's "
                         f"{image.spatial_shape[:2]}")
    mask_channels = planar_pixels(mask_image, case.mask)
    if mask_channels.shape[0] > 1 and not (mask_channels == mask_channels[:1]).all():
        raise MedfmError(f"{display_path(case.mask)}: a colour mask; masks hold one label value per pixel")
    mask = mask_channels[0]
    values = set(np.unique(mask).tolist()) - {0}
    if labels is None:
        return pixels, mask, image
    # black-and-white 8-bit masks store their one structure as 255
    if values <= {255} and len(labels) == 1 and 255 not in labels:
        return pixels, np.where(mask > 0, next(iter(labels)), 0), image
    undeclared = sorted(values - set(labels))
    if undeclared:
        raise MedfmError(f"{display_path(case.mask)}: holds label value {undeclared[0]}, not declared in --labels "
                         f"({', '.join(f'{k}={v}' for k, v in sorted(labels.items()))})")
    return pixels, mask, image


def iterate_pairs(cases: list[Case], labels: Mapping[int, str] | None) -> Iterator[tuple[Case, np.ndarray, np.ndarray, Any]]:
    for case in cases:
        yield (case, *load_pair(case, labels))


def fingerprint(cases: list[Case], labels: Mapping[int, str] | None) -> tuple[dict[str, Any], dict[int, str]]:
    """The dataset's fingerprint (shapes, spacings, channels, modality, intensities, class frequencies) and its labels.

    Without declared ``labels``, a mask set of 0 and 255 (or 0 and 1) is one structure,
    ``{1: "foreground"}``; otherwise every value found becomes a label.
    """
    rng = np.random.default_rng(0)
    shapes, spacings, channels, modalities, samples, foreground, counts = [], [], set(), set(), [], [], {}
    total = 0
    for case, pixels, mask, image in iterate_pairs(cases, labels):
        shapes.append(pixels.shape[1:])
        spacings.append(image.spacing[:2])
        channels.add(pixels.shape[0])
        modalities.add(image.modality)
        flat = pixels.reshape(pixels.shape[0], -1)
        samples.append(flat[:, rng.integers(0, flat.shape[1], _SAMPLES_PER_IMAGE)].astype(np.float32))
        inside = flat[:, mask.reshape(-1) > 0]
        if inside.shape[1]:
            foreground.append(inside[:, rng.integers(0, inside.shape[1], min(_SAMPLES_PER_IMAGE, inside.shape[1]))].astype(np.float32))
        values, number = np.unique(mask, return_counts=True)
        for value, n in zip(values.tolist(), number.tolist()):
            counts[value] = counts.get(value, 0) + n
        total += mask.size
    if len(channels) > 1:
        raise MedfmError(f"the images have different channel counts {sorted(channels)}; convert them to one (grey or RGB)")
    if labels is None:
        found = sorted(set(counts) - {0})
        if not found:
            raise MedfmError("every mask is empty: nothing to learn")
        labels = {1: "foreground"} if found in ([1], [255]) else {v: f"label {v}" for v in found}
        if found == [255]:
            counts = {(1 if k == 255 else k): v for k, v in counts.items()}
    everything = np.concatenate(samples, axis=1)
    inside = np.concatenate(foreground, axis=1) if foreground else everything
    shape_array, spacing_array = np.array(shapes), np.array(spacings)
    record = {
        "cases": len(cases),
        "dims": 2,
        "channels": channels.pop(),
        "modality": sorted(modalities),
        "shape": {"median": np.median(shape_array, axis=0).tolist(), "min": shape_array.min(axis=0).tolist(),
                  "max": shape_array.max(axis=0).tolist()},
        "spacing_mm": {"median": np.median(spacing_array, axis=0).tolist(), "min": spacing_array.min(axis=0).tolist(),
                       "max": spacing_array.max(axis=0).tolist()},
        "intensity": {"mean": float(everything.mean()), "std": float(everything.std()),
                      "foreground_percentile_0_5": float(np.percentile(inside, 0.5)),
                      "foreground_percentile_99_5": float(np.percentile(inside, 99.5)),
                      "foreground_mean": float(inside.mean()), "foreground_std": float(inside.std())},
        "class_frequency": {str(k): counts.get(k, 0) / total for k in [0, *sorted(labels)]},
    }
    return record, labels
