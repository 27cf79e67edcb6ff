"""Every image in pydicom's and nibabel's own test data that they read, medfm reads the same.

The files are walked at collection time from the installed packages. A file counts when
pydicom decodes its ``pixel_array`` or nibabel loads it with a 2D-4D ``dataobj``; medfm
must then load it with the same values, and for nibabel's formats the same affine.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import apply_rescale

import medfm

PYDICOM_DATA = Path(pydicom.data.DATA_ROOT) / "test_files"
NIBABEL_DATA = [p for p in Path(os.path.dirname(nib.__file__)).rglob("data") if p.is_dir() and "tests" in p.parts]


def _pydicom_pixels(path: Path) -> np.ndarray | None:
    """Rescaled pixels as ``(frames, rows, columns, samples)``, or None if pydicom cannot decode them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except Exception:  # noqa: BLE001 (pydicom cannot read it either: not a case)
            return None
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        if samples == 1:
            pixels = apply_rescale(pixels, ds)
        return np.asarray(pixels, dtype=np.float64).reshape(frames, ds.Rows, ds.Columns, samples)


def _nibabel_image(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = nib.load(path)
            data = np.asanyarray(img.dataobj)
        except Exception:  # noqa: BLE001 (nibabel cannot read it: not a case)
            return None
    return (img, data) if 2 <= data.ndim <= 4 and data.size else None


def _cases() -> list[tuple[str, Path]]:
    cases = []
    for root in [PYDICOM_DATA, *NIBABEL_DATA]:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in (".py", ".pyc"):
                continue
            if _pydicom_pixels(path) is not None:
                cases.append(("pydicom", path))
            elif _nibabel_image(path) is not None:
                cases.append(("nibabel", path))
    return cases


CASES = _cases()


def test_both_packages_ship_test_images() -> None:
    readers = {reader for reader, _ in CASES}
    assert readers == {"pydicom", "nibabel"}


def _planes(image: medfm.Image) -> np.ndarray:
    """medfm's planes back in DICOM's ``(rows, columns, samples)`` order (medfm flips the row axis)."""
    array = np.asarray(image.array, dtype=np.float64)
    return array[:, ::-1].transpose(2, 3, 1, 0, 4).reshape(-1, array.shape[1], array.shape[0], array.shape[4])


def _assert_same_planes(actual: np.ndarray, expected: np.ndarray) -> None:
    """The same planes in any order (medfm sorts slices along their normal); float32 rescaling is close, not equal."""
    def ordered(planes: np.ndarray) -> np.ndarray:
        keys = [float(np.format_float_positional(np.float32(p.sum()), precision=4, unique=False)) for p in planes]
        return planes[np.argsort(keys, kind="stable")]

    assert actual.shape == expected.shape
    np.testing.assert_allclose(ordered(actual), ordered(expected), rtol=1e-6)


def _mosaic_tiles(path: Path, pixels: np.ndarray) -> np.ndarray:
    """A Siemens mosaic's tiles as planes, as nibabel's DICOM wrapper finds them."""
    from nibabel.nicom.dicomwrappers import wrapper_from_data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        wrapper = wrapper_from_data(pydicom.dcmread(path))
    if not getattr(wrapper, "is_mosaic", False):
        return pixels
    per_side = int(np.ceil(np.sqrt(wrapper.n_mosaic)))
    rows, columns = pixels.shape[1] // per_side, pixels.shape[2] // per_side
    tiles = pixels[0, : per_side * rows, : per_side * columns].reshape(per_side, rows, per_side, columns, -1).transpose(0, 2, 1, 3, 4)
    return tiles.reshape(-1, rows, columns, pixels.shape[3])[: wrapper.n_mosaic]


@pytest.mark.parametrize(("reader", "path"), CASES, ids=[f"{r}:{p.name}" for r, p in CASES])
def test_medfm_reads_what_the_fields_readers_read(reader: str, path: Path) -> None:
    image = medfm.load(path)
    if reader == "pydicom":
        expected = _mosaic_tiles(path, _pydicom_pixels(path))
        planes = _planes(image)
        if planes.shape[1:] == expected.shape[1:]:
            _assert_same_planes(planes, expected)
        else:  # a 3D acquisition reoriented to RAS+: the same voxels on permuted axes
            assert image.array.size == expected.size
            np.testing.assert_allclose(np.sort(image.array, axis=None), np.sort(expected, axis=None), rtol=1e-6)
        return
    img, data = _nibabel_image(path)
    is_cifti = isinstance(img, nib.cifti2.Cifti2Image)
    if isinstance(img, nib.minc1.Minc1Image) and data.ndim == 4:
        data = np.moveaxis(data, 0, -1)  # MINC keeps time first; medfm puts frames on T
    if data.dtype.names:  # NIfTI RGB: a structured dtype becomes 3 channels
        data = np.stack([data[c] for c in ("R", "G", "B")], axis=-1)
        data = data.reshape(data.shape[:3] + (1,) * (4 - data.ndim) + (3,))
    np.testing.assert_array_equal(image.array, data.reshape(data.shape + (1,) * (5 - data.ndim)))
    if not is_cifti:  # CIFTI-2 matrices have no voxel grid, hence no affine
        np.testing.assert_allclose(image.affine, img.affine, atol=1e-6)


def _no_pixel_files() -> list[Path]:
    files = []
    for path in sorted(PYDICOM_DATA.rglob("*")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
            except Exception:  # noqa: BLE001 (not DICOM)
                continue
        if not {"PixelData", "FloatPixelData", "DoubleFloatPixelData"} & set(ds.dir()):
            files.append(path)
    return files


@pytest.mark.parametrize("path", _no_pixel_files(), ids=lambda p: p.name)
def test_a_dicom_file_without_pixel_data_is_refused_for_that_reason(path: Path) -> None:
    """pydicom finds no Pixel Data: medfm says so, unless the file is cut (pydicom's rtplan_truncated.dcm)."""
    with pytest.raises(medfm.errors.MedfmError) as caught:
        medfm.load(path)
    expected = "truncated or corrupt" if "truncated" in path.name else "DICOM object without pixel data"
    assert expected in str(caught.value) and "\n" not in str(caught.value)
