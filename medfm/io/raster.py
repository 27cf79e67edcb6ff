"""PNG, JPEG, BMP (Pillow) and TIFF (tifffile): photographs and 2D frames without geometry.

Such files carry no patient geometry, so pixels are given a nominal 1 mm spacing with
DICOM's default orientation (columns toward patient left, rows toward posterior), as ITK
does; ``metadata["spacing_known"]`` is False so that nobody mistakes it for a measurement.
A PNG carries an image's :class:`~medfm.provenance.Provenance` as JSON in an iTXt chunk
(:data:`PNG_PROVENANCE_KEY`), which Pillow, ``exiftool`` and ``pngcheck`` show.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.io.formats import Format, register_format
from medfm.io.image import Image
from medfm.io.limits import check_decoded_size
from medfm.provenance import SYNTHETIC_NOTE, Provenance

#: The PNG iTXt keyword holding an image's provenance as JSON.
PNG_PROVENANCE_KEY = "medfm-provenance"
#: Where medfm 0.1 put a segmentation's record.
_LEGACY_PNG_KEY = "medfm-segmentation"
_MODE_CONVERSIONS = {"1": "L", "P": "RGBA", "PA": "RGBA", "LA": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def _from_rows_columns(pixels: np.ndarray, planes: bool) -> np.ndarray:
    """``([K,] rows, columns[, C])`` numpy order to ``(I, J, K, 1, C)``."""
    if not planes:
        pixels = pixels[None]
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    return pixels.transpose(2, 1, 0, 3)[:, :, :, None, :]


def _photo_metadata() -> dict:
    return {"spacing_known": False}


def read_pillow(path: Path) -> list[Image]:
    # Pillow warns about damaged metadata that it reads past (a DICOM file whose preamble looks like a
    # TIFF header: "Corrupt EXIF data"), two raw lines around the CLI's output; the picture then reads,
    # or fails in one line
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
        return _read_pillow(path)


def _read_pillow(path: Path) -> list[Image]:
    from PIL import Image as PILImage
    from PIL import ImageOps

    # From memory, not the file: a damaged chunk length then reads what is there, where
    # reading the file would first allocate the 4 GB that the length claims.
    try:
        opened = PILImage.open(io.BytesIO(path.read_bytes()))
    except PILImage.UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        raise ValueError("not an image file Pillow can identify") from None
    with opened as picture:
        width, height = picture.size
        # Bytes per pixel of the widest mode a picture is converted to (RGBA, or 32-bit I/F).
        check_decoded_size(path, width * height * 4, path.stat().st_size)
        picture.load()
        provenance = png_provenance(picture) if picture.format == "PNG" else None
        picture = ImageOps.exif_transpose(picture)
        if picture.mode in _MODE_CONVERSIONS:
            target = _MODE_CONVERSIONS[picture.mode]
            if picture.mode == "P" and "transparency" not in picture.info:
                target = "RGB"
            picture = picture.convert(target)
        pixels = np.asarray(picture)
    if pixels.size == 0:
        raise ValueError("image has zero pixels")
    return [Image(_from_rows_columns(pixels, planes=False), metadata=_photo_metadata(), provenance=provenance)]


def png_provenance(picture: Any) -> Provenance | None:
    """The provenance in an open Pillow PNG's text chunks, or None."""
    text = picture.text.get(PNG_PROVENANCE_KEY) or picture.text.get(_LEGACY_PNG_KEY)
    return Provenance.from_json(text) if text else None


def png_info(provenance: Provenance | None) -> Any:
    """Pillow ``pnginfo`` holding ``provenance`` (None: no text chunk); a synthetic image's also says so
    in a plain ``Description`` text chunk that any viewer shows."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if provenance is not None:
        info.add_itxt(PNG_PROVENANCE_KEY, provenance.to_json())
        if provenance.synthetic:
            info.add_text("Description", SYNTHETIC_NOTE)
    return info


def read_tiff(path: Path) -> list[Image]:
    import tifffile

    # tifffile logs recoverable damage (a broken page chain after complete pixel data) as
    # warnings, which would print around the CLI's one-line output; real failures raise.
    logger = logging.getLogger("tifffile")
    disabled, logger.disabled = logger.disabled, True
    try:
        with tifffile.TiffFile(path) as tiff:
            # A first page without pixels (damaged tags) sends tifffile's series detection
            # into an endless loop over the page chain (found by benchmarks/fuzz_campaign.py).
            first = tiff.pages.first
            if not first.shape or 0 in first.shape:
                raise ValueError(f"first TIFF page has no pixels (shape {first.shape})")
            if not tiff.series:
                raise ValueError("TIFF holds no image series")
            series = tiff.series[0]
            check_decoded_size(path, math.prod(series.shape) * series.dtype.itemsize, path.stat().st_size)
            _check_strips(series, path.stat().st_size)
            pixels = series.asarray()
    finally:
        logger.disabled = disabled
    if pixels.size == 0:
        raise ValueError("image has zero pixels")
    channels_last = pixels.ndim >= 3 and pixels.shape[-1] in (3, 4)
    planes = pixels.ndim == (4 if channels_last else 3)
    if pixels.ndim > (4 if channels_last else 3):
        raise ValueError(f"TIFF array of shape {pixels.shape} has more axes than pages, rows, columns and channels")
    return [Image(_from_rows_columns(pixels, planes=planes), metadata=_photo_metadata())]


def _check_strips(series, size: int) -> None:
    """Refuse a page whose strips or tiles reach past the end of the file: tifffile reads (and
    allocates) each one's declared byte count, 4 GB for a damaged count, before finding it short."""
    for number, page in enumerate(series.pages, 1):
        for offset, count in zip(getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())):
            if offset + count > size:
                raise ValueError(f"page {number} has a strip or tile of {count} bytes at byte {offset}, past the end of the "
                                 f"{size}-byte file: it is truncated or damaged")


def _rows_columns(image: Image, what: str) -> np.ndarray:
    if image.num_frames > 1 or not image.is_2d:
        raise MedfmError(
            f"{what} holds one 2D image; this one has shape {image.shape} (I, J, K, T, C): write .nii.gz or .tiff"
        )
    if image.num_channels not in (1, 3, 4):
        raise MedfmError(f"{what} holds grey, RGB or RGBA pixels; this image has {image.num_channels} channels")
    return image.frame()


def integer_pixels(pixels: np.ndarray, allowed: tuple[type, ...], what: str) -> np.ndarray:
    if pixels.dtype == bool:
        return pixels.astype(np.uint8) * 255
    for dtype in allowed:
        info = np.iinfo(dtype)
        if np.issubdtype(pixels.dtype, np.integer) and (pixels.size == 0 or (pixels.min() >= info.min and pixels.max() <= info.max)):
            return pixels.astype(dtype, copy=False)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    names = " or ".join(np.dtype(d).name for d in allowed)
    raise MedfmError(
        f"{what} stores {names} pixels; this image is {pixels.dtype} in [{low:g}, {high:g}]: "
        "write .tiff or .nii.gz to keep the values, or window them to 8 bits (medfm convert --window CENTER,WIDTH or a preset)"
    )


def write_pillow(image: Image, path: Path) -> None:
    from PIL import Image as PILImage

    suffix = path.name.lower().rsplit(".", 1)[-1]
    what = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP"}[suffix]
    pixels = _rows_columns(image, what)
    allowed = (np.uint8, np.uint16) if what == "PNG" and image.num_channels == 1 else (np.uint8,)
    pixels = integer_pixels(pixels, allowed, what)
    if what == "JPEG" and image.num_channels == 4:
        raise MedfmError("JPEG has no alpha channel; write .png")
    options = {"quality": 95} if what == "JPEG" else {"pnginfo": png_info(image.provenance)} if what == "PNG" else {}
    PILImage.fromarray(pixels).save(path, format=what, **options)


def write_tiff(image: Image, path: Path) -> None:
    import tifffile

    if image.num_frames > 1:
        raise MedfmError(f"TIFF output holds slices, not frames; this image has {image.num_frames} frames: write .nii.gz")
    planes = image.array[:, :, :, 0, :].transpose(2, 1, 0, 3)
    if image.num_channels == 1:
        planes = planes[..., 0]
    tifffile.imwrite(path, planes[0] if image.is_2d else planes, photometric="rgb" if image.num_channels in (3, 4) else "minisblack")


def _sniff_png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _sniff_jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _sniff_bmp(head: bytes) -> bool:
    return head.startswith(b"BM") and len(head) >= 26


def _sniff_tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


PNG = register_format(Format("png", (".png",), read_pillow, write_pillow, _sniff_png, keeps_provenance=True))
JPEG = register_format(Format("jpeg", (".jpg", ".jpeg"), read_pillow, write_pillow, _sniff_jpeg))
BMP = register_format(Format("bmp", (".bmp",), read_pillow, write_pillow, _sniff_bmp))
TIFF = register_format(Format("tiff", (".tif", ".tiff"), read_tiff, write_tiff, _sniff_tiff))
