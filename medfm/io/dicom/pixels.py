"""Pixel values: the output type after rescaling, and reading a file's frames.

Native (uncompressed) pixels are read with one seek and one ``readinto``, straight into the
output volume's plane when no conversion is needed; anything else is decoded by pydicom
and its installed plugins (pylibjpeg for JPEG, JPEG 2000, RLE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.errors import UnreadableFileError
from medfm.io.dicom.frames import Frame, PixelLayout


def output_dtype(frames: list[Frame]) -> np.dtype:
    """The smallest type that holds every rescaled value the headers allow.

    Integer slopes and intercepts keep integers (int16/uint16/int32); anything else gives
    float32, as stored values times a fractional slope are not integers.
    """
    layout = frames[0].layout
    stored = np.dtype(layout.dtype).newbyteorder("=")
    rescales = {f.rescale for f in frames}
    if rescales == {(1.0, 0.0)} or layout.samples > 1:
        return stored
    if not all(float(s).is_integer() and float(i).is_integer() for s, i in rescales):
        return np.dtype(np.float32)
    bits = min(layout.bits_stored, stored.itemsize * 8)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if stored.kind == "i" else (0, (1 << bits) - 1)
    values = [v for s, i in rescales for v in (low * s + i, high * s + i)]
    for candidate in (stored, np.dtype(np.int16), np.dtype(np.int32)):
        info = np.iinfo(candidate)
        if info.min <= min(values) and max(values) <= info.max:
            return candidate
    return np.dtype(np.float32)


def _fix_bits(raw: np.ndarray, layout: PixelLayout) -> None:
    """Clear bits above Bits Stored (unsigned) or sign-extend from it (signed), in place."""
    spare = raw.dtype.itemsize * 8 - layout.bits_stored
    if spare <= 0 or layout.samples > 1:
        return
    if raw.dtype.kind == "u":
        raw &= (1 << layout.bits_stored) - 1
    else:
        raw <<= spare
        raw >>= spare


def read_native_into(path: Path, layout: PixelLayout, out: np.ndarray) -> None:
    """Read a single-frame native file's pixels into ``out`` ``(rows, columns, samples)``, C-contiguous."""
    with open(path, "rb") as handle:
        handle.seek(layout.offset)
        count = handle.readinto(memoryview(out).cast("B"))
    if count != layout.frame_bytes:
        raise UnreadableFileError(path, f"pixel data is truncated: {count} of {layout.frame_bytes} bytes")
    _fix_bits(out, layout)


def decode(path: Path, layout: PixelLayout) -> np.ndarray:
    """Every frame of ``path`` as ``(frames, rows, columns, samples)`` stored values, native byte order."""
    if layout.offset >= 0:
        raw = np.empty(layout.number_of_frames * layout.rows * layout.columns * layout.samples, np.dtype(layout.dtype))
        with open(path, "rb") as handle:
            handle.seek(layout.offset)
            count = handle.readinto(memoryview(raw).cast("B"))
        if count != raw.nbytes:
            raise UnreadableFileError(path, f"pixel data is truncated: {count} of {raw.nbytes} bytes")
        raw = raw.astype(raw.dtype.newbyteorder("="), copy=False)
        if layout.planar_configuration == 1 and layout.samples > 1:
            raw = raw.reshape(layout.number_of_frames, layout.samples, layout.rows, layout.columns).transpose(0, 2, 3, 1)
        raw = raw.reshape(layout.number_of_frames, layout.rows, layout.columns, layout.samples)
        _fix_bits(raw, layout)
        return raw
    pixels = _pydicom_decode(path, layout)
    if layout.samples == 1:
        pixels = pixels[..., None]
    return pixels.reshape(layout.number_of_frames, layout.rows, layout.columns, layout.samples)


def _pydicom_decode(path: Path, layout: PixelLayout) -> np.ndarray:
    from pydicom.pixels import get_decoder, pixel_array
    from pydicom.uid import UID

    uid = UID(layout.transfer_syntax)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnreadableFileError(path, f"transfer syntax {uid.name} ({uid}) is not supported") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise UnreadableFileError(path, f"transfer syntax {uid.name} cannot be decoded: install {missing}")
    try:
        return pixel_array(path)
    except Exception as exc:  # the plugins' own errors become one line naming the file
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise UnreadableFileError(path, f"cannot decode {uid.name} pixel data: {reason[:300]}") from None


def rescale_into(out: np.ndarray, raw: np.ndarray, rescale: tuple[float, float]) -> None:
    """``out[...] = raw * slope + intercept`` in ``out``'s type, without a full-size temporary."""
    slope, intercept = rescale
    if out.dtype.kind == "f":  # in float64, then rounded once; the temporary is one plane
        np.copyto(out, raw * slope + intercept, casting="unsafe")
        return
    np.copyto(out, raw, casting="unsafe")
    if slope != 1.0:
        out *= int(slope)
    if intercept != 0.0:
        out += int(intercept)
