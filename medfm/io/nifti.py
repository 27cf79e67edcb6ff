"""NIfTI-1/2 through nibabel. Uncompressed files stay memory-mapped.

An image's :class:`~medfm.provenance.Provenance` is stored as JSON in a NIfTI header
extension of code 6 ("comment"), inside the file (a sidecar could be lost or mismatched
when files are copied); nibabel keeps extensions through load and save, and other tools
ignore the ones they do not know. Reading takes the first comment that is a provenance record.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medfm.io.formats import MAX_DEFLATE_RATIO, Format, check_claimed_size, register_format
from medfm.io.image import Image
from medfm.io.limits import check_decoded_size
from medfm.io.neuro import image_from_nibabel
from medfm.provenance import SYNTHETIC_NOTE, Provenance

#: The NIfTI extension code ("comment") that holds the provenance JSON.
COMMENT_CODE = 6


def _sniff(head: bytes) -> bool:
    return len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def _is_cifti(img) -> bool:
    from nibabel.cifti2 import Cifti2Image  # nibabel is imported on the first NIfTI read, not with medfm.io

    return isinstance(img, Cifti2Image)


def _open(path: Path):
    import logging

    import nibabel as nib

    # nibabel logs the header fields it repairs ("sizeof_hdr should be 348") on stderr,
    # around the CLI's one-line output; what it cannot repair raises.
    logger = logging.getLogger("nibabel.global")
    disabled, logger.disabled = logger.disabled, True
    try:
        img = nib.load(path)
    finally:
        logger.disabled = disabled
    if _is_cifti(img):
        return img
    if img.ndim > 5 or img.ndim < 2:
        raise ValueError(f"{img.ndim}-dimensional NIfTI is not an image medfm handles")
    file_bytes = path.stat().st_size
    compressed = path.name.lower().endswith(".gz")
    itemsize = img.header.get_data_dtype().itemsize
    room = file_bytes * MAX_DEFLATE_RATIO if compressed else file_bytes - int(img.dataobj.offset)
    check_claimed_size(path, img.shape, itemsize, room)
    if compressed:  # an uncompressed file stays memory-mapped: reading it costs no memory
        check_decoded_size(path, math.prod(img.shape) * itemsize, file_bytes)
    return img


def _metadata(img) -> dict:
    header = img.header
    # descrip is a C string: what follows the first NUL is leftover bytes ("FSL3.3\0 v2.25 ...").
    metadata = {"description": header.get("descrip", np.array(b"")).item().split(b"\x00")[0].decode("latin-1").strip()}
    time_unit = header.get_xyzt_units()[1]
    if time_unit in ("sec", "msec", "usec") and img.ndim >= 4:
        metadata["frame_interval_s"] = float(header.get_zooms()[3]) * {"sec": 1, "msec": 1e-3, "usec": 1e-6}[time_unit]
    return {k: v for k, v in metadata.items() if v}


def _is_rgb(dtype: np.dtype) -> bool:
    return bool(dtype.fields) and set(dtype.names) >= {"R", "G", "B"}


def read_nifti(path: Path) -> list[Image]:
    img = _open(path)
    if _is_cifti(img):  # a CIFTI-2 matrix saved under a plain .nii name
        return [image_from_nibabel(path, img)]
    array = np.asanyarray(img.dataobj)
    if _is_rgb(array.dtype):
        array = np.stack([array["R"], array["G"], array["B"]], axis=-1)
        array = array.reshape(array.shape[:3] + (1, 3)) if array.ndim == 4 else array
    return [Image(array, img.affine, metadata=_metadata(img), provenance=_provenance(img))]


def probe_nifti(path: Path) -> list[Image]:
    """The grid and geometry from the header alone; the array is a zero-strided stand-in."""
    img = _open(path)
    if _is_cifti(img):
        return [image_from_nibabel(path, img, header_only=True)]
    dtype = img.header.get_data_dtype()
    shape = tuple(img.shape)
    if _is_rgb(dtype):
        shape = shape[:3] + (1,) * (3 - len(shape[:3])) + (1, 3)
        dtype = np.dtype(np.uint8)
    return [Image(np.broadcast_to(np.zeros((), dtype), shape), img.affine, metadata=_metadata(img), provenance=_provenance(img))]


def _provenance(img) -> Provenance | None:
    """The record in the first comment extension holding medfm's provenance JSON (current or medfm 0.1's)."""
    for extension in img.header.extensions:
        if extension.get_code() != COMMENT_CODE:
            continue
        content = bytes(extension.get_content()).rstrip(b"\x00")  # NIfTI pads extensions to 16 bytes
        if content.startswith(b"{") and (b'"provenance_version"' in content or b'"weights_sha256"' in content):
            return Provenance.from_json(content)
    return None


def frame_interval_s(image: Image) -> float | None:
    """Seconds between frames: ``metadata["frame_interval_s"]`` (NIfTI, DICOM), else ``1 / metadata["fps"]`` (video)."""
    if image.metadata.get("frame_interval_s"):
        return float(image.metadata["frame_interval_s"])
    fps = image.metadata.get("fps")
    return 1.0 / float(fps) if fps else None


def nifti_image(image: Image):
    """The nibabel image of ``image``: scanner and aligned forms set to its affine, mm and s, its provenance."""
    import nibabel as nib

    array = image.array
    if image.num_channels == 1:
        array = array[..., 0] if image.num_frames > 1 else array[..., 0, 0]
    nifti = nib.Nifti1Image(array, image.affine)
    nifti.set_qform(image.affine, code=1)
    nifti.set_sform(image.affine, code=1)
    nifti.header.set_xyzt_units("mm", "sec")
    interval = frame_interval_s(image)
    if image.num_frames > 1 and interval:
        zooms = list(nifti.header.get_zooms())
        zooms[3] = interval  # pixdim[4]: the time between frames, in the "sec" unit set above
        nifti.header.set_zooms(zooms)
    if image.num_channels > 1:
        nifti.header.set_intent("vector")
    if image.provenance is not None:
        nifti.header.extensions.append(nib.nifti1.Nifti1Extension(COMMENT_CODE, image.provenance.to_json().encode()))
        if image.provenance.synthetic:
            nifti.header["descrip"] = SYNTHETIC_NOTE[:79].encode()
    return nifti


def write_nifti(image: Image, path: Path) -> None:
    import nibabel as nib

    nib.save(nifti_image(image), path)


NIFTI = register_format(Format("nifti", (".nii", ".nii.gz"), read_nifti, write_nifti, _sniff, probe=probe_nifti,
                               keeps_provenance=True))
