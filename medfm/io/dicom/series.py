"""Volume assembly: frames placed into one preallocated array, file by file, in threads.

The buffer is ``(T, K, rows, columns, C)`` in C order, so each DICOM frame is one
contiguous plane and a native file is read straight into it. The returned array is a
view of that buffer in ``(I, J, K, T, C)`` order with the row axis reversed (dcm2niix's
layout, see :mod:`medfm.io.dicom.geometry`): no copy is made at any point.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medfm.io.dicom import mosaic, pixels
from medfm.io.dicom.frames import Frame
from medfm.io.dicom.geometry import VolumePlan
from medfm.io.image import Image

_READ_THREADS = min(8, 2 * (os.cpu_count() or 1))


def _fill_file(path: Path, placed: list[tuple[Frame, np.ndarray]]) -> None:
    """Write every frame of ``path`` into its plane of the output buffer."""
    frame, plane = placed[0]
    layout = frame.layout
    direct = (
        len(placed) == 1 and layout.number_of_frames == 1 and layout.offset >= 0 and layout.mosaic is None
        and layout.planar_configuration == 0 and frame.rescale == (1.0, 0.0)
        and plane.dtype == np.dtype(layout.dtype)
    )
    if direct:
        pixels.read_native_into(path, layout, plane)
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
    buffer = np.empty((n_frames, n_slices, rows, columns, samples), dtype)
    by_file: dict[Path, list[tuple[Frame, np.ndarray]]] = defaultdict(list)
    for k, stack in enumerate(plan.grid):
        for t, frame in enumerate(stack):
            by_file[frame.path].append((frame, buffer[t, k]))
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        for _ in pool.map(lambda item: _fill_file(*item), by_file.items()):
            pass
    array = buffer.transpose(3, 2, 1, 0, 4)[:, ::-1]
    if plan.reorientation is not None:
        from nibabel.orientations import apply_orientation

        array = apply_orientation(array, plan.reorientation)
    return Image(array, plan.output_affine, modality, dict(metadata), dict(phi))
