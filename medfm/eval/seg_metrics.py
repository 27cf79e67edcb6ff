"""Segmentation metrics between a predicted and a reference mask, in millimetres.

Masks are numpy arrays of shape ``(I, J)`` or ``(I, J, K)`` (any dtype; non-zero is
foreground); ``spacing`` is the pixel or voxel size in mm along each of those axes, so a
2D mask gives areas in mm² and a 3D mask volumes in mm³. Surface distances follow MONAI
(and DeepMind's ``surface-distance``): distances between the boundary voxels of the two
masks, with voxel centres placed on the anisotropic grid.

Empty masks, one policy for every metric (Metrics Reloaded's; MONAI's
``ignore_empty=False``):

- both empty: the prediction is correct, so Dice = IoU = NSD = 1, HD95 = ASSD = 0 and
  both volume differences are 0;
- one empty: Dice = IoU = NSD = 0; HD95 and ASSD are NaN, since there is no surface to
  measure from; the relative volume difference is NaN when the reference is empty
  (it is relative to nothing) and -1 when only the prediction is.

Summaries that average over cases must therefore say how many NaNs they left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from medfm.errors import MedfmError

#: Names of :class:`SegmentationScores` fields, in report order.
METRICS = ("dice", "iou", "hd95", "assd", "nsd", "volume_difference", "relative_volume_difference")


@dataclass(frozen=True)
class SegmentationScores:
    """Every metric for one pair of binary masks; see the module docstring for empty masks.

    ``volume_difference`` is prediction minus reference in mm³ (mm² for 2D masks);
    ``relative_volume_difference`` divides it by the reference volume.
    """

    dice: float
    iou: float
    hd95: float
    assd: float
    nsd: float
    volume_difference: float
    relative_volume_difference: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _as_masks(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred) != 0, np.asarray(ref) != 0
    if pred.shape != ref.shape:
        raise MedfmError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if pred.ndim not in (2, 3):
        raise MedfmError(f"masks must be 2D (I, J) or 3D (I, J, K), got shape {pred.shape}")
    return pred, ref


def _spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (ndim,) or not np.all(spacing > 0):
        raise MedfmError(f"spacing must be {ndim} positive numbers (mm per voxel along each axis), got {spacing.tolist()}")
    return spacing


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|P∩R| / (|P| + |R|); 1 when both masks are empty."""
    pred, ref = _as_masks(pred, ref)
    total = pred.sum() + ref.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, ref).sum() / total)


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union |P∩R| / |P∪R| (Jaccard); 1 when both masks are empty."""
    pred, ref = _as_masks(pred, ref)
    union = np.logical_or(pred, ref).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, ref).sum() / union)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each boundary voxel of ``pred`` to ``ref``'s boundary, and back.

    Both masks must be non-empty. Returns ``(pred_to_ref, ref_to_pred)``, 1-D float64.
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    pred, ref = _as_masks(pred, ref)
    spacing = _spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        raise MedfmError("surface distances need two non-empty masks")
    with warnings.catch_warnings():
        # MONAI's own internal call to a deprecated argument; nothing we can act on
        warnings.simplefilter("ignore", FutureWarning)
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(pred), torch.from_numpy(ref), spacing=spacing.tolist(), symmetric=True, warn_empty=False
        )
    return tuple(d.numpy().astype(np.float64) for d in distances)


def hausdorff_distance(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance in mm (HD95 by default; 100 gives the maximum).

    The larger of the two directed percentiles, as MONAI's ``compute_hausdorff_distance``.
    """
    if not 0 <= percentile <= 100:
        raise MedfmError(f"percentile must be between 0 and 100, got {percentile}")
    pred, ref = _as_masks(pred, ref)
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("nan")
    return float(max(np.percentile(d, percentile) for d in surface_distances(pred, ref, spacing)))


def average_surface_distance(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance (ASSD) in mm: the mean over both sets of boundary distances."""
    pred, ref = _as_masks(pred, ref)
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("nan")
    return float(np.concatenate(surface_distances(pred, ref, spacing)).mean())


def surface_dice(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """Normalised surface distance (NSD, surface Dice): the fraction of both boundaries within ``tolerance_mm`` of the other."""
    if tolerance_mm < 0:
        raise MedfmError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    pred, ref = _as_masks(pred, ref)
    if not pred.any() and not ref.any():
        return 1.0
    if not pred.any() or not ref.any():
        return 0.0
    distances = np.concatenate(surface_distances(pred, ref, spacing))
    return float(np.mean(distances <= tolerance_mm))


def volume_difference(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Predicted minus reference volume in mm³ (area in mm² for 2D masks)."""
    pred, ref = _as_masks(pred, ref)
    voxel = float(np.prod(_spacing(spacing, pred.ndim)))
    return float((int(pred.sum()) - int(ref.sum())) * voxel)


def relative_volume_difference(pred: np.ndarray, ref: np.ndarray) -> float:
    """``(|P| - |R|) / |R|``: 0 when both are empty, NaN when only the reference is."""
    pred, ref = _as_masks(pred, ref)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_ref == 0:
        return 0.0 if n_pred == 0 else float("nan")
    return (n_pred - n_ref) / n_ref


def score_masks(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0) -> SegmentationScores:
    """Every metric for one pair of binary masks, computing the surface distances once."""
    pred, ref = _as_masks(pred, ref)
    spacing = _spacing(spacing, pred.ndim)
    if tolerance_mm < 0:
        raise MedfmError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    if pred.any() and ref.any():
        to_ref, to_pred = surface_distances(pred, ref, spacing)
        both = np.concatenate([to_ref, to_pred])
        hd95 = float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))
        assd, nsd = float(both.mean()), float(np.mean(both <= tolerance_mm))
    else:
        hd95 = assd = hausdorff_distance(pred, ref, spacing)
        nsd = surface_dice(pred, ref, spacing, tolerance_mm)
    return SegmentationScores(
        dice=dice(pred, ref),
        iou=iou(pred, ref),
        hd95=hd95,
        assd=assd,
        nsd=nsd,
        volume_difference=volume_difference(pred, ref, spacing),
        relative_volume_difference=relative_volume_difference(pred, ref),
    )


def score_label_maps(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int],
    tolerance_mm: float = 2.0,
) -> dict[int, SegmentationScores]:
    """Scores per label of two integer label maps of the same shape (0 is background).

    A label absent from both maps scores as two empty masks (Dice 1): list only the labels
    that the task defines.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    return {int(label): score_masks(pred == label, ref == label, spacing, tolerance_mm) for label in labels}


def mean_over_labels(scores: dict[int, SegmentationScores]) -> dict[str, float]:
    """The mean of each metric over labels, NaNs left out (NaN only if every label is NaN)."""
    result = {}
    for metric in METRICS:
        values = np.array([getattr(s, metric) for s in scores.values()], dtype=np.float64)
        result[metric] = float("nan") if np.isnan(values).all() else float(np.nanmean(values))
    return result
