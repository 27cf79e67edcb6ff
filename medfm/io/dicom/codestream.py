"""The frame size a JPEG, JPEG-LS or JPEG 2000 codestream declares, read from its header before decoding.

Decoders allocate what the codestream declares, whatever the DICOM header says: a damaged
JPEG-LS frame header in a 45x10 image declared 24074x41005, and libjpeg spent tens of
seconds filling a gigabyte. :func:`declared_size` finds the size so that such a frame is
refused before a decoder sees it.
"""

from __future__ import annotations

import struct

#: JPEG start-of-frame markers (SOF0-SOF15 less DHT, JPG and DAC) and JPEG-LS's SOF55.
_START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
_START_OF_SCAN = 0xDA
#: Markers that stand alone, without a length: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
#: A JPEG 2000 codestream starts with SOC then SIZ.
_J2K_START = b"\xff\x4f\xff\x51"


def declared_size(frame: bytes) -> tuple[int, int] | None:
    """``(columns, rows)`` that ``frame``'s codestream declares, or None where it declares none we can read."""
    if frame[:4] == _J2K_START and len(frame) >= 24:
        # SIZ: length, capabilities, then the reference grid's size and the image's offset on it.
        width, height, left, top = struct.unpack_from(">IIII", frame, 8)
        return max(width - left, 0), max(height - top, 0)
    if frame[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(frame):
        if frame[position] != 0xFF:
            return None
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker in _STANDALONE:
            position += 2
        elif marker == _START_OF_SCAN:
            return None
        elif marker in _START_OF_FRAME:
            if position + 9 > len(frame):
                return None
            rows, columns = struct.unpack_from(">HH", frame, position + 5)  # after length and precision
            return columns, rows
        else:
            position += 2 + struct.unpack_from(">H", frame, position + 2)[0]
    return None
