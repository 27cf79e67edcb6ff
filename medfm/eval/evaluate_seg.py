"""Evaluating a folder of predicted masks against a folder of reference masks.

Every pair is checked before it is scored (one image each, same grid and geometry,
binary or within the given labels); a pair that fails is reported in ``skipped`` with
the reason, never scored and never dropped quietly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from medfm import __version__
from medfm.errors import MedfmError, display_path
from medfm.eval.bootstrap import bootstrap
from medfm.eval.pairing import Pair, Skipped, pair_files
from medfm.eval.results import summarise
from medfm.eval.seg_metrics import METRICS, mean_over_labels, score_label_maps, score_masks
from medfm.io.formats import load
from medfm.io.image import Image
from medfm.io.label_maps import mask_of, mask_values
from medfm.serialize import json_ready

#: Largest distance, in mm, between where the two grids put any corner voxel.
GEOMETRY_TOLERANCE_MM = 1e-3


@dataclass
class SegmentationEvaluation:
    """``cases``: one dict per scored case (``name``, ``pred``, ``ref``, each metric, and
    ``labels`` with per-label metrics for label maps); ``summary[metric]``: ``mean``,
    ``median``, ``n``, ``n_undefined`` and the bootstrap interval of the mean (``low``,
    ``high``) over cases, NaN values left out; ``summary_by_label[label][metric]`` likewise.
    """

    cases: list[dict[str, Any]]
    skipped: list[Skipped]
    summary: dict[str, dict[str, float]]
    summary_by_label: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Strict JSON-ready form; undefined values are ``null``."""
        return json_ready(
            {
                "cases": self.cases,
                "summary": self.summary,
                "summary_by_label": self.summary_by_label,
                "skipped": [s.as_dict() for s in self.skipped],
                "settings": self.settings,
            }
        )


def _corners(image: Image) -> np.ndarray:
    extent = [(0, n - 1) for n in image.spatial_shape]
    voxels = np.array([[*corner, 1.0] for corner in product(*extent)])
    return (voxels @ image.affine.T)[:, :3]


def _mask_array(image: Image, path: os.PathLike, labels: Sequence[int] | None) -> np.ndarray:
    """A binary mask as bool, read as every command reads masks (:func:`~medfm.io.label_maps.mask_of`:
    colour and JPEG masks included); with ``labels``, the label map as stored."""
    name = display_path(path)
    if labels is None:
        values = mask_values(image, path)
        top = values.max() if values.size else 0
        distinct = np.unique(values[values != 0])
        # a label map read as one mask would merge its structures: say so instead (8-bit pictures, whose
        # anti-aliased or JPEG edges hold many values, are read above half their maximum)
        if not (values.dtype == np.uint8 and top > 127) and distinct.size > 1:
            raise MedfmError(
                f"{name}: not a binary mask (values {[0, *distinct[:6].tolist()]}{'...' if distinct.size > 6 else ''}); "
                "pass the label values to score a label map"
            )
        return mask_of(image, path)
    if image.num_frames > 1 or image.num_channels > 1:
        raise MedfmError(f"{name}: has {image.num_frames} frames and {image.num_channels} channels; a label map has one of each")
    array = image.array[:, :, :, 0, 0]
    unexpected = sorted(set(np.unique(array).tolist()) - {0, *labels})
    if unexpected:
        raise MedfmError(f"{name}: holds label values {unexpected[:6]} that are not among the labels {list(labels)}")
    return array


def distance_unit(image: Image) -> str:
    """``"mm"``, or ``"pixels"`` for an image without a known spacing (``metadata["spacing_known"]`` False:
    photos, video, PNG masks), whose nominal 1 mm spacing is no measurement."""
    return "mm" if image.metadata.get("spacing_known", True) else "pixels"


def load_mask_pair(pair: Pair, labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], str]:
    """The prediction and reference arrays, ``(I, J)`` when the grid has one slice else ``(I, J, K)``, the
    spacing and the unit it is in (:func:`distance_unit` of the reference).

    Binary masks come back as bool, label maps as they are stored.
    """
    pred, ref = load(pair.pred), load(pair.ref)
    if pred.spatial_shape != ref.spatial_shape:
        raise MedfmError(
            f"{display_path(pair.pred)}: shape {pred.spatial_shape} differs from the reference's {ref.spatial_shape}"
        )
    offset = float(np.max(np.linalg.norm(_corners(pred) - _corners(ref), axis=1)))
    if offset > GEOMETRY_TOLERANCE_MM:
        raise MedfmError(
            f"{display_path(pair.pred)}: geometry differs from the reference's (grid corners up to {offset:.4g} mm apart; "
            f"spacing {pred.spacing} vs {ref.spacing}, origin {pred.origin} vs {ref.origin})"
        )
    pred_array, ref_array = _mask_array(pred, pair.pred, labels), _mask_array(ref, pair.ref, labels)
    if ref.is_2d:
        return pred_array[:, :, 0], ref_array[:, :, 0], ref.spacing[:2], distance_unit(ref)
    return pred_array, ref_array, ref.spacing, distance_unit(ref)


def _score_pair(pair: Pair, labels: Sequence[int] | None, tolerance_mm: float) -> dict[str, Any]:
    pred, ref, spacing, unit = load_mask_pair(pair, labels)
    case: dict[str, Any] = {"name": pair.name, "pred": display_path(pair.pred), "ref": display_path(pair.ref),
                            "distance_unit": unit}
    if labels is None:
        return {**case, **score_masks(pred, ref, spacing, tolerance_mm).as_dict()}
    per_label = score_label_maps(pred, ref, spacing, labels, tolerance_mm)
    return {**case, **mean_over_labels(per_label), "labels": {k: v.as_dict() for k, v in per_label.items()}}


def _summary(
    values: dict[str, np.ndarray], n_boot: int, confidence: float, seed: int
) -> dict[str, dict[str, float]]:
    n_cases = len(next(iter(values.values())))

    def means(rows: np.ndarray) -> dict[str, float]:
        return {metric: summarise(v[rows])["mean"] for metric, v in values.items()}

    intervals = bootstrap(means, n_cases, n_boot=n_boot, confidence=confidence, seed=seed)
    return {
        metric: {**summarise(v), "low": intervals[metric].low, "high": intervals[metric].high}
        for metric, v in values.items()
    }


def evaluate_segmentation(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    *,
    tolerance_mm: float = 2.0,
    labels: Sequence[int] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> SegmentationEvaluation:
    """Score every prediction in ``pred_dir`` against the reference of the same case name.

    Masks are binary unless ``labels`` lists the label values of label maps (each is then
    scored on its own and the case's metrics are the mean over labels). Spacing comes from
    the reference image; NSD uses ``tolerance_mm``. Raises :class:`MedfmError` if no case
    could be scored, listing why.
    """
    if labels is not None and (not labels or 0 in labels):
        raise MedfmError(f"labels must be non-zero label values (0 is background), got {list(labels)}")
    if Path(pred_dir).resolve() == Path(ref_dir).resolve():
        raise MedfmError(f"{display_path(pred_dir)}: the predictions and the references are the same folder; "
                         "every case would be scored against itself")
    pairs, skipped = pair_files(pred_dir, ref_dir)
    cases = []
    for pair in pairs:
        try:
            cases.append(_score_pair(pair, labels, tolerance_mm))
        except MedfmError as exc:
            skipped.append(Skipped(pair.name, str(exc)))
    if not cases:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:3]) or "both folders are empty"
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise MedfmError(f"no case could be evaluated: {reasons}{more}")
    units = sorted({case["distance_unit"] for case in cases})
    if len(units) > 1:
        in_pixels = [case["name"] for case in cases if case["distance_unit"] == "pixels"]
        raise MedfmError(f"cases {', '.join(in_pixels[:3])}{' ...' if len(in_pixels) > 3 else ''} have no known spacing "
                         "(distances in pixels) and the others do (mm): evaluate them separately")
    summary = _summary({m: np.array([c[m] for c in cases]) for m in METRICS}, n_boot, confidence, seed)
    by_label = {
        label: _summary({m: np.array([c["labels"][label][m] for c in cases]) for m in METRICS}, n_boot, confidence, seed)
        for label in labels or ()
    }
    settings = {
        "medfm_version": __version__,
        "tolerance_mm": tolerance_mm,
        # hd95, assd and the NSD tolerance in this unit; volume_difference in its square or cube
        "distance_unit": units[0],
        "labels": list(labels) if labels else None,
        "bootstrap": {"n_boot": n_boot, "confidence": confidence, "seed": seed, "resampling": "cases"},
        "empty_masks": "both empty: Dice/IoU/NSD 1, HD95/ASSD 0; one empty: Dice/IoU/NSD 0, HD95/ASSD undefined (null)",
    }
    return SegmentationEvaluation(cases, sorted(skipped, key=lambda s: s.name), summary, by_label, settings)
