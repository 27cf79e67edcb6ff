"""Writing label maps with their provenance.

:func:`save_segmentation` writes a label map from :mod:`medfm.tasks.segment` as PNG
(one 2D plane the input's size: 0 background, 255 for a single structure, else each
structure's label value), NIfTI (the input's grid, intent "label") or, for a label map
of a DICOM series, DICOM SEG (:mod:`medfm.io.dicom.seg`). Its
:attr:`~medfm.io.Image.provenance` (model, weights sha256, medfm version, prompts, scores)
is required and travels inside the file: a PNG iTXt chunk, a NIfTI comment extension, a
SEG's algorithm identification and private record; :func:`medfm.load` gives it back as
``image.provenance``. Every write is atomic.

:func:`read_mask` is the one way a mask file becomes a boolean mask (see :func:`mask_foreground`
for the rule; :func:`mask_of` for a mask already loaded with its geometry).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.dicom import DicomSeries
from medfm.io.formats import atomic_path, image_suffix, load
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


def mask_foreground(values: np.ndarray) -> np.ndarray:
    """Foreground of a mask's stored values (any shape, one value per voxel), as bool.

    - an 8-bit picture whose brightest value is above 127 (a white-on-black drawing, 0/255,
      possibly JPEG-compressed or anti-aliased so that its edges carry values in between):
      the values above half the maximum;
    - anything else (0/1 masks, label maps whose values are the structures' labels,
      16-bit and floating-point masks): every non-zero value.

    The first rule keeps JPEG halos out; the second keeps every label of a label map
    (an 8-bit label map must therefore keep its labels below 128). A probability map is
    not a mask: threshold it first.
    """
    values = np.asarray(values)
    top = values.max() if values.size else 0
    if values.dtype == np.uint8 and top > 127:
        return values > top / 2
    return values != 0


def read_mask(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The mask stored in ``path`` as ``(I, J, K)`` bool (K = 1 for a 2D mask), by :func:`mask_foreground`.

    A colour mask counts the brightest of its red, green and blue values (alpha is ignored).
    ``shape``: the ``(I, J)`` or ``(I, J, K)`` grid of the image the mask belongs to; a mask
    on another grid raises :class:`MedfmError`, as does a file with several frames.
    """
    mask = mask_of(load(path), path)
    expected = None if shape is None else (*shape, 1, 1)[:3]
    if expected is not None and mask.shape != expected:
        raise MedfmError(f"{display_path(path)}: mask is {_size(mask.shape)} but its image is {_size(expected)}")
    return mask


def mask_values(image: Image, path: str | os.PathLike) -> np.ndarray:
    """The values :func:`read_mask` reads a mask from, ``(I, J, K)``: the brightest of red, green
    and blue for a colour mask; a mask with several frames raises :class:`MedfmError`."""
    if image.num_frames > 1:
        raise MedfmError(f"{display_path(path)}: has {image.num_frames} frames; a mask has one")
    return image.array[:, :, :, 0, :3].max(axis=-1)


def mask_of(image: Image, path: str | os.PathLike) -> np.ndarray:
    """:func:`read_mask` of an image already loaded from ``path`` (no grid check)."""
    return mask_foreground(mask_values(image, path))


def _size(shape: tuple[int, ...]) -> str:
    """``48x64`` for a 2D grid (one slice), ``48x64x10`` for a volume."""
    return "x".join(map(str, shape[:2] if shape[2:] == (1,) else shape))
