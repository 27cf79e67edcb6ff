"""Pixel values: the output type after rescaling, and reading a file's frames.

Native (uncompressed) pixels are read with one seek and one ``readinto``, straight into the
output volume's plane when no conversion is needed; anything else is decoded by pydicom
and its installed plugins (pylibjpeg for JPEG, JPEG 2000, RLE).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medfm.errors import UnreadableFileError
from medfm.io.dicom.codestream import declared_size
from medfm.io.dicom.frames import Frame, PixelLayout
from medfm.io.limits import check_decoded_size

#: Deflated Explicit VR Little Endian: the whole data set after the file meta is one deflate stream.
DEFLATED = "1.2.840.10008.1.2.1.99"
_INFLATE_CHUNK = 1 << 16


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


def check_decodable(path: Path, layout: PixelLayout) -> None:
    """Refuse ``path`` if no installed plugin decodes its transfer syntax; else import its plugins."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(layout.transfer_syntax)
    try:
        decoder = get_decoder(uid)  # imports the plugins that decode it
    except NotImplementedError:
        named = f"{uid.name} ({uid})" if uid.is_valid else "UID (not a valid UID)"
        raise UnreadableFileError(path, f"transfer syntax {named} is not supported") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise UnreadableFileError(path, f"transfer syntax {uid.name} cannot be decoded: install {missing}")


def _pydicom_decode(path: Path, layout: PixelLayout) -> np.ndarray:
    from pydicom import dcmread
    from pydicom.pixels import pixel_array
    from pydicom.uid import UID

    uid = UID(layout.transfer_syntax)
    check_decodable(path, layout)
    check_decoded_size(path, layout.frame_bytes * layout.number_of_frames, path.stat().st_size, f"{uid.name} pixel data")
    try:
        # Through a data set, not pixel_array(path): dcmread tolerates files whose body
        # is implicit VR under an explicit transfer syntax, as some writers produce. From
        # memory: a damaged element length then reads what is there instead of allocating it.
        ds = dcmread(io.BytesIO(path.read_bytes()), force=True)
        _check_codestreams(path, layout, ds)
        return pixel_array(ds)
    except UnreadableFileError:
        raise
    except BaseException as exc:  # the plugins' own errors become one line naming the file
        # pylibjpeg-rle's Rust decoder panics on damaged data with a BaseException (PanicException).
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise UnreadableFileError(path, f"cannot decode {uid.name} pixel data: {reason[:300]}") from None


def _check_codestreams(path: Path, layout: PixelLayout, ds) -> None:
    """Refuse a frame whose codestream declares more pixels than the header's Rows x Columns
    (a decoder would allocate, and spend its time filling, what the codestream declares)."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import UID

    if "PixelData" not in ds or not UID(layout.transfer_syntax).is_encapsulated:
        return
    for number, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=layout.number_of_frames), 1):
        size = declared_size(frame)
        if size is not None and size[0] * size[1] > layout.columns * layout.rows:
            raise UnreadableFileError(
                path, f"the {UID(layout.transfer_syntax).name} codestream of frame {number} declares {size[0]}x{size[1]} pixels, "
                f"more than the header's {layout.columns}x{layout.rows}",
            )


def deflated_has_pixels(path: Path, meta_length: int) -> bool:
    """Whether a deflated file's data set holds Pixel Data, inflating it under the decompression limits.

    The deflate stream starts after the file meta group (128-byte preamble, ``DICM``, the
    12-byte group length element and ``meta_length`` bytes); it is inflated chunk by chunk
    and refused as soon as it exceeds the limits, so a deflate bomb never fills memory.
    """
    import zlib

    from pydicom import dcmread

    stored = path.stat().st_size
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    with open(path, "rb") as handle:
        handle.seek(144 + meta_length)
        while chunk := handle.read(_INFLATE_CHUNK):
            inflated += len(inflater.decompress(chunk))
            check_decoded_size(path, inflated, stored, "deflated data set")
    return "PixelData" in dcmread(io.BytesIO(path.read_bytes()), force=True)


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
