"""Fréchet Radiomic Distance (FRD) between two image sets, as the ``frd-score`` package computes FRDv1.

For image sets A (the reference) and B, with radiomic features from
:mod:`medfm.eval.radiomics_features`:

1. images with a NaN feature are left out (reported in ``skipped``);
2. features are z-scored with A's mean and standard deviation (ddof 0), in float32 as
   frd-score does, and features that are then non-finite in either set (constant in A,
   or infinite) are dropped;
3. FRD is the log of the squared Fréchet distance between Gaussians fitted to the two
   sets, ``log(|mu_A - mu_B|² + Tr(C_A + C_B - 2 (C_A C_B)^½))``: frd-score's default
   (not the paper's Eq. 3, which halves it). Identical sets give ``-inf`` (``null`` in JSON).

Each B image also gets an out-of-distribution score: the Euclidean distance of its
z-scored features from A's mean, as frd-score's ``ood`` command computes it. It is
flagged when above A's own scores' mean + 1.645 standard deviations (the 95th percentile
under frd-score's Gaussian assumption). With hundreds of features and tens of images,
A's covariance is singular, which is why this is not a Mahalanobis distance.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.pairing import Skipped, files_by_case, pair_folders
from medfm.eval.radiomics_features import FRD_FEATURE_CLASSES, Extraction, default_workers, extract_files
from medfm.serialize import json_ready

#: One-sided quantile of a normal distribution above which a B image is flagged out of distribution.
OOD_QUANTILE = 0.95


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray, eps: float = 1e-6) -> float:
    """Squared Fréchet distance between Gaussians with ``(F,)`` means and ``(F, F)`` covariances.

    The matrix square root of ``C_A C_B`` is taken as frd-score (and pytorch-fid) take it,
    with ``eps`` added to both diagonals when the product is too singular for it, and
    its imaginary part (numerical noise) dropped.
    """
    from scipy import linalg

    diff = mu_a - mu_b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about singular products; handled below
        covmean = linalg.sqrtm(cov_a.dot(cov_b))
        if not np.isfinite(covmean).all():
            offset = np.eye(cov_a.shape[0]) * eps
            covmean = linalg.sqrtm((cov_a + offset).dot(cov_b + offset))
    return float(diff.dot(diff) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean.real))


def frd_from_features(features_a: np.ndarray, features_b: np.ndarray) -> dict[str, Any]:
    """FRD between ``(N_A, F)`` and ``(N_B, F)`` feature arrays without NaN (steps 2 and 3 above).

    Returns ``frd``, ``frechet_distance_sq``, ``kept`` (``(F,)`` bool: features used),
    ``ood_scores`` (``(N_B,)``) and ``ood_threshold``.
    """
    a, b = np.asarray(features_a, np.float32), np.asarray(features_b, np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise MedfmError(f"feature arrays must be (N, F) with the same F, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise MedfmError(f"FRD needs at least 2 images with features in each set, got {len(a)} and {len(b)}")
    # float32 throughout, as frd-score: its results are what FRD values are compared against
    with np.errstate(divide="ignore", invalid="ignore"):
        mean, std = np.nanmean(a, axis=0), np.nanstd(a, axis=0)
        za, zb = (a - mean) / std, (b - mean) / std
    kept = np.isfinite(za).all(axis=0) & np.isfinite(zb).all(axis=0)
    if not kept.any():
        raise MedfmError("no radiomic feature varies across the reference set A; FRD is undefined")
    za, zb = za[:, kept], zb[:, kept]
    mu_a, mu_b = za.mean(axis=0), zb.mean(axis=0)
    distance_sq = frechet_distance(mu_a, np.cov(za, rowvar=False), mu_b, np.cov(zb, rowvar=False))
    own = np.linalg.norm(za - mu_a, axis=1)
    return {
        "frd": float(np.log(distance_sq)) if distance_sq > 0 else float("-inf"),
        "frechet_distance_sq": distance_sq,
        "kept": kept,
        "ood_scores": np.linalg.norm(zb - mu_a, axis=1).astype(np.float64),
        "ood_threshold": float(own.mean() + NormalDist().inv_cdf(OOD_QUANTILE) * own.std()),
    }


def fit_ood_reference(features: np.ndarray) -> dict[str, Any]:
    """The statistics :func:`ood_scores` needs from a reference set's ``(N, F)`` features (NaN allowed):
    ``mean``, ``std`` and ``kept`` (features finite and varying in every reference image) as lists, and
    ``threshold``, the reference's own scores' mean + 1.645 SD, as in :func:`frd_from_features`."""
    a = np.asarray(features, np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise MedfmError(f"an OOD reference needs (N, F) features of at least 2 images; got shape {a.shape}")
    kept = np.isfinite(a).all(axis=0)
    mean, std = np.zeros(a.shape[1]), np.ones(a.shape[1])
    mean[kept], std[kept] = a[:, kept].mean(axis=0), a[:, kept].std(axis=0)
    kept &= std > 0
    if not kept.any():
        raise MedfmError("no radiomic feature varies across the reference images; no OOD reference can be made")
    reference = {"mean": mean.tolist(), "std": np.where(kept, std, 1.0).tolist(), "kept": kept.tolist(), "n": len(a)}
    own = ood_scores(reference, a)
    reference["threshold"] = float(own.mean() + NormalDist().inv_cdf(OOD_QUANTILE) * own.std())
    return reference


def ood_scores(reference: dict[str, Any], features: np.ndarray) -> np.ndarray:
    """``(N,)`` Euclidean distances of ``(N, F)`` features, z-scored with ``reference``'s statistics, from its
    mean (NaN for an image with an undefined kept feature)."""
    kept = np.asarray(reference["kept"], bool)
    b = np.atleast_2d(np.asarray(features, np.float64))
    if b.shape[1] != len(kept):
        raise MedfmError(f"{b.shape[1]} features given; the OOD reference has {len(kept)}")
    z = (b[:, kept] - np.asarray(reference["mean"])[kept]) / np.asarray(reference["std"])[kept]
    return np.linalg.norm(z, axis=1)


@dataclass
class FRDResult:
    """FRD of B against A; ``ood`` has one dict per B image (``name``, ``score``, ``above_threshold``)."""

    frd: float
    frechet_distance_sq: float
    n_a: int
    n_b: int
    features: list[str]
    n_features_dropped: int
    ood: list[dict[str, Any]]
    ood_threshold: float
    skipped: list[Skipped] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Strict JSON-ready form; ``frd`` is ``null`` when the sets are identical (log 0)."""
        return json_ready({
            "frd": self.frd, "frechet_distance_sq": self.frechet_distance_sq, "n_a": self.n_a, "n_b": self.n_b,
            "n_features": len(self.features), "n_features_dropped": self.n_features_dropped,
            "ood_threshold": self.ood_threshold, "ood": self.ood, "features": self.features,
            "skipped": [s.as_dict() for s in self.skipped], "settings": self.settings,
        })


def _items(images: Path, masks: Path | None, role: str) -> tuple[list[tuple[str, Path, Path | None]], list[Skipped]]:
    if masks is None:
        found, skipped = files_by_case(images, f"{role} image")
        return [(name, path, None) for name, path in sorted(found.items())], skipped
    return pair_folders(images, masks, f"{role} image", f"{role} mask")


def _usable(extractions: list[Extraction], role: str) -> tuple[list[Extraction], list[Skipped]]:
    usable, skipped = [], []
    for e in extractions:
        if e.reason is not None:
            skipped.append(Skipped(e.name, e.reason))
        elif np.isnan(e.values).any():
            bad = [n for n, v in zip(e.names, e.values) if np.isnan(v)]
            skipped.append(Skipped(e.name, f"{role} image has undefined (NaN) features: {', '.join(bad[:3])}"))
        else:
            usable.append(e)
    return usable, skipped


def compute_frd(
    images_a: str | os.PathLike,
    images_b: str | os.PathLike,
    masks_a: str | os.PathLike | None = None,
    masks_b: str | os.PathLike | None = None,
    feature_classes: Sequence[str] = tuple(FRD_FEATURE_CLASSES),
    workers: int | None = None,
) -> FRDResult:
    """FRD of the images in folder ``images_b`` against the reference folder ``images_a``.

    Masks pair with images by case name (file name without image suffix; non-zero is the
    region of interest); without a mask folder the whole image is the region. Images
    that cannot be used are reported in ``skipped`` with the reason. Feature extraction
    runs in ``workers`` processes (default: every CPU this process may use).
    """
    workers = default_workers() if workers is None else workers
    items_a, skipped = _items(Path(images_a), None if masks_a is None else Path(masks_a), "A")
    items_b, skipped_b = _items(Path(images_b), None if masks_b is None else Path(masks_b), "B")
    # one pool for both sets: worker start-up is paid once
    extractions = extract_files(items_a + items_b, feature_classes, workers)
    a, skipped_a = _usable(extractions[: len(items_a)], "A")
    b, skipped_b2 = _usable(extractions[len(items_a):], "B")
    skipped += skipped_a + skipped_b + skipped_b2
    if not a or not b:
        raise MedfmError(f"no usable images in {display_path(images_a if not a else images_b)}"
                         + (f" (first problem: {skipped[0].name}: {skipped[0].reason})" if skipped else ""))
    for e in a + b:
        if e.names != a[0].names:
            raise MedfmError(f"{e.name} has other radiomic features than {a[0].name} "
                             f"({e.ndim}D and {a[0].ndim}D images cannot be compared)")
    scores = frd_from_features(np.stack([e.values for e in a]), np.stack([e.values for e in b]))
    names = np.asarray(a[0].names)
    return FRDResult(
        frd=scores["frd"],
        frechet_distance_sq=scores["frechet_distance_sq"],
        n_a=len(a),
        n_b=len(b),
        features=names[scores["kept"]].tolist(),
        n_features_dropped=int((~scores["kept"]).sum()),
        ood=[{"name": e.name, "score": float(s), "above_threshold": bool(s > scores["ood_threshold"])}
             for e, s in zip(b, scores["ood_scores"])],
        ood_threshold=scores["ood_threshold"],
        skipped=sorted(skipped, key=lambda s: s.name),
        settings={
            "definition": "FRDv1 as frd-score 1.0.1: log squared Frechet distance of features z-scored with A's statistics",
            "dimension": a[0].ndim, "feature_classes": list(feature_classes), "masks": masks_a is not None or masks_b is not None,
            "ood_score": "Euclidean distance of z-scored features from A's mean", "ood_quantile": OOD_QUANTILE,
            "workers": workers,
        },
    )
