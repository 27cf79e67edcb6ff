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
from medfm.io.windowing import default_window

#: A frame whose values span less than this fraction of their magnitude is blank.
BLANK_RANGE = 0.02


#: Voxel axes of a view's columns and rows, by the voxel axis the view crosses.
IN_PLANE_AXES = {2: (0, 1), 1: (0, 2), 0: (1, 2)}
#: Letters of the RAS+ directions (positive, negative), by world axis.
DIRECTION_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))
#: A view's name by the world axis its normal mostly follows.
VIEW_NAMES = ("sagittal", "coronal", "axial")
#: The voxel axis a view crosses, as the API names it.
AXIS_NAMES = {"k": 2, "j": 1, "i": 0}
#: What an image's values mean, by modality.
MODALITY_UNITS = {"CT": "HU"}


@dataclass(frozen=True)
class Display:
    """How the planes across one voxel axis of an image are shown: their size in display pixels
    and which in-plane axes flip. ``axis`` 2 (the default) gives the planes ``(k, t)`` that
    sessions draw on; 1 and 0 are the reformatted (MPR) planes across ``j`` and ``i``."""

    width: int
    height: int
    flip_columns: bool
    flip_rows: bool
    axis: int = 2

    @classmethod
    def of(cls, image: Image, axis: int = 2) -> Display:
        columns, rows = IN_PLANE_AXES[axis]
        column_axis, row_axis = image.affine[:3, columns], image.affine[:3, rows]
        return cls(
            width=image.shape[columns], height=image.shape[rows],
            flip_columns=bool(column_axis[np.argmax(np.abs(column_axis))] > 0),
            flip_rows=bool(row_axis[np.argmax(np.abs(row_axis))] > 0), axis=axis,
        )

    def to_dict(self) -> dict[str, int | bool]:
        return {"width": self.width, "height": self.height, "flip_columns": self.flip_columns, "flip_rows": self.flip_rows}

    def view_dict(self, image: Image) -> dict[str, object]:
        """The view as the browser draws it: size, flips, its name from the affine, the pixel
        spacing ``[across, down]`` in mm and the patient direction at each edge (``"letters"``)."""
        columns, rows = IN_PLANE_AXES[self.axis]
        right = image.affine[:3, columns] * (-1 if self.flip_columns else 1)
        down = image.affine[:3, rows] * (-1 if self.flip_rows else 1)
        normal = image.affine[:3, self.axis]
        spacing = image.spacing
        return {
            **self.to_dict(), "axis": "ijk"[self.axis], "name": VIEW_NAMES[int(np.argmax(np.abs(normal)))],
            "count": image.shape[self.axis], "spacing": [spacing[columns], spacing[rows]],
            "letters": {"right": _letter(right), "left": _letter(-right), "bottom": _letter(down), "top": _letter(-down)},
        }

    def plane(self, array: np.ndarray, index: int, t: int) -> np.ndarray:
        """The ``(rows, columns[, C])`` plane ``index`` across :attr:`axis` at frame ``t`` of an
        ``(I, J, K, T[, C])`` array, as stored (a view, nothing copied); ``C`` of 1 is dropped."""
        if not 0 <= index < array.shape[self.axis] or not 0 <= t < array.shape[3]:
            raise MedfmError(f"plane {index} across {'ijk'[self.axis]} at frame {t} is outside the image "
                             f"({array.shape[self.axis]} planes, {array.shape[3]} frames)")
        # basic indexing, a view: np.take would first copy the whole volume into one contiguous block
        across: list[int | slice] = [slice(None)] * 3
        across[self.axis] = index
        plane = np.swapaxes(array[:, :, :, t][tuple(across)], 0, 1)
        return plane[..., 0] if plane.ndim == 3 and plane.shape[2] == 1 else plane

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

    def box_to_display(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Plane box ``x0, y0, x1, y1`` → display box (the flips are their own inverse)."""
        return self.box_to_plane(box)


def _letter(direction: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(direction)))
    return DIRECTION_LETTERS[axis][0 if direction[axis] > 0 else 1]


def first_content_frame(image: Image) -> int:
    """The first frame ``t`` that is not blank (a video's black or uniform lead-in), 0 if all are."""
    step = max(1, int(np.ceil((image.array[:, :, :, 0].size / 65536) ** 0.5)))
    for t in range(image.shape[3]):
        sample = image.array[::step, ::step, :, t]  # a regular subsample is enough to tell blank from not
        if float(sample.max()) - float(sample.min()) > BLANK_RANGE * max(1.0, float(np.abs(sample).max())):
            return t
    return 0


def raw_plane(image: Image, display: Display, index: int, t: int) -> tuple[bytes, str]:
    """Plane ``index`` across ``display.axis`` at frame ``t`` in display orientation, as
    little-endian values in the image's own units: ``(bytes, dtype)``, dtype ``"int16"`` or
    ``"uint16"`` for integer images that fit, else ``"float32"``. Grey images only."""
    plane = display.plane_to_display(display.plane(image.array, index, t))
    if plane.ndim != 2:
        raise MedfmError("colour images have no raw values to window: show them as slice.png")
    if plane.dtype.kind in "biu" and plane.dtype.itemsize <= 2 and plane.dtype != np.uint16:
        return np.ascontiguousarray(plane, "<i2").tobytes(), "int16"
    if plane.dtype == np.uint16:
        return np.ascontiguousarray(plane, "<u2").tobytes(), "uint16"
    return np.ascontiguousarray(plane, "<f4").tobytes(), "float32"


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


#: How PNG planes travel in JSON, both ways.
PNG_DATA_URL = "data:image/png;base64,"


def png_data_url(png: bytes) -> str:
    """``png`` bytes as a ``data:image/png;base64,`` URL, as answers carry planes and masks."""
    import base64

    return PNG_DATA_URL + base64.b64encode(png).decode()


def decode_label_png(data_url: str, width: int, height: int) -> np.ndarray:
    """The reader of :func:`label_png` for clients: a ``data:image/png;base64,`` label plane (8-bit
    grey, palette or colour with the label in its red channel) as a ``(rows, columns)`` array of
    that size; its size is checked before a pixel is decoded."""
    import base64
    import binascii

    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if not data_url.startswith(PNG_DATA_URL):
        raise MedfmError("mask must be a PNG data URL (data:image/png;base64,...)")
    try:
        picture = PILImage.open(io.BytesIO(base64.b64decode(data_url[len(PNG_DATA_URL):], validate=True)))
    except (binascii.Error, UnidentifiedImageError, OSError):
        raise MedfmError("mask is not a readable PNG") from None
    if picture.format != "PNG":
        raise MedfmError(f"mask must be a PNG; got {picture.format}")
    if picture.size != (width, height):
        raise MedfmError(f"mask is {picture.size[0]}x{picture.size[1]} pixels; the plane is {width}x{height}")
    if picture.mode not in ("L", "P", "RGB", "RGBA"):
        raise MedfmError(f"mask must be 8-bit grey or colour (label values in the first channel); got mode {picture.mode}")
    values = np.asarray(picture)
    return values if values.ndim == 2 else values[..., 0]


def png_bytes(picture) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)  # a quick squeeze: encoding time is latency here
    return buffer.getvalue()


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    low, high = float(plane.min()), float(plane.max())
    return ((plane.astype(np.float32) - low) / max(high - low, 1e-6) * 255.0).round().astype(np.uint8)
