"""Measurements of a structure in an image: the numbers a reader quotes beside a contour."""

from __future__ import annotations

from typing import Any

import numpy as np

from medfm.io import Image


def roi_statistics(image: Image, labels: np.ndarray, label: int, k: int, t: int) -> dict[str, Any]:
    """Statistics of structure ``label`` of ``labels`` (``(I, J, K, T)``, on ``image``'s grid).

    ``"plane"``: on plane ``(k, t)``, its voxels, area in mm² and the image's mean and standard
    deviation inside it; ``"structure"``: the same over every plane of frame ``t``, with the
    volume in mL instead of the area. Sizes in mm are ``None`` when the spacing is not a
    measurement (a photograph); statistics of an empty region are ``None``. Grey images only.
    """
    known = bool(image.metadata.get("spacing_known", True))
    sx, sy, sz = image.spacing
    values = image.array[..., t, 0]
    inside = labels[:, :, :, t] == label

    def stats(region: np.ndarray, selected: np.ndarray) -> dict[str, Any]:
        picked = region[selected].astype(np.float64)
        count = int(picked.size)
        return {"voxels": count, "mean": float(picked.mean()) if count else None,
                "sd": float(picked.std(ddof=1)) if count > 1 else None}

    plane = stats(values[:, :, k], inside[:, :, k])
    plane["area_mm2"] = plane["voxels"] * sx * sy if known else None
    whole = stats(values, inside)
    whole["volume_ml"] = whole["voxels"] * sx * sy * sz / 1000.0 if known and image.shape[2] > 1 else None
    return {"label": label, "plane": plane, "structure": whole}
