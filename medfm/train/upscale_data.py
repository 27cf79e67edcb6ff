"""Training and held-out material for super-resolution: sources, a split by group, luminance planes, crops.

``DATA`` is any mix of folders and CSV manifests. A manifest (or a folder holding ``manifest.csv``,
as every ``../shared/data`` set does) lists its images in the ``image`` or ``file`` column, so masks
beside them are never taken for images; a group column (``subject_group``, ``split_group``,
``case_id``, ``subject``, ``patient_id``) keeps one subject's images on one side of the split. A
folder without a manifest gives every image and video under it, each its own group.

The split is fixed by the group's name alone (sha256, :data:`HELD_OUT_FRACTION` held out), so
training and ``medfm evaluate upscale`` agree on it without a split file.

Low-resolution inputs are made by **area (box) averaging** of the high-resolution crop over
``scale × scale`` blocks — a detector with pixels ``scale`` times larger — rather than bicubic
downsampling, whose sharpening lobes a real acquisition does not have.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io import load
from medfm.io.formats import image_suffix
from medfm.io.manifest import read_rows
from medfm.tasks.upscale import RGB_TO_YCBCR, value_window

HELD_OUT_FRACTION = 0.15
PATH_COLUMNS = ("image", "file")
GROUP_COLUMNS = ("subject_group", "split_group", "case_id", "subject", "patient_id")


@dataclass(frozen=True)
class Source:
    """One image or video for training or evaluation: its ``dataset`` (the DATA entry's name) and ``group``."""

    path: Path
    dataset: str
    group: str

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha256(f"{self.dataset}/{self.group}".encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT_FRACTION


def _from_manifest(manifest: Path, dataset: str) -> list[Source]:
    rows = read_rows(manifest)
    path_column = next((c for c in PATH_COLUMNS if c in rows[0]), None)
    if path_column is None:
        raise MedfmError(f"{display_path(manifest)}: no image column (one of {', '.join(PATH_COLUMNS)})")
    group_column = next((c for c in GROUP_COLUMNS if rows[0].get(c)), None)
    return [Source(manifest.parent / row[path_column], dataset, row.get(group_column or "", "") or row[path_column])
            for row in rows if row[path_column]]


def find_sources(data: Sequence[str | os.PathLike]) -> list[Source]:
    """Every image or video that ``data`` (folders, manifests) names; MedfmError when there is none."""
    sources: list[Source] = []
    for entry in map(Path, data):
        if entry.is_file() and entry.suffix.lower() == ".csv":
            sources += _from_manifest(entry, entry.parent.name)
        elif (entry / "manifest.csv").is_file():
            sources += _from_manifest(entry / "manifest.csv", entry.name)
        elif entry.is_dir():
            sources += [Source(path, entry.name, str(path.relative_to(entry))) for path in sorted(entry.rglob("*"))
                        if path.is_file() and image_suffix(path)]
        elif entry.is_file():
            sources.append(Source(entry, entry.parent.name, entry.name))
        else:
            raise MedfmError(f"{display_path(entry)}: no such file or folder")
    if not sources:
        raise MedfmError(f"no images or videos found in {', '.join(display_path(p) for p in data)}")
    return sources


def luminance_planes(path: Path) -> tuple[np.ndarray, bool]:
    """``(N, rows, columns)`` float32 luminance in [0, 1] (BT.601 Y for RGB), and whether the planes are
    a video's frames in order (else stills: a photo, or a volume's slices)."""
    image = load(path)
    if image.num_channels not in (1, 3):
        raise MedfmError(f"{display_path(path)}: has {image.num_channels} channels; super-resolution takes grey or RGB")
    low, high = value_window(image.array)
    values = (np.asarray(image.array, np.float32) - low) / (high - low)
    luma = values[..., 0] if image.num_channels == 1 else values @ RGB_TO_YCBCR[0].astype(np.float32)
    planes = luma.reshape(luma.shape[0], luma.shape[1], -1).transpose(2, 1, 0)  # (K·T, rows, columns)
    return np.ascontiguousarray(planes), image.is_2d and image.num_frames > 1


def sample_crops(planes: np.ndarray, video: bool, count: int, size: int, frames: int,
                 rng: np.random.Generator, min_std: float = 0.02) -> np.ndarray:
    """Up to ``count`` ``(frames, size, size)`` uint8 crops: a frame with its neighbours for a video, a
    still repeated otherwise; nearly flat crops (std < ``min_std``: black borders) are skipped."""
    half = frames // 2
    _, rows, columns = planes.shape
    if rows < size or columns < size or (video and len(planes) < frames):
        return np.empty((0, frames, size, size), np.uint8)
    crops = []
    for _ in range(count * 4):
        t = int(rng.integers(half, len(planes) - half)) if video else int(rng.integers(len(planes)))
        y, x = int(rng.integers(rows - size + 1)), int(rng.integers(columns - size + 1))
        stack = planes[t - half: t + half + 1] if video else planes[[t] * frames]
        crop = stack[:, y: y + size, x: x + size]
        if crop[half].std() >= min_std:
            crops.append(np.rint(crop * 255).astype(np.uint8))
        if len(crops) == count:
            break
    return np.stack(crops) if crops else np.empty((0, frames, size, size), np.uint8)


def area_downsample(planes: np.ndarray, scale: int) -> np.ndarray:
    """``(..., H, W)`` → ``(..., H // scale, W // scale)``: the mean of each ``scale × scale`` block."""
    rows, columns = planes.shape[-2] // scale * scale, planes.shape[-1] // scale * scale
    blocks = planes[..., :rows, :columns].reshape(*planes.shape[:-2], rows // scale, scale, columns // scale, scale)
    return blocks.mean(axis=(-3, -1))
