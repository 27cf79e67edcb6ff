"""The edit gate: how far an edited image, and its edited region, lie from the generator's training data.

Scores are frd-score's out-of-distribution measure (:func:`medfm.eval.frd.ood_scores`): the
Euclidean distance of an image's FRDv1 radiomic features, z-scored with reference
statistics, from the reference mean. Training stores two references in the generator's
config (``quality``): ``image``, the training images whole, and ``region``, the same images
inside random boxes of a quarter to a half of the side (regions of the size edits touch).
An edit is flagged when either score is above its reference's threshold (the reference's
own scores' mean + 1.645 SD, frd-score's 95th percentile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.eval.frd import fit_ood_reference, ood_scores
from medfm.eval.radiomics_features import FRD_FEATURE_CLASSES, extract
from medfm.io.image import Image


def _image(pixels: np.ndarray) -> Image:
    """``(C, S, S)`` pixels in [0, 1] as a 2D medfm Image (0-255 values, nominal 1 mm pixels)."""
    array = np.asarray(pixels, np.float32).transpose(2, 1, 0)[:, :, None, None, :] * 255.0
    return Image(np.ascontiguousarray(array), np.eye(4))


def radiomic_features(pixels: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """``(N, F)`` FRDv1 features of ``(N, C, S, S)`` pixels in [0, 1] (colour as luminance), inside ``(N, S, S)``
    ``masks`` when given (non-zero is inside); a row of NaN where an image has no features (a tiny region)."""
    rows: list[np.ndarray | None] = []
    for index, plane in enumerate(pixels):
        mask = None if masks is None else np.ascontiguousarray(np.asarray(masks[index]).T[:, :, None])
        try:
            _, values = extract(_image(plane), mask, tuple(FRD_FEATURE_CLASSES), Path(f"image {index}"))
        except MedfmError:
            values = None
        rows.append(values)
    width = next((len(r) for r in rows if r is not None), 0)
    return np.stack([np.full(width, np.nan) if r is None else r for r in rows]) if width else np.zeros((len(rows), 0))


def random_boxes(count: int, size: int, seed: int) -> np.ndarray:
    """``(count, size, size)`` uint8 masks, each one box with sides between a quarter and a half of ``size``."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), np.uint8)
    for mask in masks:
        height, width = rng.integers(size // 4, size // 2 + 1, 2)
        top, left = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
        mask[top:top + height, left:left + width] = 1
    return masks


def fit_quality_reference(pixels: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The ``quality`` entry of a generator config from ``(N, C, S, S)`` training pixels in [0, 1]."""
    whole = radiomic_features(pixels)
    regions = radiomic_features(pixels, random_boxes(len(pixels), pixels.shape[-1], seed))
    return {"image": fit_ood_reference(whole[np.isfinite(whole).any(axis=1)]),
            "region": fit_ood_reference(regions[np.isfinite(regions).any(axis=1)]),
            "score": "Euclidean distance of z-scored FRDv1 radiomic features from the training mean (frd-score's OOD score)"}


def assess(quality: dict[str, Any], pixels: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The gate's scores of one edited image ``(C, S, S)`` and of its region ``mask`` ``(S, S)``: each score,
    its threshold and whether it is above; ``flagged`` when either is (or a score cannot be computed)."""
    result: dict[str, Any] = {}
    for part, masks in (("image", None), ("region", np.asarray(mask)[None])):
        features = radiomic_features(np.asarray(pixels)[None], masks)
        score = float(ood_scores(quality[part], features)[0]) if features.shape[1] else float("nan")
        threshold = float(quality[part]["threshold"])
        result[part] = {"ood_score": None if not np.isfinite(score) else score, "threshold": threshold,
                        "above_threshold": not np.isfinite(score) or score > threshold}
    result["flagged"] = result["image"]["above_threshold"] or result["region"]["above_threshold"]
    return result
