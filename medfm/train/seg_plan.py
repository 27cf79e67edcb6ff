"""From a dataset fingerprint to a written plan, nnU-Net style, sized for a CPU.

The rules (each overridable with ``--plan NAME=VALUE``):

- **scale**: keep the native grid unless the median image's longer side exceeds
  ``MAX_SIDE`` pixels; then shrink to it (a CPU cannot afford more pixels per step).
- **patch_size**: the scaled median shape, capped at ``MAX_PATCH`` per side and rounded
  down to a multiple of the network's downsampling factor.
- **batch_size**: as many patches as fit ``PIXELS_PER_BATCH``, from 2 to ``MAX_BATCH``.
- **normalisation**: CT → clip to the foreground's 0.5–99.5 percentiles, then the
  foreground's mean and std (nnU-Net's CT scheme); anything else → z-score per image.
- **augmentation**: flips, 90° rotations, intensity scale and shift, Gaussian noise.
"""

from __future__ import annotations

import json
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
AUGMENTATION = {"flip": 0.5, "rotate90": 0.5, "intensity_scale": 0.3, "intensity_shift": 0.3, "noise": 0.15}


def architecture_config(name: str) -> dict[str, Any]:
    architectures = list_auto_architectures()
    if name not in architectures:
        raise MedfmError(f"unknown architecture {name!r}; choose one of: {', '.join(architectures)}")
    return architectures[name]


def make_plan(fingerprint: Mapping[str, Any], labels: Mapping[int, str], architecture: str | None = None,
              overrides: Mapping[str, str] | None = None) -> Plan:
    """The plan for a dataset with this ``fingerprint``; ``overrides`` (JSON values as text) replace any setting."""
    architecture = architecture or DEFAULT_ARCHITECTURE
    factor = downsampling_factor(architecture_config(architecture))
    median = fingerprint["shape"]["median"]
    scale = min(1.0, MAX_SIDE / max(median))
    patch = [max(factor, min(MAX_PATCH, int(side * scale)) // factor * factor) for side in median]
    ct = fingerprint["modality"] == ["CT"]
    intensity = fingerprint["intensity"]
    settings: dict[str, Any] = {
        "dims": fingerprint["dims"], "in_channels": fingerprint["channels"], "labels": dict(labels),
        "scale": round(scale, 4), "patch_size": patch,
        "batch_size": max(2, min(MAX_BATCH, PIXELS_PER_BATCH // (patch[0] * patch[1]))),
        "normalisation": "ct_clip" if ct else "zscore", "architecture": architecture,
        "augmentation": dict(AUGMENTATION),
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
