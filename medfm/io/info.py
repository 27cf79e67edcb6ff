"""What ``medfm info`` reports about an image."""

from __future__ import annotations

from typing import Any

import numpy as np

from medfm.io.image import Image

COORDINATES = "RAS+ world mm (NIfTI/nibabel); orientation letters name the direction each voxel axis i, j, k increases toward"


def value_range(array: np.ndarray) -> tuple[float, float] | None:
    if array.size == 0:
        return None
    if array.dtype.kind in "fc":
        finite = array[np.isfinite(array)]
        return (float(finite.min()), float(finite.max())) if finite.size else None
    return (float(array.min()), float(array.max()))


def describe(image: Image, show_phi: bool = False) -> dict[str, Any]:
    """A JSON-ready summary: grid, geometry, modality, value range, what made it (a model's output);
    identifiers only if asked."""
    summary: dict[str, Any] = {
        "shape": list(image.shape),
        "axes": "I, J, K, T, C",
        "dtype": str(image.array.dtype),
        "modality": image.modality,
        "num_slices": image.spatial_shape[2],
        "num_frames": image.num_frames,
        "num_channels": image.num_channels,
        "spacing_mm": [round(s, 6) for s in image.spacing],
        "origin_mm": [round(v, 6) for v in image.origin],
        "orientation": image.orientation,
        "coordinate_system": COORDINATES,
        "affine": np.round(image.affine, 6).tolist(),
        "value_range": value_range(image.array),
        "metadata": image.metadata,
    }
    if image.provenance is not None:
        summary["provenance"] = image.provenance.to_dict()
    if show_phi:
        summary["phi"] = image.phi
    return summary
