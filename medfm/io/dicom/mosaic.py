"""Siemens mosaic: one stored image holding a tiled grid of slices (fMRI, DWI).

The CSA image header gives the number of tiles and the slice normal. Tiles are read left
to right, top to bottom; tile ``n`` lies ``n`` slice spacings along the CSA normal from the
first, whose position is Image Position (Patient) (the corner of the whole mosaic) moved to
the corner of one tile, as dcm2niix and nibabel do.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from medfm.io.dicom.frames import Frame, PixelLayout


def _csareader():
    with warnings.catch_warnings():  # nibabel.nicom warns on import that its readers are experimental
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader
    return csareader


def _csa_image(ds: Dataset) -> dict | None:
    csareader = _csareader()
    try:
        return csareader.get_csa_header(ds, "image")
    except csareader.CSAReadError:
        return None


#: Siemens CSA Image Header Info, which every mosaic carries.
CSA_IMAGE_HEADER = Tag(0x0029, 0x1010)


def is_mosaic(ds: Dataset) -> bool:
    # The CSA element is looked up first: a plain dictionary look-up, where converting Image
    # Type (done only for Siemens files) costs more than the rest of a header scan's checks.
    return CSA_IMAGE_HEADER in ds and ds.get(CSA_IMAGE_HEADER) is not None \
        and "MOSAIC" in [str(v).upper() for v in ds.get("ImageType") or []]


def frames(ds: Dataset, path: Path, layout: PixelLayout, common: dict[str, Any]) -> list[Frame]:
    csareader = _csareader()
    csa = _csa_image(ds)
    count = csareader.get_n_mosaic(csa) if csa else None
    if not count:
        raise ValueError("Siemens mosaic without NumberOfImagesInMosaic in its CSA header")
    per_row = math.ceil(math.sqrt(count))
    tile_rows, tile_columns = layout.rows // per_row, layout.columns // per_row
    orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    normal = csareader.get_slice_normal(csa)
    normal = np.cross(row, column) if normal is None else np.asarray(normal, dtype=np.float64)
    first = (
        np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        + row * column_spacing * (layout.columns - tile_columns) / 2
        + column * row_spacing * (layout.rows - tile_rows) / 2
    )
    spacing = common["slice_spacing"] or 1.0
    layout = replace(layout, mosaic=(tile_rows, tile_columns, per_row))
    return [
        Frame(path, n, layout, tuple(first + n * spacing * normal), orientation, (row_spacing, column_spacing),
              tile_rows, tile_columns, common["rescale"], (*common["volume_key"], 0), spacing,
              common["gantry_tilt"], common["acquisition_3d"])
        for n in range(count)
    ]


def tile(mosaic: np.ndarray, layout: PixelLayout, n: int) -> np.ndarray:
    """Tile ``n`` of a decoded mosaic ``(rows, columns, samples)``, a view."""
    tile_rows, tile_columns, per_row = layout.mosaic
    r, c = divmod(n, per_row)
    return mosaic[r * tile_rows:(r + 1) * tile_rows, c * tile_columns:(c + 1) * tile_columns]
