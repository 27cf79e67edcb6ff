"""NIfTI-1/2 through nibabel. Uncompressed files stay memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.io.formats import MAX_DEFLATE_RATIO, Format, check_claimed_size, register_format
from medfm.io.image import Image


def _sniff(head: bytes) -> bool:
    return len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def read_nifti(path: Path) -> list[Image]:
    import nibabel as nib

    img = nib.load(path)
    if img.ndim > 5 or img.ndim < 2:
        raise ValueError(f"{img.ndim}-dimensional NIfTI is not an image medfm handles")
    file_bytes = path.stat().st_size
    compressed = path.name.lower().endswith(".gz")
    room = file_bytes * MAX_DEFLATE_RATIO if compressed else file_bytes - int(img.dataobj.offset)
    check_claimed_size(path, img.shape, img.header.get_data_dtype().itemsize, room)
    array = np.asanyarray(img.dataobj)
    if array.dtype.fields and set(array.dtype.names) >= {"R", "G", "B"}:
        array = np.stack([array["R"], array["G"], array["B"]], axis=-1)
        array = array.reshape(array.shape[:3] + (1, 3)) if array.ndim == 4 else array
    header = img.header
    # descrip is a C string: what follows the first NUL is leftover bytes ("FSL3.3\0 v2.25 ...").
    metadata = {"description": header.get("descrip", np.array(b"")).item().split(b"\x00")[0].decode("latin-1").strip()}
    if header.get_xyzt_units()[1] in ("sec", "msec", "usec") and array.ndim >= 4:
        metadata["frame_interval_s"] = float(header.get_zooms()[3]) * {"sec": 1, "msec": 1e-3, "usec": 1e-6}[header.get_xyzt_units()[1]]
    return [Image(array, img.affine, metadata={k: v for k, v in metadata.items() if v})]


def write_nifti(image: Image, path: Path) -> None:
    import nibabel as nib

    array = image.array
    if image.num_channels == 1:
        array = array[..., 0] if image.num_frames > 1 else array[..., 0, 0]
    nifti = nib.Nifti1Image(array, image.affine)
    nifti.set_qform(image.affine, code=1)
    nifti.set_sform(image.affine, code=1)
    nifti.header.set_xyzt_units("mm", "sec")
    if image.num_channels > 1:
        nifti.header.set_intent("vector")
    nib.save(nifti, path)


NIFTI = register_format(Format("nifti", (".nii", ".nii.gz"), read_nifti, write_nifti, _sniff))
