"""Fusing several annotators' masks of one image into one label map: STAPLE or majority vote (SimpleITK).

:func:`fuse_labels` returns the fused label map (the first mask's grid, stamped with
provenance naming the method and the inputs' pixel ids) and, per annotator, sensitivity
and specificity: STAPLE's own estimates (per label for label maps, from SimpleITK's
confusion matrices), or for a majority vote, each mask against the fused one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.formats import load
from medfm.io.image import Image
from medfm.io.label_maps import mask_foreground, mask_values
from medfm.provenance import Provenance, pixels_id

METHODS = ("staple", "majority")


def read_annotations(paths: Sequence[str | os.PathLike]) -> tuple[Image, list[np.ndarray]]:
    """The first mask's image and every mask as an ``(I, J, K)`` array: a binary mask (colour, JPEG-compressed or
    0/255, read as :func:`~medfm.io.label_maps.read_mask` reads masks everywhere) as 0/1, a label map as stored."""
    if len(paths) < 2:
        raise MedfmError(f"label fusion needs at least 2 masks of the same image; got {len(paths)}")
    first, arrays = None, []
    for path in paths:
        image = load(path)
        values = mask_values(image, path)
        if first is not None and image.spatial_shape != first.spatial_shape:
            raise MedfmError(f"{display_path(path)}: shape {image.spatial_shape} differs from {display_path(paths[0])}'s "
                             f"{first.spatial_shape}")
        first = first or image
        binary = values.dtype == np.uint8 and values.max(initial=0) > 127  # mask_foreground's rule for 8-bit masks
        arrays.append(mask_foreground(values).astype(np.uint8) if binary else np.asarray(values))
    return first, arrays


def fuse_labels(paths: Sequence[str | os.PathLike], method: str = "staple") -> tuple[Image, dict[str, Any]]:
    """``(fused label map, report)``; the report has ``method``, ``labels`` and ``annotators`` (path, sensitivity, specificity)."""
    reference, arrays = read_annotations(paths)
    fused, report = fuse_masks(arrays, method)
    annotators = [{"mask": display_path(path), **q} for path, q in zip(paths, report.pop("annotators"))]
    result = reference.with_array(fused)
    result.provenance = Provenance(kind="segmentation", model=f"label-fusion-{method}", weights_sha256=None,
                                   inputs=tuple(pixels_id(a) for a in arrays),
                                   parameters={"method": method, "annotators": len(arrays), "binary": report["binary"]})
    return result, {**report, "annotators": annotators}


def fuse_masks(arrays: Sequence[np.ndarray], method: str = "staple") -> tuple[np.ndarray, dict[str, Any]]:
    """Several annotators' masks of one grid (same shape; binary 0/1 or 0/255, or label values 0..255) → ``(fused
    uint8 map, report)``: a binary set fuses to 0/1; the report has ``method``, ``labels``, ``binary`` and
    ``annotators`` (per mask, in order: sensitivity, specificity)."""
    import SimpleITK as sitk

    if method not in METHODS:
        raise MedfmError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    values = set(np.unique(np.concatenate([np.unique(a) for a in arrays])).tolist())
    binary = values <= {0, 1} or values <= {0, 255}
    if binary:
        arrays = [(a > 0).astype(np.uint8) for a in arrays]
    elif min(values) < 0 or max(values) > 255:
        raise MedfmError(f"label values must lie in 0..255 for fusion; found {min(values)}..{max(values)}")
    arrays = [np.asarray(a).astype(np.uint8) for a in arrays]
    images = [sitk.GetImageFromArray(a) for a in arrays]
    labels = sorted(set(np.unique(np.stack(arrays)).tolist()) - {0}) or [1]
    if method == "staple" and binary:
        staple = sitk.STAPLEImageFilter()
        staple.SetForegroundValue(1)
        probability = sitk.GetArrayFromImage(staple.Execute(images))
        fused = (probability >= 0.5).astype(np.uint8)
        quality = [{"sensitivity": s, "specificity": p} for s, p in zip(staple.GetSensitivity(), staple.GetSpecificity())]
    elif method == "staple":
        staple = sitk.MultiLabelSTAPLEImageFilter()
        staple.SetLabelForUndecidedPixels(0)
        fused = sitk.GetArrayFromImage(staple.Execute(images)).astype(np.uint8)
        quality = [_from_confusion(np.array(staple.GetConfusionMatrix(i)), labels, fused) for i in range(len(images))]
    else:
        voting = sitk.LabelVotingImageFilter()
        voting.SetLabelForUndecidedPixels(0)
        fused = sitk.GetArrayFromImage(voting.Execute(images)).astype(np.uint8)
        quality = [_against(a, fused, labels, binary) for a in arrays]
    return fused, {"method": method, "labels": labels, "binary": binary, "annotators": quality}


def _from_confusion(matrix: np.ndarray, labels: list[int], fused: np.ndarray) -> dict[str, Any]:
    """Per label from SimpleITK's confusion matrix (row: the label the annotator gave, column: the true label;
    one extra row for "no decision"): sensitivity P(gave l | true l); specificity P(did not give l | true not l),
    over the fused map's other classes weighted by their pixel counts."""
    # SimpleITK counts classes 0..the largest label value, whether each value occurs or not
    count = max(labels) + 1
    columns = matrix.reshape(-1, count)
    prevalence = np.bincount(fused.ravel(), minlength=count)[:count].astype(np.float64)
    sensitivity, specificity = {}, {}
    for value in labels:
        others = [c for c in range(count) if c != value]
        weights = prevalence[others] / max(prevalence[others].sum(), 1.0)
        sensitivity[str(value)] = float(columns[value, value])
        specificity[str(value)] = float(np.sum(weights * (1.0 - columns[value, others])))
    return {"sensitivity": sensitivity, "specificity": specificity}


def _against(mask: np.ndarray, fused: np.ndarray, labels: list[int], binary: bool) -> dict[str, Any]:
    def rates(given: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
        positives, negatives = truth.sum(), (~truth).sum()
        return (float((given & truth).sum() / positives) if positives else float("nan"),
                float((~given & ~truth).sum() / negatives) if negatives else float("nan"))

    if binary:
        sensitivity, specificity = rates(mask > 0, fused > 0)
        return {"sensitivity": sensitivity, "specificity": specificity}
    pairs = {str(v): rates(mask == v, fused == v) for v in labels}
    return {"sensitivity": {k: s for k, (s, _) in pairs.items()}, "specificity": {k: p for k, (_, p) in pairs.items()}}
