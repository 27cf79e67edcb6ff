"""NRRD and MetaImage through SimpleITK, whose geometry is LPS like DICOM's."""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

from medfm.errors import MedfmError, UnreadableFileError
from medfm.io.formats import MAX_DEFLATE_RATIO, Format, check_claimed_size, register_format
from medfm.io.image import LPS_TO_RAS, Image
from medfm.io.limits import check_decoded_size

#: Headers whose voxels live in another file; medfm reads them but writes single files.
DETACHED_SUFFIXES = (".nhdr", ".mhd")

T = TypeVar("T")


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what C++ code prints on file descriptor 2 (MetaIO reports damage there).

    Python's sys.stderr cannot catch it; the descriptor is swapped for the duration.
    """
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def _itk_call(path: Path, call: Callable[[], T]) -> T:
    """Run a SimpleITK read, turning its multi-line exception into one line naming the cause."""
    with _captured_stderr() as printed:
        try:
            return call()
        except RuntimeError as exc:
            error = exc
    # The last line is the most specific: "[nrrd] _nrrdEncodingGzip_read: expected 5760 bytes but received 168".
    lines = printed or [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = " ".join(lines[-2:]) if printed else lines[-1]
    reason = re.sub(r"^(\[\w+\] \w+: |s?itk::ERROR: |ITK ERROR: \w+\(0x[0-9a-f]+\): |MetaImage: \w+: )", "", reason)
    raise UnreadableFileError(path, reason.replace(f'"{path}"', "the file").replace(str(path), "the file")[:200])


#: MetaIO copies header lines into fixed buffers; longer or binary lines corrupt the heap
#: (SimpleITK 2.5.7 aborts the process on a garbled ``ElementDataFile`` line).
_METAIMAGE_LINE = re.compile(rb"[ -~\t]{0,254}")


def _check_metaimage_header(path: Path) -> None:
    """Refuse a MetaImage header that is not ``Key = Value`` text ending at ElementDataFile."""
    with open(path, "rb") as handle:
        head = handle.read(65536)
    compressed, start = False, 0
    for number, line in enumerate(head.split(b"\n"), start=1):
        start += len(line) + 1
        line = line.rstrip(b"\r")
        if not _METAIMAGE_LINE.fullmatch(line) or (line.strip() and b"=" not in line):
            raise UnreadableFileError(path, f"MetaImage header line {number} is not 'Key = Value' text")
        key, _, value = (part.strip() for part in line.partition(b"="))
        compressed = compressed or (key == b"CompressedData" and value.lower() == b"true")
        if key == b"ElementDataFile":
            if compressed and value == b"LOCAL":
                _check_zlib_header(path, head[start:start + 2])
            return
    raise UnreadableFileError(path, "MetaImage header has no ElementDataFile line")


def _check_zlib_header(path: Path, header: bytes) -> None:
    """Refuse compressed MetaImage data whose zlib header is damaged: MetaIO loops forever when
    inflate asks for a preset dictionary (found by benchmarks/fuzz_campaign.py)."""
    if len(header) < 2:
        raise UnreadableFileError(path, "MetaImage compressed data is missing")
    method, flags = header
    if method & 0x0F != 8 or (method * 256 + flags) % 31 or flags & 0x20:
        raise UnreadableFileError(path, "MetaImage compressed data has a damaged zlib header")


def _component_bytes(pixel_type: str) -> int:
    bits = re.search(r"(\d+)-bit", pixel_type)
    return int(bits.group(1)) // 8 if bits else 8


def read_itk(path: Path) -> list[Image]:
    import SimpleITK as sitk

    if path.name.lower().endswith((".mha", ".mhd")):
        _check_metaimage_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _itk_call(path, reader.ReadImageInformation)
    dimension = reader.GetDimension()
    if dimension not in (2, 3):
        raise ValueError(f"{dimension}-dimensional image; medfm reads 2D and 3D NRRD/MetaImage")
    if not path.name.lower().endswith(DETACHED_SUFFIXES):
        # Bounds raw, gzip and zlib data; bzip2 NRRD can compress further and is rare.
        itemsize = reader.GetNumberOfComponents() * _component_bytes(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
        check_claimed_size(path, reader.GetSize(), itemsize, path.stat().st_size * MAX_DEFLATE_RATIO)
        check_decoded_size(path, math.prod(reader.GetSize()) * itemsize, path.stat().st_size)
    itk_image = _itk_call(path, reader.Execute)
    # (K, J, I[, C]) in numpy order -> (I, J, K[, C]); a view, not a copy.
    array = sitk.GetArrayFromImage(itk_image)
    channels = itk_image.GetNumberOfComponentsPerPixel()
    spatial = array.ndim - (1 if channels > 1 else 0)
    order = tuple(reversed(range(spatial))) + ((spatial,) if channels > 1 else ())
    array = array.transpose(order)
    if dimension == 2:
        array = array[:, :, None, ...]
    if channels > 1:
        array = array[:, :, :, None, :]
    lps = np.eye(4)
    direction = np.asarray(itk_image.GetDirection()).reshape(dimension, dimension)
    spacing = np.asarray(itk_image.GetSpacing())
    lps[:dimension, :dimension] = direction * spacing
    lps[:dimension, 3] = itk_image.GetOrigin()
    # MetaImage may name the modality (MET_MOD_CT); NRRD has no such field.
    modality = itk_image.GetMetaData("Modality").removeprefix("MET_MOD_") if itk_image.HasMetaDataKey("Modality") else ""
    return [Image(array, LPS_TO_RAS @ lps, modality=modality if modality in ("CT", "MR", "NM", "US", "PT") else "OT")]


def write_itk(image: Image, path: Path) -> None:
    import SimpleITK as sitk

    if path.name.lower().endswith(DETACHED_SUFFIXES):
        # The data file would keep the temporary name that save() writes through.
        raise MedfmError("medfm writes NRRD and MetaImage as single files: use .nrrd or .mha")
    if image.num_frames > 1:
        raise MedfmError(f"NRRD/MetaImage output holds one volume; this image has {image.num_frames} frames (write .nii.gz)")
    array = image.array[:, :, :, 0, :]
    vector = image.num_channels > 1
    array = array.transpose(2, 1, 0, 3) if vector else array[..., 0].transpose(2, 1, 0)
    itk_image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=vector)
    lps = image.lps_affine
    spacing = np.asarray(image.spacing)
    itk_image.SetSpacing(spacing.tolist())
    itk_image.SetOrigin(lps[:3, 3].tolist())
    itk_image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    sitk.WriteImage(itk_image, str(path), useCompression=True)


def _sniff_nrrd(head: bytes) -> bool:
    return head.startswith(b"NRRD000")


NRRD = register_format(Format("nrrd", (".nrrd", ".nhdr"), read_itk, write_itk, _sniff_nrrd))
METAIMAGE = register_format(Format("metaimage", (".mha", ".mhd"), read_itk, write_itk))
