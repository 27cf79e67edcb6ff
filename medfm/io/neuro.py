"""Neuroimaging formats read through nibabel: FreeSurfer MGH/MGZ, MINC 1 and 2, Philips
PAR/REC, AFNI BRIK/HEAD and CIFTI-2.

Voxels and affine are exactly what ``nibabel.load`` gives (``dataobj``, scaled; the affine
is RAS+, nibabel's convention and medfm's); a fourth axis becomes frames (T). MINC stores
time as its first dimension, which moves to T. CIFTI-2 files hold a matrix over brain
models, not a voxel grid: they read as a 2D image with a nominal 1 mm spacing and
``metadata["spacing_known"] = False``. medfm reads these formats; it writes NIfTI.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medfm.io.formats import Format, register_format
from medfm.io.image import Image
from medfm.io.limits import check_decoded_size

#: CIFTI-2 file types (the second suffix of ``name.dconn.nii``).
CIFTI_SUFFIXES = tuple(
    f".{kind}.nii"
    for kind in ("dconn", "dtseries", "dscalar", "dlabel", "dpconn", "pconnseries", "pconnscalar", "pconn",
                 "ptseries", "pscalar", "pdconn", "dfan", "fiberTemp")
)


def _time_first(img) -> bool:
    """Whether a MINC image keeps a non-spatial dimension (time) first, before its three spatial ones."""
    minc_file = getattr(img.dataobj, "minc_file", None)
    names = getattr(minc_file, "_dim_names", None) or ()  # nibabel keeps MINC's dimension names here only
    return len(names) == 4 and not str(names[0]).endswith("space")


def image_from_nibabel(path: Path, img, header_only: bool = False) -> Image:
    """A nibabel image as a medfm :class:`Image`; ``header_only`` gives a zero-strided stand-in array."""
    from nibabel.cifti2 import Cifti2Image

    shape = tuple(int(n) for n in img.shape)
    if not 2 <= len(shape) <= 4:
        raise ValueError(f"{len(shape)}-dimensional {type(img).__name__} is not an image medfm handles")
    dtype = np.dtype(getattr(img.dataobj, "dtype", np.float64))
    check_decoded_size(path, math.prod(shape) * dtype.itemsize, path.stat().st_size)
    array = np.broadcast_to(np.zeros((), dtype), shape) if header_only else np.asanyarray(img.dataobj)
    if isinstance(img, Cifti2Image):
        return Image(array, metadata={"spacing_known": False, "cifti_axes": [type(a).__name__ for a in _cifti_axes(img)]})
    if _time_first(img):
        array = np.moveaxis(array, 0, -1)
    return Image(array, img.affine)


def _cifti_axes(img) -> list:
    return [img.header.get_axis(n) for n in range(img.ndim)]


def read_nibabel(path: Path) -> list[Image]:
    import nibabel as nib

    return [image_from_nibabel(path, nib.load(path))]


def probe_nibabel(path: Path) -> list[Image]:
    import nibabel as nib

    return [image_from_nibabel(path, nib.load(path), header_only=True)]


def _sniff_minc(head: bytes) -> bool:
    return head[:4] in (b"CDF\x01", b"CDF\x02") or head[:8] == b"\x89HDF\r\n\x1a\n"


MGH = register_format(Format("mgh", (".mgh", ".mgz"), read_nibabel, probe=probe_nibabel))
MINC = register_format(Format("minc", (".mnc",), read_nibabel, sniff=_sniff_minc, probe=probe_nibabel))
PARREC = register_format(Format("parrec", (".par", ".rec"), read_nibabel, probe=probe_nibabel))
AFNI = register_format(Format("afni", (".head", ".brik", ".brik.gz"), read_nibabel, probe=probe_nibabel))
CIFTI = register_format(Format("cifti", CIFTI_SUFFIXES, read_nibabel, probe=probe_nibabel))
