"""Radiomic features of images, with PyRadiomics, in the exact setting of FRDv1.

The settings are those of the ``frd-score`` package's FRDv1 configurations
(``configs/extraction_2d.yaml`` and ``extraction_3d.yaml``; Konz, Osuala et al., Medical
Image Analysis 2026): the original image and its wavelet decompositions (LoG with
sigma 2-5 mm too, which PyRadiomics skips for images under 4 voxels along any axis, so
for every 2D image), first-order, GLCM (22 features), GLRLM, GLSZM and NGTDM features,
intensities normalised to scale 100 and resampled to 2 mm pixels, bin width 5. As in
FRDv1, PyRadiomics' numeric diagnostics (image mean, mask voxel count…) are features
too. Colour (RGB) images are taken as their luminance, ``0.299 R + 0.587 G + 0.114 B`` (ITU-R
BT.601, the weights of Pillow's ``convert("L")``), since FRDv1 is defined on grey images.
``feature_classes`` can add classes (``"shape2D"``, ``"shape"``, ``"gldm"``) the way
frd-score's ``features`` argument does.

Feature extraction runs in a process pool over images: it is the slow part of FRD and
each image is independent.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.image import Image

_GLCM = [
    "Autocorrelation", "JointAverage", "ClusterProminence", "ClusterShade", "ClusterTendency", "Contrast",
    "Correlation", "DifferenceAverage", "DifferenceEntropy", "DifferenceVariance", "JointEnergy", "JointEntropy",
    "Imc1", "Imc2", "Idm", "Idmn", "Id", "Idn", "InverseVariance", "MaximumProbability", "SumEntropy", "SumSquares",
]

#: FRDv1 feature classes: ``None`` enables every feature of a class.
FRD_FEATURE_CLASSES: dict[str, list[str] | None] = {
    "firstorder": None, "glcm": _GLCM, "glrlm": None, "glszm": None, "ngtdm": None,
}

#: Every class that can be asked for (shape2D for 2D images, shape for volumes).
FEATURE_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape", "shape2D")

_COMMON = {
    "normalize": True, "normalizeScale": 100, "interpolator": "sitkBSpline", "padDistance": 10,
    "preCrop": True, "binWidth": 5, "voxelArrayShift": 300, "label": 1,
}
#: PyRadiomics settings of FRDv1 for 2D images (one slice) and for volumes.
FRD_SETTINGS = {
    2: {**_COMMON, "resampledPixelSpacing": [2, 2, 0], "force2D": True, "force2Ddimension": 0},
    3: {**_COMMON, "resampledPixelSpacing": [2, 2, 2], "correctMask": True, "minimumROIDimensions": 1},
}
_IMAGE_TYPES = {"Original": {}, "LoG": {"sigma": [2.0, 3.0, 4.0, 5.0]}, "Wavelet": {}}


@dataclass(frozen=True)
class Extraction:
    """Features of one image, or why there are none (``reason``)."""

    name: str
    ndim: int = 0
    names: tuple[str, ...] = ()
    values: np.ndarray | None = None
    reason: str | None = None


def _require_pyradiomics() -> None:
    try:
        import radiomics  # noqa: F401
    except ImportError:
        raise MedfmError(
            "radiomic features need pyradiomics 3.0.1: pip install numpy wheel, then "
            "pip install --no-build-isolation pyradiomics==3.0.1 (or run scripts/setup.sh)"
        ) from None


@lru_cache(maxsize=4)
def _extractor(ndim: int, feature_classes: tuple[str, ...]) -> Any:
    import radiomics

    from medfm.eval._fast_glcm import FastExtractor

    radiomics.setVerbosity(logging.ERROR)  # PyRadiomics logs every filter it skips
    with warnings.catch_warnings():
        # pykwalify, which checks PyRadiomics' settings, uses a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        extractor = FastExtractor({"setting": FRD_SETTINGS[ndim], "imageType": _IMAGE_TYPES})
    extractor.disableAllFeatures()
    extractor.enableFeaturesByName(**{c: FRD_FEATURE_CLASSES.get(c) for c in feature_classes})
    return extractor


def _sitk(array: np.ndarray, image: Image) -> Any:
    """``(I, J, K)`` array on ``image``'s grid as a SimpleITK image, as SimpleITK would read it from NIfTI."""
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = image.lps_affine
    spacing = np.asarray(image.spacing)
    out.SetSpacing(spacing.tolist())
    out.SetOrigin(lps[:3, 3].tolist())
    out.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    return out


#: ITU-R BT.601 luma weights of R, G, B: how colour images become the one grey image features are taken of.
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)


def _grey(image: Image, path: Path) -> np.ndarray:
    """The ``(I, J, K)`` grey image: as stored, or the BT.601 luminance of an RGB(A) image (alpha ignored)."""
    if image.num_frames > 1 or image.num_channels not in (1, 3, 4):
        raise MedfmError(
            f"{display_path(path)}: has {image.num_frames} frames and {image.num_channels} channels; "
            "radiomic features need one grey or colour (RGB) image"
        )
    if image.num_channels == 1:
        return image.array[:, :, :, 0, 0]
    rgb = np.asarray(image.array[:, :, :, 0, :3], dtype=np.float32)
    return rgb @ np.asarray(LUMINANCE_WEIGHTS, dtype=np.float32)


def whole_image_mask(shape: Sequence[int]) -> np.ndarray:
    """``(I, J, K)`` uint8 mask of the whole image but voxel (0, 0, 0).

    That one voxel is left out as frd-score does: PyRadiomics mishandles a mask that
    covers the whole image (AIM-Harvard/pyradiomics#765).
    """
    mask = np.ones(tuple(shape), dtype=np.uint8)
    mask[0, 0, 0] = 0
    return mask


def extract(image: Image, mask: np.ndarray | None, feature_classes: Sequence[str], path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """Feature names and float64 values of one grey image within ``mask`` (``(I, J, K)``, non-zero is inside).

    Without a mask the whole image is the region of interest. Numeric PyRadiomics
    diagnostics are kept as features, as in FRDv1; text and tuple diagnostics are not.
    """
    array = _grey(image, path).astype(np.float32)
    roi = whole_image_mask(array.shape) if mask is None else (np.asarray(mask) != 0).astype(np.uint8)
    if roi.shape != array.shape:
        raise MedfmError(f"{display_path(path)}: mask shape {roi.shape} differs from image shape {array.shape}")
    if roi.sum() <= 1:
        raise MedfmError(f"{display_path(path)}: the mask holds {int(roi.sum())} voxel(s); features need at least 2")
    extractor = _extractor(2 if image.is_2d else 3, tuple(feature_classes))
    output = extractor.execute(_sitk(array, image), _sitk(roi, image))
    features = {
        key.removeprefix("original_"): float(value)
        for key, value in output.items()
        if isinstance(value, (int, float, np.number)) or (isinstance(value, np.ndarray) and value.ndim == 0)
    }
    return tuple(features), np.fromiter(features.values(), dtype=np.float64, count=len(features))


def _extract_file(name: str, path: Path, mask_path: Path | None, feature_classes: tuple[str, ...]) -> Extraction:
    from medfm.io.formats import load
    from medfm.io.label_maps import read_mask

    try:
        image = load(path)
        mask = None if mask_path is None else read_mask(mask_path)
        names, values = extract(image, mask, feature_classes, path)
    except MedfmError as exc:  # reported as a reason: MedfmError subclasses do not all survive pickling
        return Extraction(name, reason=str(exc))
    return Extraction(name, 2 if image.is_2d else 3, names, values)


def default_workers() -> int:
    """Worker processes for feature extraction: the CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def extract_files(
    items: Sequence[tuple[str, Path, Path | None]],
    feature_classes: Sequence[str] = tuple(FRD_FEATURE_CLASSES),
    workers: int | None = None,
) -> list[Extraction]:
    """Features of ``(name, image path, mask path or None)`` items, in order, over ``workers`` processes.

    Images that cannot be read or have too small a mask come back with a ``reason``.
    """
    _require_pyradiomics()
    classes = tuple(feature_classes)
    unknown = sorted(set(classes) - set(FEATURE_CLASSES))
    if unknown:
        raise MedfmError(f"unknown feature classes {unknown}; choose from {', '.join(FEATURE_CLASSES)}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise MedfmError(f"workers must be at least 1, got {workers}")
    args = [(name, Path(p), None if m is None else Path(m), classes) for name, p, m in items]
    if workers == 1 or len(args) < 2:
        return [_extract_file(*a) for a in args]
    import multiprocessing

    # fork where there is one (Linux): a spawned worker would spend seconds importing what the parent has
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(min(workers, len(args)), mp_context=context) as pool:
        return list(pool.map(_extract_file, *zip(*args), chunksize=max(1, len(args) // (4 * workers))))
