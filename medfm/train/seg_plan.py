"""From a dataset fingerprint to a written plan, nnU-Net style, sized for a CPU.

The rules (each overridable with ``--plan NAME=VALUE``):

- **dims**: 2D images and video frames are 2D samples. Volumes are trained in 3D, unless
  the slice axis is more than ``MAX_ANISOTROPY_3D`` times coarser than the finest axis, or
  the median volume has fewer than ``MIN_SLICES_3D`` slices, or the architecture is 2D only
  (its config's ``dims``): then each slice is a 2D sample (nnU-Net would add an anisotropic
  3D net; on a CPU the 2D one is what the budget affords).
- **scale** (2D): keep the native grid unless the median image's longer side exceeds
  ``MAX_SIDE`` pixels; then shrink to it (a CPU cannot afford more pixels per step).
- **target_spacing** (3D): the median voxel size per axis (nnU-Net's fullres rule), made
  coarser along every axis by the same factor if the median volume resampled to it would
  exceed ``MAX_SIDE_3D`` voxels along a side.
- **patch_size**: the working median shape, capped at ``MAX_PATCH`` (2D) or
  ``MAX_PATCH_3D`` (3D) per side and rounded down to a multiple of the network's
  downsampling factor.
- **batch_size**: as many patches as fit ``PIXELS_PER_BATCH`` (2D) or
  ``VOXELS_PER_BATCH`` (3D), from 2 to ``MAX_BATCH``.
- **normalisation**: CT → clip to the foreground's 0.5–99.5 percentiles, then the
  foreground's mean and std (nnU-Net's CT scheme); anything else → z-score per image.
- **augmentation**: flips, 90° rotations, intensity scale and shift, Gaussian noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from medfm.errors import MedfmError
from medfm.models.automatic.network import downsampling_factor
from medfm.models.automatic.plan import Plan
from medfm.models.registry import list_auto_architectures

DEFAULT_ARCHITECTURE = "auto-unet"
MAX_SIDE = 512
MAX_PATCH = 128
PIXELS_PER_BATCH = 8 * 128 * 128
MAX_BATCH = 16
MAX_ANISOTROPY_3D = 3.0
MIN_SLICES_3D = 16
MAX_SIDE_3D = 128
MAX_PATCH_3D = 64
VOXELS_PER_BATCH = 2 * 64 * 64 * 64
AUGMENTATION = {"flip": 0.5, "rotate90": 0.5, "intensity_scale": 0.3, "intensity_shift": 0.3, "noise": 0.15}


def architecture_config(name: str) -> dict[str, Any]:
    architectures = list_auto_architectures()
    if name not in architectures:
        raise MedfmError(f"unknown architecture {name!r}; choose one of: {', '.join(architectures)}")
    return architectures[name]


def volumetric(median_shape: list[float], median_spacing: list[float]) -> bool:
    """Whether volumes of this median shape and spacing (i, j, k) are trained in 3D (see the module's rules)."""
    return max(median_spacing) / min(median_spacing) <= MAX_ANISOTROPY_3D and min(median_shape) >= MIN_SLICES_3D


def make_plan(fingerprint: Mapping[str, Any], labels: Mapping[int, str], architecture: str | None = None,
              overrides: Mapping[str, str] | None = None, label_fusion: str | None = None) -> Plan:
    """The plan for a dataset with this ``fingerprint``; ``overrides`` (JSON values as text) replace any setting.

    ``label_fusion`` records how several masks per image were fused (None: one mask each).
    """
    architecture = architecture or DEFAULT_ARCHITECTURE
    factor = downsampling_factor(architecture_config(architecture))
    median, spacing = fingerprint["shape"]["median"], fingerprint["spacing_mm"]["median"]
    volumes_in_3d = 3 in architecture_config(architecture).get("dims", [2, 3])
    dims = 3 if fingerprint["kind"] == "volume" and volumetric(median, spacing) and volumes_in_3d else 2
    target_spacing = None
    if dims == 3:
        coarsen = max(1.0, max(median) / MAX_SIDE_3D)
        target_spacing = [round(s * coarsen, 4) for s in spacing]
        working = [n * s / t for n, s, t in zip(median, spacing, target_spacing)]
        scale, cap, budget = 1.0, MAX_PATCH_3D, VOXELS_PER_BATCH
    else:
        planar = median[:2]
        scale = min(1.0, MAX_SIDE / max(planar))
        working, cap, budget = [side * scale for side in planar], MAX_PATCH, PIXELS_PER_BATCH
    patch = [max(factor, min(cap, int(side)) // factor * factor) for side in working]
    ct = fingerprint["modality"] == ["CT"]
    intensity = fingerprint["intensity"]
    settings: dict[str, Any] = {
        "dims": dims, "in_channels": fingerprint["channels"], "labels": dict(labels),
        "scale": round(scale, 4), "target_spacing": target_spacing, "patch_size": patch,
        "batch_size": max(2, min(MAX_BATCH, budget // math.prod(patch))),
        "normalisation": "ct_clip" if ct else "zscore", "architecture": architecture,
        "augmentation": dict(AUGMENTATION), "label_fusion": label_fusion,
    }
    if ct:
        settings.update(clip=(intensity["foreground_percentile_0_5"], intensity["foreground_percentile_99_5"]),
                        mean=intensity["foreground_mean"], std=max(intensity["foreground_std"], 1e-6))
    for name, text in (overrides or {}).items():
        try:
            settings[name] = json.loads(text)
        except ValueError:
            settings[name] = text
    if settings["architecture"] != architecture:
        architecture_config(settings["architecture"])
    return Plan.from_dict(settings)
