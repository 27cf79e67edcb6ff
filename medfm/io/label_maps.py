"""Writing label maps with their provenance.

:func:`save_segmentation` writes a label map from :mod:`medfm.tasks.segment` as PNG
(one 2D plane the input's size: 0 background, 255 for a single structure, else each
structure's label value), NIfTI (the input's grid, intent "label") or, for a label map
of a DICOM series, DICOM SEG (:mod:`medfm.io.dicom.seg`). Its
:attr:`~medfm.io.Image.provenance` (model, weights sha256, medfm version, prompts, scores)
is required and travels inside the file: a PNG iTXt chunk, a NIfTI comment extension, a
SEG's algorithm identification and private record; :func:`medfm.load` gives it back as
``image.provenance``. Every write is atomic.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.dicom import DicomSeries
from medfm.io.formats import atomic_path, image_suffix
from medfm.io.image import Image
from medfm.io.nifti import nifti_image
from medfm.io.raster import png_info

SUFFIXES = (".png", ".nii", ".nii.gz", ".dcm")


def save_segmentation(labels: Image, path: str | os.PathLike, series: DicomSeries | None = None) -> Path:
    """Write ``labels`` by ``path``'s suffix (.png, .nii, .nii.gz, or .dcm with the source ``series``)."""
    path = Path(os.fsdecode(path))
    suffix = image_suffix(path)
    if suffix not in SUFFIXES:
        raise MedfmError(f"{display_path(path)}: a segmentation is written as {', '.join(SUFFIXES)}")
    if labels.provenance is None:
        raise MedfmError(f"{display_path(path)}: the label map has no provenance (the model and prompts that made it): "
                         "nothing written; make it with medfm.tasks.segment or set Image.provenance")
    if suffix == ".dcm":
        if series is None:
            raise MedfmError(f"{display_path(path)}: DICOM SEG output needs a DICOM input to reference; write .nii.gz or .png")
        from medfm.io.dicom.seg import write_seg

        return write_seg(labels, series, path)
    with atomic_path(path) as tmp:
        if suffix == ".png":
            _write_png(labels, tmp)
        else:
            _write_nifti(labels, tmp)
    return path


def _write_png(labels: Image, path: Path) -> None:
    from PIL import Image as PILImage

    if not labels.is_2d or labels.num_frames > 1:
        raise MedfmError(f"PNG holds one 2D plane; this label map is {labels.shape[:4]} (I, J, K, T): write .nii.gz")
    plane = labels.frame()
    top = int(plane.max())
    # a single structure shows as white; several keep their label values
    pixels = plane.astype(np.uint8) * 255 if top <= 1 else plane.astype(np.uint8 if top < 256 else np.uint16)
    PILImage.fromarray(pixels).save(path, format="PNG", pnginfo=png_info(labels.provenance))


def _write_nifti(labels: Image, path: Path) -> None:
    import nibabel as nib

    nifti = nifti_image(labels)
    nifti.header.set_intent("label")
    nib.save(nifti, path)
