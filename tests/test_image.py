import re

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.io.image import LPS_TO_RAS, Image, affine_from_lps


def test_short_arrays_are_padded_to_five_axes_without_copying():
    volume = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = Image(volume)
    assert image.shape == (2, 3, 4, 1, 1)
    assert np.shares_memory(image.array, volume)


def test_geometry_derives_from_the_affine():
    affine = affine_from_lps((1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.7, 2.0), np.array([10.0, 20.0, 30.0]))
    image = Image(np.zeros((4, 4, 4)), affine)
    assert image.spacing == pytest.approx((0.5, 0.7, 2.0))
    assert image.orientation == "LPS"
    assert image.origin == pytest.approx((-10.0, -20.0, 30.0))  # LPS (10, 20, 30) in RAS
    np.testing.assert_allclose(image.lps_affine[:3, 3], [10, 20, 30])
    np.testing.assert_allclose(image.direction, np.diag([-1.0, -1.0, 1.0]))


def test_sagittal_orientation_code():
    # Rows toward posterior, columns toward feet: a sagittal slice stack along patient left.
    affine = affine_from_lps((0, 1, 0), (0, 0, -1), (1, 0, 0), (1, 1, 1), np.zeros(3))
    assert Image(np.zeros((2, 2, 2)), affine).orientation == "PIL"


def test_frame_is_rows_by_columns():
    array = np.zeros((5, 3, 1, 1, 3), dtype=np.uint8)
    array[4, 0, 0, 0] = (1, 2, 3)  # i = 4 (column), j = 0 (row)
    plane = Image(array).frame()
    assert plane.shape == (3, 5, 3)
    assert tuple(plane[0, 4]) == (1, 2, 3)


def test_bad_arrays_and_affines_are_refused():
    with pytest.raises(ValueError, match="2 to 5 axes"):
        Image(np.zeros(3))
    with pytest.raises(ValueError, match="singular"):
        Image(np.zeros((2, 2)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="4x4"):
        Image(np.zeros((2, 2)), np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        Image(np.zeros((2, 2)), np.diag([1.0, np.nan, 1.0, 1.0]))


def test_default_affine_is_dicom_identity_in_ras():
    np.testing.assert_array_equal(Image(np.zeros((2, 2))).affine, LPS_TO_RAS)


@pytest.mark.parametrize("k, t, message", [(-1, 0, "slice -1 is outside the image (slices 0 to 3)"),
                                           (4, 0, "slice 4 is outside the image (slices 0 to 3)"),
                                           (0, 2, "frame 2 is outside the image (frames 0 to 1)")])
def test_frame_outside_the_image_is_an_error_not_another_plane(k, t, message):
    image = Image(np.zeros((5, 6, 4, 2)))
    with pytest.raises(MedfmError, match=re.escape(message)):
        image.frame(k, t)
