"""What ``medfm finetune`` learns from, decoded once at the base model's working size.

Segmenters: a manifest's ``image,mask`` rows or a folder of saved annotation versions (read
and checked as ``medfm train seg`` does), each plane through the model's own preprocessing. Encoders: a manifest's image column and a
label column. Both are split by a hash of the image (or ``--group-column``) into training
and validation parts; validation only chooses which state is kept, it never trains.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medfm.catalog.loading import load_record
from medfm.errors import MedfmError, display_path
from medfm.io.formats import load
from medfm.io.label_maps import read_mask
from medfm.models.preprocess import prepare_plane
from medfm.train.seg_data import Case, split_cases

#: ``(plane (rows, columns[, C]), mask (rows, columns) bool)`` → the model's input picture and the mask on its output grid.
Framing = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class SegmentationSet:
    """``pictures`` (N, ...) as the model takes them, ``masks`` (N, H, W) bool on its output grid; ``is_val`` (N,) bool."""

    pictures: np.ndarray
    masks: np.ndarray
    is_val: np.ndarray

    def as_cache(self) -> dict[str, np.ndarray]:
        """The layout :func:`medfm.train.interactive.validate` reads (one source, ``data``)."""
        return {"pictures": self.pictures, "masks": self.masks, "is_val": self.is_val,
                "sources": np.array(["data"] * len(self.is_val))}


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(rows, columns)`` bool → ``size`` bool, by area (a pixel is in when most of it was)."""
    soft = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=size, mode="area")
    return (soft[0, 0] > 0.5).numpy()


def interactive_framing(size: int) -> Framing:
    """medfm-interactive's: :func:`prepare_plane` to ``(size, size, 3)`` uint8, the mask to ``(size, size)``."""

    def frame(plane: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        picture = (prepare_plane(plane, size).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return picture, resize_mask(mask, (size, size))

    return frame


def segmentation_set(cases: list[Case], framing: Framing) -> SegmentationSet:
    """Every case (:func:`medfm.train.seg.collect_cases`: a manifest's ``image,mask`` rows or saved annotation
    versions) through ``framing``; a case whose mask is empty there is refused. Every labelled pixel is the structure."""
    train, val = split_cases(cases)
    pictures, masks = [], []
    for case in train + val:
        image = load_record(case.record) if case.record is not None else load(case.image)
        # several annotators' masks: the first (the manifest's ``mask`` column) is the one learnt
        picture, mask = framing(image.frame(0), read_mask(case.masks[0], image.spatial_shape[:2])[:, :, 0].T)
        if not mask.any():
            raise MedfmError(f"{display_path(case.masks[0])}: the mask is empty at the model's working size; "
                             "a promptable model needs a structure to prompt")
        pictures.append(picture)
        masks.append(mask)
    is_val = np.array([False] * len(train) + [True] * len(val))
    return SegmentationSet(np.stack(pictures), np.stack(masks), is_val)


@dataclass
class ClassificationSet:
    """``planes``: one raw 2D plane per image; ``targets`` (N,) class indices into ``labels``; ``is_val`` (N,) bool."""

    planes: list[np.ndarray]
    targets: np.ndarray
    labels: list[str]
    is_val: np.ndarray


def classification_set(manifest: str | os.PathLike, label_column: str, path_column: str = "image") -> ClassificationSet:
    """The images of ``manifest`` (``path_column``, relative to it) with their class in ``label_column``."""
    from medfm.io.manifest import read_manifest
    from medfm.models.encoders.planes import sample_planes

    paths, values = read_manifest(manifest, label_column, path_column)
    if not paths:
        raise MedfmError(f"{display_path(manifest)}: no rows to train on")
    labels = sorted(set(values))
    if len(labels) < 2:
        raise MedfmError(f"{display_path(manifest)}: column {label_column!r} needs at least 2 classes; found {labels}")
    label_of = dict(zip(paths, values))
    train, val = split_cases([Case(path, (), path) for path in paths])  # by image; no masks here
    planes = [sample_planes(load(case.image), max_planes=1)[0] for case in train + val]
    targets = np.array([labels.index(label_of[case.image]) for case in train + val])
    return ClassificationSet(planes, targets, labels, np.array([False] * len(train) + [True] * len(val)))
