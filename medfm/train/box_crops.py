"""Labelled crops from box annotations, e.g. BCCD's cell type (RBC / WBC / platelets) from its VOC boxes.

A dataset folder holds ``boxes.csv`` (``image,label,xmin,ymin,xmax,ymax``: one row per box, pixel
corners, ``image`` relative to the folder, as ``shared/data/bccd_blood_cells`` flattens its XML).
Each box becomes one labelled plane: the image cut to the box, clipped to its bounds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path

BOXES_FILE = "boxes.csv"
COLUMNS = ("image", "label", "xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class BoxCrop:
    """One box: ``image`` (relative to the dataset folder), its ``label`` and ``box`` as x0, y0, x1, y1 pixels."""

    image: str
    label: str
    box: tuple[int, int, int, int]


def read_box_crops(folder: str | Path) -> list[BoxCrop]:
    """Every box of ``folder/boxes.csv`` with a positive area; a one-line error naming the file otherwise."""
    path = Path(folder) / BOXES_FILE
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the box table ({exc.strerror})") from None
    missing = [column for column in COLUMNS if rows and column not in rows[0]]
    if not rows or missing:
        raise MedfmError(f"{display_path(path)}: a box table needs the columns {', '.join(COLUMNS)}"
                         + (f"; missing {', '.join(missing)}" if missing else "; it has no rows"))
    crops = []
    for number, row in enumerate(rows, start=2):
        try:
            box = tuple(int(float(row[key])) for key in COLUMNS[2:])
        except ValueError:
            raise MedfmError(f"{display_path(path)}: line {number}: box corners must be numbers") from None
        if box[2] > box[0] and box[3] > box[1]:
            crops.append(BoxCrop(row["image"], row["label"], box))
    return crops


def cut(plane: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``plane`` ``(rows, columns[, C])`` cut to ``box`` (x0, y0, x1, y1), clipped to the plane."""
    x0, y0 = max(box[0], 0), max(box[1], 0)
    return plane[y0:min(box[3], plane.shape[0]), x0:min(box[2], plane.shape[1])]
