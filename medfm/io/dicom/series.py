"""Volume assembly: frames placed into one preallocated array, file by file, in threads
(native and deflated files) or worker processes (files whose decoders are native libraries,
:mod:`medfm.io.dicom.decoding`).

The buffer is ``(T, K, rows, columns, C)`` in C order, so each DICOM frame is one
contiguous plane and a native file is read straight into it. The returned array is a
view of that buffer in ``(I, J, K, T, C)`` order with the row axis reversed (dcm2niix's
layout, see :mod:`medfm.io.dicom.geometry`): no copy is made at any point.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medfm.io.dicom import mosaic, pixels
from medfm.io.dicom.decoding import (
    SLOW_SYNTAXES,
    decode_elsewhere,
    decode_files,
    decode_workers,
    shared_empty,
)
from medfm.io.dicom.frames import Frame, PixelLayout
from medfm.io.dicom.geometry import VolumePlan
from medfm.io.image import Image

_READ_THREADS = min(8, 2 * (os.cpu_count() or 1))


def _holds_stored_values(out: np.dtype, layout: PixelLayout) -> bool:
    """Whether ``out`` has the stored values' size and represents every value Bits Stored allows."""
    stored = np.dtype(layout.dtype)
    if out.kind not in "iu" or out.itemsize != stored.itemsize:
        return False
    bits = min(layout.bits_stored, stored.itemsize * 8)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if stored.kind == "i" else (0, (1 << bits) - 1)
    info = np.iinfo(out)
    return info.min <= low and high <= info.max


def _read_native(path: Path, layout: PixelLayout, plane: np.ndarray, rescale: tuple[float, float], scratch) -> None:
    """A single-frame native file's pixels, rescaled, into ``plane`` with one pass over it.

    When the plane's type holds the stored values they are read straight into it and
    rescaled in place; otherwise they go through this thread's scratch plane (``scratch``
    is a ``threading.local``), so no plane-sized array is allocated per file.
    """
    stored = np.dtype(layout.dtype)
    slope, intercept = rescale
    if _holds_stored_values(plane.dtype, layout):
        raw = plane.view(stored)
        pixels.read_native_into(path, layout, raw)
        if not stored.isnative:
            raw.byteswap(inplace=True)
        if slope != 1.0:
            plane *= int(slope)
        if intercept != 0.0:
            plane += int(intercept)
        return
    raw = getattr(scratch, "plane", None)
    if raw is None or raw.shape != plane.shape or raw.dtype != stored:
        raw = scratch.plane = np.empty(plane.shape, stored)
    pixels.read_native_into(path, layout, raw)
    if not stored.isnative:
        raw = raw.byteswap().view(stored.newbyteorder("="))
    if plane.dtype.kind == "f":
        pixels.rescale_into(plane, raw, rescale)
        return
    # Integer slope and intercept (output_dtype gives floats otherwise), in the plane's type.
    scalar = plane.dtype.type
    if slope != 1.0:
        np.multiply(raw, scalar(slope), out=plane, casting="unsafe")
        if intercept != 0.0:
            plane += scalar(intercept)
    else:
        np.add(raw, scalar(intercept), out=plane, casting="unsafe")


def _read_in_place(placed: list[tuple[Frame, Any]]) -> bool:
    """Whether the file is one native plane, read straight into its plane (else it is decoded)."""
    layout = placed[0][0].layout
    return len(placed) == 1 and layout.number_of_frames == 1 and layout.offset >= 0 and layout.mosaic is None \
        and layout.planar_configuration == 0


def _fill_file(path: Path, placed: list[tuple[Frame, np.ndarray]], scratch) -> None:
    """Write every frame of ``path`` into its plane of the output buffer."""
    frame, plane = placed[0]
    layout = frame.layout
    if _read_in_place(placed):
        _read_native(path, layout, plane, frame.rescale, scratch)
        return
    decoded = pixels.decode(path, layout)
    for frame, plane in placed:
        raw = mosaic.tile(decoded[0], layout, frame.index) if layout.mosaic else decoded[frame.index]
        pixels.rescale_into(plane, raw, frame.rescale)


def assemble(plan: VolumePlan, modality: str, metadata: dict, phi: dict) -> Image:
    """The image of a planned series: ``(I, J, K, T, C)`` in dcm2niix's layout and affine."""
    columns, rows, n_slices, n_frames, samples = plan.shape
    frames = [frame for stack in plan.grid for frame in stack]
    dtype = pixels.output_dtype(frames)
    shape = (n_frames, n_slices, rows, columns, samples)
    plane_bytes = rows * columns * samples * dtype.itemsize
    by_file: dict[Path, list[tuple[Frame, tuple[int, int]]]] = defaultdict(list)  # frames with their (t, k)
    for k, stack in enumerate(plan.grid):
        for t, frame in enumerate(stack):
            by_file[frame.path].append((frame, (t, k)))
    # C decoders hold the GIL and can loop on damaged data: their files are decoded in worker
    # processes under a time limit, into a shared buffer.
    elsewhere = [path for path, placed in by_file.items()
                 if not _read_in_place(placed) and placed[0][0].layout.transfer_syntax in SLOW_SYNTAXES] \
        if decode_elsewhere() else []
    buffer = shared_empty(shape, dtype) if elsewhere else np.empty(shape, dtype)
    skipped = set(elsewhere)
    here = [(path, [(frame, buffer[index]) for frame, index in placed]) for path, placed in by_file.items()
            if path not in skipped]
    scratch = threading.local()
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        for _ in pool.map(lambda item: _fill_file(*item, scratch), here):
            pass
    if elsewhere:
        workers = decode_workers(len(elsewhere), sum(len(by_file[path]) for path in elsewhere) * plane_bytes)
        decode_files(buffer, [(path, by_file[path]) for path in elsewhere], _fill_file, workers)
    array = buffer.transpose(3, 2, 1, 0, 4)[:, ::-1]
    if plan.reorientation is not None:
        from nibabel.orientations import apply_orientation

        array = apply_orientation(array, plan.reorientation)
    return Image(array, plan.output_affine, modality, dict(metadata), dict(phi))
