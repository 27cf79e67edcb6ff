"""One prompt schema for every interactive segmenter, and the one place prompts are checked.

Coordinates are pixel indices of the 2D plane that :meth:`medfm.io.Image.frame` returns,
segment-anything's convention: ``x`` is the column (voxel axis i) and ``y`` the row
(voxel axis j); pixel centres are at integers and fractions are allowed, so a point lies
in ``[0, columns - 1] x [0, rows - 1]``. A box's x1, y1 are its last column and row, as
SAM and MedSAM compute boxes from masks. ``slice_index`` (k) and ``frame_index`` (t) say
which plane of a volume or video the prompt is on.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import MedfmError

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass
class Scribble:
    """A stroke the user drew: a polyline ``[(x, y), ...]`` in pixels, or a ``(rows, columns)`` bool mask.

    ``positive`` strokes mark the structure, negative ones the background. Give exactly one
    of ``points`` and ``mask``.
    """

    points: list[Point] = field(default_factory=list)
    mask: np.ndarray | None = None
    positive: bool = True

    def to_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The stroke as a ``(rows, columns)`` bool mask; polylines are drawn one pixel wide."""
        if self.mask is not None:
            return np.asarray(self.mask, dtype=bool)
        drawn = np.zeros(shape, dtype=bool)
        vertices = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        for start, end in zip(vertices, vertices[1:] if len(vertices) > 1 else vertices):
            steps = int(math.ceil(np.abs(end - start).max())) + 1
            line = np.linspace(start, end, steps)
            columns = np.clip(np.rint(line[:, 0]).astype(int), 0, shape[1] - 1)
            rows = np.clip(np.rint(line[:, 1]).astype(int), 0, shape[0] - 1)
            drawn[rows, columns] = True
        return drawn

    def sample_points(self, shape: tuple[int, int], count: int = 8) -> list[Point]:
        """Up to ``count`` pixels ``(x, y)`` spread evenly along the stroke, for models
        that take clicks but not strokes (SAM)."""
        rows, columns = np.nonzero(self.to_mask(shape))
        if self.mask is None:  # keep the polyline's order so samples spread along its length
            order = _polyline_order(self.points, rows, columns)
            rows, columns = rows[order], columns[order]
        picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
        return [(float(columns[i]), float(rows[i])) for i in picks]


def mask_box(mask: np.ndarray, margin: float = 0) -> Box:
    """The box x0, y0, x1, y1 around a ``(rows, columns)`` mask (its first and last foreground
    column and row), widened by ``margin`` pixels on every side and kept inside the plane.

    The mask must have foreground: an empty mask has no box.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        raise MedfmError(f"a box needs a non-empty (rows, columns) mask; got shape {mask.shape} with {int(mask.sum())} pixels set")
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        float(max(columns[0] - margin, 0)), float(max(rows[0] - margin, 0)),
        float(min(columns[-1] + margin, width - 1)), float(min(rows[-1] + margin, height - 1)),
    )


def _polyline_order(points: list[Point], rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Indices sorting drawn pixels by distance travelled along the polyline (nearest vertex)."""
    vertices = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    travelled = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(vertices, axis=0), axis=1))])
    pixels = np.stack([columns, rows], axis=1).astype(np.float64)
    nearest = np.linalg.norm(pixels[:, None, :] - vertices[None, :, :], axis=2).argmin(axis=1)
    return np.argsort(travelled[nearest], kind="stable")


@dataclass
class Prompt:
    """One interaction's worth of guidance on one 2D plane.

    ``points``: (x, y) pixels, with ``point_labels`` 1 positive / 0 negative, one per point;
    ``boxes``: x0, y0, x1, y1 pixels (x1, y1 the last column and row) with x0 < x1, y0 < y1;
    ``scribbles``: strokes;
    ``mask_input``: (rows, columns) previous logits (float) or mask (bool) to refine;
    ``label`` / ``label_name``: the value (> 0) and name the structure gets in a label map;
    ``slice_index`` / ``frame_index``: k / t of the plane in a volume or video.
    """

    points: list[Point] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    scribbles: list[Scribble] = field(default_factory=list)
    mask_input: np.ndarray | None = None
    label: int | None = None
    label_name: str | None = None
    slice_index: int | None = None
    frame_index: int | None = None

    @classmethod
    def from_world(
        cls, points_mm: Any, image: Any, point_labels: list[int] | None = None, **fields: Any
    ) -> Prompt:
        """Points given as ``(N, 3)`` RAS+ world millimetres → a prompt on the slice they lie on.

        Each point maps through ``image.affine`` to voxel (i, j, k): x = i, y = j, and k
        (rounded) becomes ``slice_index``; all points must fall on one slice of the image.
        ``point_labels`` defaults to all positive; ``fields`` are other :class:`Prompt` fields.
        """
        world = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        voxels = (np.linalg.inv(image.affine) @ np.c_[world, np.ones(len(world))].T).T[:, :3]
        extent = np.asarray(image.spatial_shape, dtype=np.float64)
        # points must be inside the grid of voxel centres, as check_prompt asks of pixels;
        # k only has to round to a slice
        inside = np.all((voxels[:, :2] >= 0) & (voxels[:, :2] <= extent[:2] - 1), axis=1)
        outside = ~(inside & (voxels[:, 2] >= -0.5) & (voxels[:, 2] < extent[2] - 0.5))
        if outside.any():
            n = int(np.argmax(outside))
            raise MedfmError(
                f"point {tuple(round(v, 2) for v in world[n])} mm lies outside the image "
                f"(voxel {tuple(round(v, 2) for v in voxels[n])}, image size {image.spatial_shape} i, j, k)"
            )
        slices = sorted(set(np.rint(voxels[:, 2]).astype(int).tolist()))
        if len(slices) != 1:
            raise MedfmError(f"points lie on several slices (k = {slices}); give one prompt per slice")
        labels = [1] * len(world) if point_labels is None else list(point_labels)
        points = [(float(i), float(j)) for i, j in voxels[:, :2]]
        return cls(points=points, point_labels=labels, slice_index=slices[0], **fields)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (arrays as dtype, shape and base64 bytes); :meth:`from_dict` reads it."""
        return {
            "points": [list(p) for p in self.points],
            "point_labels": list(self.point_labels),
            "boxes": [list(b) for b in self.boxes],
            "scribbles": [
                {"points": [list(p) for p in s.points], "mask": _array_to_dict(s.mask), "positive": s.positive}
                for s in self.scribbles
            ],
            "mask_input": _array_to_dict(self.mask_input),
            "label": self.label,
            "label_name": self.label_name,
            "slice_index": self.slice_index,
            "frame_index": self.frame_index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prompt:
        return cls(
            points=[tuple(p) for p in data.get("points", [])],
            point_labels=list(data.get("point_labels", [])),
            boxes=[tuple(b) for b in data.get("boxes", [])],
            scribbles=[
                Scribble([tuple(p) for p in s.get("points", [])], _array_from_dict(s.get("mask")), s.get("positive", True))
                for s in data.get("scribbles", [])
            ],
            mask_input=_array_from_dict(data.get("mask_input")),
            label=data.get("label"),
            label_name=data.get("label_name"),
            slice_index=data.get("slice_index"),
            frame_index=data.get("frame_index"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Prompt:
        return cls.from_dict(json.loads(text))


def _array_to_dict(array: np.ndarray | None) -> dict[str, Any] | None:
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def _array_from_dict(data: dict[str, Any] | None) -> np.ndarray | None:
    if data is None:
        return None
    return np.frombuffer(base64.b64decode(data["data"]), dtype=np.dtype(data["dtype"])).reshape(data["shape"]).copy()


def check_prompt(prompt: Prompt, shape: tuple[int, int]) -> None:
    """Refuse, in one line, a prompt that no segmenter can use on a ``(rows, columns)`` plane."""
    rows, columns = shape
    if not (prompt.points or prompt.boxes or prompt.scribbles):
        raise MedfmError("empty prompt: give at least one point, box or scribble")
    if len(prompt.point_labels) != len(prompt.points):
        raise MedfmError(
            f"prompt has {len(prompt.points)} points but {len(prompt.point_labels)} point labels; give one label per point"
        )
    for label in prompt.point_labels:
        if label not in (0, 1):
            raise MedfmError(f"point label must be 1 (positive) or 0 (negative); got {label!r}")
    for x, y in prompt.points:
        _check_inside((x, y), shape, "point")
    for box in prompt.boxes:
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise MedfmError(f"box {tuple(box)} has a non-finite coordinate")
        if x1 == x0 or y1 == y0:
            raise MedfmError(f"zero-area box {tuple(box)}: x1 must exceed x0 and y1 exceed y0")
        if x1 < x0 or y1 < y0:
            raise MedfmError(f"box {tuple(box)} is reversed: give x0, y0, x1, y1 with x0 < x1 and y0 < y1")
        if x0 < 0 or y0 < 0 or x1 > columns - 1 or y1 > rows - 1:
            raise MedfmError(
                f"box {tuple(box)} extends outside the {columns}x{rows} plane (columns x rows; "
                f"x in [0, {columns - 1}], y in [0, {rows - 1}])"
            )
    for scribble in prompt.scribbles:
        if (scribble.mask is None) == (not scribble.points):
            raise MedfmError("a scribble needs either points (a polyline) or a mask, not both or neither")
        if scribble.mask is not None:
            mask = np.asarray(scribble.mask)
            if mask.shape != (rows, columns):
                raise MedfmError(f"scribble mask has shape {mask.shape}; the plane is {(rows, columns)} (rows, columns)")
            if not mask.any():
                raise MedfmError("scribble mask is empty: it marks no pixel")
        for point in scribble.points:
            _check_inside(point, shape, "scribble point")
    if prompt.mask_input is not None and np.shape(prompt.mask_input) != (rows, columns):
        raise MedfmError(
            f"mask_input has shape {np.shape(prompt.mask_input)}; the plane is {(rows, columns)} (rows, columns)"
        )
    if prompt.label is not None and (not isinstance(prompt.label, int) or not 0 < prompt.label < 65536):
        raise MedfmError(f"label must be an integer from 1 to 65535 (0 is background); got {prompt.label!r}")


def _check_inside(point: Point, shape: tuple[int, int], what: str) -> None:
    x, y = (float(v) for v in point)
    if not (0 <= x <= shape[1] - 1 and 0 <= y <= shape[0] - 1):
        raise MedfmError(
            f"{what} ({x:g}, {y:g}) is outside the {shape[1]}x{shape[0]} plane (columns x rows; "
            f"x in [0, {shape[1] - 1}], y in [0, {shape[0] - 1}])"
        )
