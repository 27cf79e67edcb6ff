"""Simulated user interactions on binary masks, shared by interactive training and evaluation.

The corrective click follows the protocol of RITM / SAM evaluations: take the false
negatives and the false positives, and click at the interior-most pixel (maximum of the
distance transform) of whichever error is deeper — positive in a miss, negative in a
false alarm. Every array is ``(rows, columns)`` bool; points and boxes follow
:mod:`medfm.models.segmenters.prompt`: (x, y) pixels with centres at integers, boxes
x0, y0, x1, y1 with x1, y1 the last column and row.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medfm.models.segmenters.prompt import mask_box


def _interior(region: np.ndarray) -> np.ndarray:
    """Distance of each ``region`` pixel to the nearest non-region pixel, the border counting as outside."""
    padded = np.pad(region, 1)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def corrective_click(truth: np.ndarray, prediction: np.ndarray) -> tuple[float, float, int] | None:
    """The next click ``(x, y, label)`` at the centre of the deepest error (label 1 in a miss, 0 in a
    false alarm), or None when ``prediction`` equals ``truth``."""
    best: tuple[float, float, int] | None = None
    best_depth = 0.0
    for region, label in ((truth & ~prediction, 1), (prediction & ~truth, 0)):
        if not region.any():
            continue
        depth = _interior(region)
        if depth.max() > best_depth:
            best_depth = float(depth.max())
            # The maximum is often a ridge (an elongated region): take its middle, not its first pixel.
            ridge = np.argwhere(depth == depth.max())
            row, column = ridge[np.argmin(((ridge - ridge.mean(axis=0)) ** 2).sum(axis=1))]
            best = (float(column), float(row), label)
    return best


def centre_click(truth: np.ndarray) -> tuple[float, float]:
    """The interior-most pixel of ``truth`` as (x, y): the standard first click."""
    x, y, _ = corrective_click(truth, np.zeros_like(truth))
    return x, y


def jittered_box(truth: np.ndarray, rng: np.random.Generator, jitter: float = 0.1) -> np.ndarray:
    """:func:`~medfm.models.segmenters.prompt.mask_box` of ``truth`` with each edge moved by up to
    ``jitter`` × the box's size, as a user would draw it (float64 ``(4,)``)."""
    box = np.array(mask_box(truth))
    size = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
    box = box + rng.uniform(-jitter, jitter, 4) * size
    rows, columns = truth.shape
    return np.clip(box, 0, [columns - 1, rows - 1, columns - 1, rows - 1])


def random_scribble(region: np.ndarray, rng: np.random.Generator, steps: int = 40) -> np.ndarray:
    """A stroke ``(rows, columns)`` bool drawn as a smooth random walk that stays inside ``region``,
    starting from a random point of its inner half."""
    depth = _interior(region)
    candidates = np.flatnonzero(depth >= depth.max() / 2)
    row, column = (float(v) for v in divmod(int(rng.choice(candidates)), region.shape[1]))
    stroke = np.zeros_like(region)
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(steps):
        stroke[int(row), int(column)] = True
        heading += rng.normal(0, 0.4)
        next_row, next_column = row + np.sin(heading), column + np.cos(heading)
        inside = 0 <= next_row < region.shape[0] and 0 <= next_column < region.shape[1]
        if not inside or not region[int(next_row), int(next_column)]:
            heading += np.pi  # turn back at the region's edge rather than leave it
            continue
        row, column = next_row, next_column
    return stroke
