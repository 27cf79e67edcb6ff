"""What one header says about its frames: geometry per frame, pixel layout per file.

A *frame* is one 2D plane of a series: a single-frame file, one frame of an enhanced
multi-frame file, or one tile of a Siemens mosaic. Header scanning turns every file into
frames; volume assembly only ever sees frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Transfer syntaxes whose pixels medfm reads straight from the file at a known offset.
NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2": "<",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "<",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": ">",  # Explicit VR Big Endian
}


def looks_like_dicom(head: bytes) -> bool:
    """``DICM`` at offset 128, or a file without preamble that starts with a group-0008 tag."""
    return head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x00\x08")


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """How a file stores its pixels.

    ``offset`` is where the Pixel Data value starts in a native (uncompressed) file, or
    -1 when pydicom must decode it (compressed, deflated, unusual photometric). ``mosaic``
    is ``(tile_rows, tile_columns, tiles_per_row)`` for a Siemens mosaic.
    """

    transfer_syntax: str
    offset: int
    rows: int
    columns: int
    samples: int
    number_of_frames: int
    dtype: str  # numpy dtype of the stored values, with byte order
    bits_stored: int
    planar_configuration: int
    mosaic: tuple[int, int, int] | None = None

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.samples * np.dtype(self.dtype).itemsize


@dataclass(frozen=True, slots=True)
class Frame:
    """One 2D plane: where it lies (DICOM LPS mm) and how to find its pixels.

    ``position`` is the centre of its first stored pixel (row 0, column 0);
    ``orientation`` is Image Orientation (Patient): the row then column direction cosines;
    ``pixel_spacing`` is (between rows, between columns) as in Pixel Spacing.
    ``volume_key`` orders frames that share a position into volumes (temporal position,
    acquisition number, trigger time, instance number).
    """

    path: Path
    index: int  # frame of a multi-frame file, tile of a mosaic, 0 otherwise
    layout: PixelLayout
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    rescale: tuple[float, float]  # slope, intercept
    volume_key: tuple[float, ...]
    slice_spacing: float | None = None  # Spacing Between Slices, else Slice Thickness
    gantry_tilt: float = 0.0
    acquisition_3d: bool = False
