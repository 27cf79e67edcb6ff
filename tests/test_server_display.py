"""Display orientation: radiological for medical affines, as stored for photos; coordinate mapping."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from medfm.errors import MedfmError
from medfm.io import Image
from medfm.io.image import LPS_TO_RAS, affine_from_lps
from medfm.server.display import Display, render_png


def dicom_affine(row, column) -> np.ndarray:
    return affine_from_lps(np.array(row, float), np.array(column, float), np.cross(row, column), (1.0, 1.0, 1.0), np.zeros(3))


@pytest.mark.parametrize(("affine", "flips"), [
    (dicom_affine((1, 0, 0), (0, 1, 0)), (False, False)),  # DICOM axial: i to the patient's left, j posterior
    (dicom_affine((0, 1, 0), (0, 0, -1)), (False, False)),  # DICOM sagittal: i posterior, j inferior
    (dicom_affine((1, 0, 0), (0, 0, -1)), (False, False)),  # DICOM coronal: i left, j inferior
    (np.eye(4), (True, True)),  # NIfTI RAS axial: i right, j anterior
    (np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]]), (True, True)),  # NIfTI coronal: i right, j superior
    (LPS_TO_RAS, (False, False)),  # a photograph or video frame: as stored
])
def test_flips_make_every_axis_point_towards_decreasing_ras(affine, flips):
    display = Display.of(Image(np.zeros((4, 3, 2)), affine))
    assert (display.flip_columns, display.flip_rows) == flips
    assert (display.width, display.height) == (4, 3)


def test_points_boxes_and_label_planes_map_both_ways():
    display = Display(width=10, height=6, flip_columns=True, flip_rows=False)
    assert display.point_to_plane(0, 0) == (9, 0)
    assert display.point_to_plane(2.5, 5) == (6.5, 5)
    assert display.box_to_plane((1, 1, 3, 4)) == (6, 1, 8, 4)
    plane = np.arange(60).reshape(6, 10)
    shown = display.plane_to_display(plane)
    assert shown[0, 0] == plane[0, 9]
    assert np.array_equal(display.plane_to_display(shown), plane)
    with pytest.raises(MedfmError, match=r"point \(10, 0\) is outside the 10x6 plane"):
        display.point_to_plane(10, 0)


def test_render_png_windows_grey_and_keeps_rgb():
    volume = np.zeros((4, 2, 1))
    volume[0, 0, 0] = 100.0  # i=0, j=0
    grey = Image(volume, np.eye(4))
    display = Display.of(grey)
    pixels = np.asarray(PILImage.open(io.BytesIO(render_png(grey, 0, 0, display, (50.0, 100.0)))))
    assert pixels.shape == (2, 4)
    assert pixels[1, 3] == 255 and pixels[0, 0] == 0  # (i=0, j=0) shown bottom right for a RAS image
    rgb = Image(np.zeros((4, 2, 1, 1, 3), np.uint8))
    rgb.array[0, 0, 0, 0] = (10, 20, 30)
    shown = np.asarray(PILImage.open(io.BytesIO(render_png(rgb, 0, 0, Display.of(rgb)))))
    assert shown.shape == (2, 4, 3) and tuple(shown[0, 0]) == (10, 20, 30)
