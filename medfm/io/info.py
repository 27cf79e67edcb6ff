"""What ``medfm info`` reports about an image."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from medfm.errors import display_path
from medfm.io.image import Image
from medfm.io.limits import DecompressionBombError

COORDINATES = "RAS+ world mm (NIfTI/nibabel); orientation letters name the direction each voxel axis i, j, k increases toward"


def value_range(array: np.ndarray) -> tuple[float, float] | None:
    if array.size == 0:
        return None
    if array.dtype.kind in "fc":
        finite = array[np.isfinite(array)]
        return (float(finite.min()), float(finite.max())) if finite.size else None
    return (float(array.min()), float(array.max()))


def describe(image: Image, show_phi: bool = False, voxels_read: bool = True) -> dict[str, Any]:
    """A JSON-ready summary: grid, geometry, modality, value range, what made it (a model's output);
    identifiers only if asked. ``voxels_read=False`` describes a header-only image (:func:`probe_all`):
    no value range."""
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
        "value_range": value_range(image.array) if voxels_read else None,
        "metadata": image.metadata,
    }
    if image.provenance is not None:
        summary["provenance"] = image.provenance.to_dict()
    if show_phi:
        summary["phi"] = image.phi
    return summary


def describe_path(path: str | os.PathLike, show_phi: bool = False) -> list[dict[str, Any]]:
    """One summary per image that ``path`` holds, as ``medfm info`` prints them.

    A file over the decompression limits (:mod:`medfm.io.limits`) is described from its
    header alone where its format allows, with ``not_decoded`` giving the reason and no
    value range, so describing a file never costs its inflated size.
    """
    from medfm.io.formats import detect_format, load_all, probe_all

    fmt = detect_format(path)
    try:
        images, not_decoded = load_all(path), None
    except DecompressionBombError as exc:
        images, not_decoded = probe_all(path), exc.reason
    summaries = []
    for image in images:
        summary = {"path": display_path(path), "format": fmt.name, **describe(image, show_phi, voxels_read=not_decoded is None)}
        if not_decoded:
            summary["not_decoded"] = not_decoded
        summaries.append(summary)
    return summaries
