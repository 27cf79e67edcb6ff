"""Display orientation and rendering of image planes for the browser.

A plane from :meth:`medfm.io.Image.frame` is ``(rows, columns)`` = ``(j, i)``. For display
each in-plane axis is flipped when it points towards increasing RAS+ (its affine column's
dominant component is positive), so that every axis points towards decreasing RAS+: the
radiological convention (patient's left on the screen's right, anterior and superior up).
Photographs and video frames, whose default affine is ``diag(-1, -1, 1)``, stay as stored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from medfm.errors import MedfmError
from medfm.io import Image


#: Voxels sampled to find an image's default window.
SAMPLE_VOXELS = 1_000_000


@dataclass(frozen=True)
class Display:
    """How a plane of one image is shown: its size in display pixels and which axes flip."""

    width: int
    height: int
    flip_columns: bool
    flip_rows: bool

    @classmethod
    def of(cls, image: Image) -> Display:
        i_axis, j_axis = image.affine[:3, 0], image.affine[:3, 1]
        return cls(
            width=image.shape[0], height=image.shape[1],
            flip_columns=bool(i_axis[np.argmax(np.abs(i_axis))] > 0),
            flip_rows=bool(j_axis[np.argmax(np.abs(j_axis))] > 0),
        )

    def to_dict(self) -> dict[str, int | bool]:
        return {"width": self.width, "height": self.height, "flip_columns": self.flip_columns, "flip_rows": self.flip_rows}

    def plane_to_display(self, plane: np.ndarray) -> np.ndarray:
        """``(rows, columns[, C])`` plane → the same in display orientation (a view); its own inverse."""
        return plane[::-1 if self.flip_rows else 1, ::-1 if self.flip_columns else 1]

    def point_to_plane(self, x: float, y: float) -> tuple[float, float]:
        """Display pixel ``(x, y)`` → plane pixel ``(x, y)`` (column, row); MedfmError if outside the plane."""
        if not (0 <= x <= self.width - 1 and 0 <= y <= self.height - 1):
            raise MedfmError(f"point ({x:g}, {y:g}) is outside the {self.width}x{self.height} plane "
                             f"(x in [0, {self.width - 1}], y in [0, {self.height - 1}])")
        return (self.width - 1 - x if self.flip_columns else x, self.height - 1 - y if self.flip_rows else y)

    def box_to_plane(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Display box ``x0, y0, x1, y1`` → plane box, corners reordered so x0 < x1 and y0 < y1."""
        (ax, ay), (bx, by) = self.point_to_plane(box[0], box[1]), self.point_to_plane(box[2], box[3])
        return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def default_window(image: Image) -> tuple[float, float]:
    """Window ``(center, width)`` spanning the 0.5th to 99.5th percentile of the image's values."""
    # a regular subsample (every step-th voxel along each axis, a view: nothing of the whole
    # image is copied) gives the same percentiles much faster
    step = max(1, int(np.ceil((image.array.size / SAMPLE_VOXELS) ** (1 / 3))))
    values = image.array[::step, ::step, ::step]
    low, high = (float(v) for v in np.percentile(values.astype(np.float32), [0.5, 99.5]))
    return (low + high) / 2, max(high - low, 1e-6)


def render_png(image: Image, k: int, t: int, display: Display, window: tuple[float, float] | None = None,
               max_side: int | None = None) -> bytes:
    """Plane ``(k, t)`` in display orientation as 8-bit PNG bytes.

    Grey planes are windowed by ``window`` ``(center, width)`` (default :func:`default_window`);
    RGB planes are shown as stored (scaled to 8 bits if they are wider). ``max_side``
    shrinks the picture so that its longest side is at most that many pixels.
    """
    from PIL import Image as PILImage

    plane = display.plane_to_display(image.frame(k, t))
    if plane.ndim == 2:
        center, width = window or default_window(image)
        scaled = (plane.astype(np.float32) - (center - width / 2)) / width * 255.0
        pixels = np.clip(scaled, 0, 255).astype(np.uint8)
    else:
        pixels = plane[..., :3] if plane.dtype == np.uint8 else _to_uint8(plane[..., :3])
    picture = PILImage.fromarray(np.ascontiguousarray(pixels))
    if max_side is not None:
        picture.thumbnail((max_side, max_side))
    return png_bytes(picture)


def label_png(labels: np.ndarray) -> bytes:
    """A display-oriented ``(rows, columns)`` label plane as a PNG of uint8 label values."""
    from PIL import Image as PILImage

    return png_bytes(PILImage.fromarray(np.ascontiguousarray(labels.astype(np.uint8))))


def png_bytes(picture) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)  # a quick squeeze: encoding time is latency here
    return buffer.getvalue()


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    low, high = float(plane.min()), float(plane.max())
    return ((plane.astype(np.float32) - low) / max(high - low, 1e-6) * 255.0).round().astype(np.uint8)
