"""DICOM reading: geometry and values of generated series, shipped files, scanning, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import medfm.io
from medfm.cli import app
from medfm.errors import MedfmError, UnreadableFileError
from medfm.io.dicom import DicomSeries, read_series, scan_dicom
from medfm.io.image import affine_from_lps
from medfm.io.synthetic import phantom, write_dicom_series

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_NICOM = Path(nib.__file__).parent / "nicom" / "tests" / "data"
VOLUME = phantom((32, 24, 10))
SPACING = (0.8, 0.9, 2.5)
ORIGIN = np.array([-100.0, -120.0, -40.0])
COS, SIN = np.cos(np.radians(20)), np.sin(np.radians(20))
ORIENTATIONS = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "oblique": ((COS, SIN, 0), (-SIN * COS, COS * COS, SIN)),
}
PHI_VALUES = ("Phantom^Synthetic", "SYNTH0001", "19700101", "ACC0001")


def _expected_affine(row, column) -> np.ndarray:
    """dcm2niix's layout: j runs against the column direction from the last row."""
    row, column = np.asarray(row, float), np.asarray(column, float)
    origin = ORIGIN + column * SPACING[1] * (VOLUME.shape[1] - 1)
    return affine_from_lps(row, -column, np.cross(row, column), SPACING, origin)


def _no_phi(text: str) -> None:
    for value in PHI_VALUES:
        assert value not in text


# ---------------------------------------------------------------- geometry and values


@pytest.mark.parametrize("order", ["ascending", "descending", "interleaved", "shuffled"])
@pytest.mark.parametrize("plane", sorted(ORIENTATIONS))
def test_series_geometry_and_values(plane: str, order: str, tmp_path: Path) -> None:
    row, column = ORIENTATIONS[plane]
    write_dicom_series(VOLUME, tmp_path, row_direction=row, column_direction=column, spacing=SPACING,
                       origin=ORIGIN, slice_order=order, series_description=f"{plane} {order}")
    image = medfm.io.load(tmp_path)
    assert image.shape == (32, 24, 10, 1, 1)
    assert np.array_equal(image.array[..., 0, 0], VOLUME[:, ::-1, :])
    assert np.allclose(image.affine, _expected_affine(row, column), atol=1e-4)
    assert image.modality == "CT"
    assert image.metadata["series_description"] == f"{plane} {order}"
    assert image.metadata["series_number"] == 1 and image.metadata["body_part"] == "HEAD"
    assert image.phi["patient_name"] == "Phantom^Synthetic" and image.phi["patient_id"] == "SYNTH0001"
    _no_phi(repr(image.metadata))


def test_slices_are_sorted_along_the_normal_whatever_the_stored_direction(tmp_path: Path) -> None:
    write_dicom_series(VOLUME, tmp_path, spacing=(0.8, 0.8, -2.5))
    image = medfm.io.load(tmp_path)
    assert np.array_equal(image.array[..., 0, 0], VOLUME[:, ::-1, ::-1])
    assert image.affine[2, 2] == pytest.approx(2.5) and image.origin[2] == pytest.approx(-40 - 9 * 2.5)


def test_four_d_series_orders_volumes_by_temporal_position(tmp_path: Path) -> None:
    volumes = np.stack([VOLUME, VOLUME + 100, VOLUME - 50], axis=-1)
    write_dicom_series(volumes, tmp_path, slice_order="shuffled", modality="MR")
    image = medfm.io.load(tmp_path)
    assert image.shape == (32, 24, 10, 3, 1)
    assert np.array_equal(image.array[..., 0], volumes[:, ::-1])


def test_enhanced_multiframe_four_d(tmp_path: Path) -> None:
    volumes = np.stack([VOLUME, VOLUME + 1], axis=-1)
    files = write_dicom_series(volumes, tmp_path, enhanced=True, modality="MR", slice_order="interleaved")
    assert len(files) == 1
    image = medfm.io.load(tmp_path)
    assert image.shape == (32, 24, 10, 2, 1)
    assert np.array_equal(image.array[..., 0], volumes[:, ::-1])


@pytest.mark.parametrize(("rescale", "bits", "dtype"), [
    ((1.0, -1024.0), 16, "int32"),  # unsigned 16-bit stored values can exceed int16 after rescaling
    ((1.0, -1024.0), 12, "int16"),  # a typical CT: read straight into the volume, rescaled in place
    ((2.0, -1024.0), 12, "int16"),
    ((1.0, -32768.0), 16, "int16"),  # the full unsigned range shifted into int16
    ((0.5, -1024.0), 16, "float32"),
    ((2.0, 0.0), 16, "int32"),
])
def test_rescale_is_applied(rescale, bits: int, dtype: str, tmp_path: Path) -> None:
    write_dicom_series(VOLUME, tmp_path, rescale=rescale, bits_stored=bits)
    image = medfm.io.load(tmp_path)
    assert image.array.dtype == dtype
    expected = np.round((VOLUME - rescale[1]) / rescale[0]) * rescale[0] + rescale[1]
    assert np.array_equal(image.array[..., 0, 0], expected[:, ::-1])


def test_rgb_series_has_three_channels(tmp_path: Path) -> None:
    colours = np.random.default_rng(3).integers(0, 256, (32, 24, 4, 3))
    write_dicom_series(colours, tmp_path, color=True)
    image = medfm.io.load(tmp_path)
    assert image.shape == (32, 24, 4, 1, 3) and image.array.dtype == np.uint8
    assert np.array_equal(image.array[:, :, :, 0, :], colours[:, ::-1])


def test_rle_compressed_series_matches_uncompressed(tmp_path: Path) -> None:
    write_dicom_series(VOLUME, tmp_path / "rle", transfer_syntax=pydicom.uid.RLELossless)
    image = medfm.io.load(tmp_path / "rle")
    assert image.metadata["transfer_syntax"] == pydicom.uid.RLELossless
    assert np.array_equal(image.array[..., 0, 0], VOLUME[:, ::-1])


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm"])
def test_shipped_encodings_decode_to_the_same_pixels(name: str) -> None:
    reference = medfm.io.load(PYDICOM_FILES / "MR_small.dcm")
    image = medfm.io.load(PYDICOM_FILES / name)
    assert image.shape == (64, 64, 1, 1, 1)
    assert np.array_equal(image.array, reference.array)
    assert np.allclose(image.affine, reference.affine)


def test_shipped_jpeg_rgb_has_three_channels() -> None:
    image = medfm.io.load(PYDICOM_FILES / "SC_rgb_jpeg_dcmtk.dcm")
    assert image.shape == (100, 100, 1, 1, 3)
    stored = pydicom.dcmread(PYDICOM_FILES / "SC_rgb_jpeg_dcmtk.dcm").pixel_array  # (rows, columns, 3)
    assert np.array_equal(image.array[:, :, 0, 0, :], stored[::-1].transpose(1, 0, 2))


def test_a_file_without_pixel_spacing_has_no_known_spacing(tmp_path: Path) -> None:
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    assert medfm.io.load(PYDICOM_FILES / "CT_small.dcm").metadata.get("spacing_known", True)
    del ds.PixelSpacing
    ds.save_as(tmp_path / "no_spacing.dcm")
    image = medfm.io.load(tmp_path / "no_spacing.dcm")
    assert image.spacing[:2] == (1.0, 1.0) and image.metadata["spacing_known"] is False


def test_a_malformed_number_is_named_by_its_attribute(tmp_path: Path) -> None:
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    stored = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    spacing = "\\".join(str(v) for v in ds.PixelSpacing).encode()
    assert stored.count(spacing) == 1
    (tmp_path / "bad.dcm").write_bytes(stored.replace(spacing, b"X" + spacing[1:]))
    with pytest.raises(MedfmError, match=r"malformed DICOM attributes \(PixelSpacing: "):
        medfm.io.load(tmp_path / "bad.dcm")


def test_undecodable_transfer_syntax_is_refused_in_one_line() -> None:
    with pytest.raises(UnreadableFileError) as caught:
        medfm.io.load(PYDICOM_FILES / "JPEG-lossy.dcm")
    message = str(caught.value)
    assert "JPEG-lossy.dcm" in message and "cannot decode JPEG Extended" in message and "\n" not in message


def test_unsupported_transfer_syntax_is_refused(tmp_path: Path) -> None:
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small_RLE.dcm")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    ds.save_as(tmp_path / "video.dcm")
    message = _load_error(tmp_path / "video.dcm")
    assert message.endswith(f"transfer syntax MPEG2 Main Profile / Main Level ({pydicom.uid.MPEG2MPML}) is not supported")


def test_missing_decoder_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg-rle>=2.0"]

    monkeypatch.setattr("pydicom.pixels.get_decoder", lambda uid: Unavailable())
    message = _load_error(PYDICOM_FILES / "MR_small_RLE.dcm")
    assert message.endswith("transfer syntax RLE Lossless cannot be decoded: install pylibjpeg-rle>=2.0")


def _gunzip(names: tuple[str, ...], folder: Path) -> Path:
    folder.mkdir()
    for name in names:
        with gzip.open(NIBABEL_NICOM / name) as packed:
            (folder / name.removesuffix(".gz")).write_bytes(packed.read())
    return folder


def test_siemens_mosaic_is_split_into_slices(tmp_path: Path) -> None:
    folder = _gunzip(("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"), tmp_path / "dwi")
    image = medfm.io.load(folder)
    assert image.shape == (128, 128, 48, 2, 1)
    assert image.spacing == pytest.approx((1.796875, 1.796875, 3.0))
    assert np.allclose(image.affine[:3, 3], [115.0, -93.1715, -79.9053], atol=1e-3)  # dcm2niix's origin


def test_philips_enhanced_3d_acquisition_is_reoriented_to_ras(tmp_path: Path) -> None:
    folder = _gunzip(("philips_mprage.dcm.gz",), tmp_path / "mprage")
    series, bad = scan_dicom(folder.iterdir())
    assert bad == [] and series[0].shape == (176, 256, 256, 1, 1)
    image = read_series(series[0])[0]
    assert image.shape == series[0].shape and image.orientation == "RAS"
    assert image.spacing == pytest.approx((1.0, 1.0, 1.0), abs=1e-3)


# ---------------------------------------------------------------- scanning


def test_scan_groups_series_nested_folders_and_lists_bad_files(tmp_path: Path) -> None:
    write_dicom_series(VOLUME, tmp_path / "a", series_number=2, study_uid="1.2.3")
    write_dicom_series(VOLUME[:, :, :4], tmp_path / "a" / "deeper" / "b", series_number=5, modality="MR", study_uid="1.2.3")
    (tmp_path / "a" / "notes.dcm").write_text("not an image")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    series, bad = scan_dicom(files)
    assert [s.metadata["series_number"] for s in series] == [2, 5]
    first, second = series
    assert isinstance(first, DicomSeries) and len(first.files) == 10 and len(second.files) == 4
    assert first.shape == (32, 24, 10, 1, 1) and first.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert second.metadata["modality"] == "MR" and first.phi["patient_id"] == "SYNTH0001"
    _no_phi(repr(first.metadata))
    assert bad == [(tmp_path / "a" / "notes.dcm", "not a DICOM file (no DICM marker at byte 128)")]
    assert len(medfm.io.load_all(tmp_path)) == 2  # a folder reads every series under it


def test_sniff_finds_dicom_without_suffix(tmp_path: Path) -> None:
    path = write_dicom_series(VOLUME[:, :, :1], tmp_path)[0]
    plain = path.rename(tmp_path / "IM0001")
    assert medfm.io.detect_format(plain).name == "dicom"
    assert medfm.io.load(plain).shape == (32, 24, 1, 1, 1)


# ---------------------------------------------------------------- bad input


def _load_error(path: Path) -> str:
    with pytest.raises(MedfmError) as caught:
        medfm.io.load_all(path)
    message = str(caught.value)
    assert "\n" not in message
    _no_phi(message)
    return message


def test_missing_slice_names_the_gap(tmp_path: Path) -> None:
    files = write_dicom_series(VOLUME, tmp_path, origin=(0, 0, 0))
    files[4].unlink()
    message = _load_error(tmp_path)
    assert "missing slice" in message and "between slice positions 7.500 and 12.500 mm" in message
    assert str(tmp_path) in message


def test_mixed_orientations_are_refused(tmp_path: Path) -> None:
    write_dicom_series(VOLUME, tmp_path, series_uid="1.2.3.4")
    write_dicom_series(VOLUME[:, :, :2], tmp_path, series_uid="1.2.3.4", row_direction=(0, 1, 0),
                       column_direction=(0, 0, -1), seed=1)
    assert "mixed orientations within the series" in _load_error(tmp_path)


def test_inconsistent_image_size_is_refused(tmp_path: Path) -> None:
    write_dicom_series(VOLUME, tmp_path, series_uid="1.2.3.4")
    write_dicom_series(phantom((16, 24, 1)), tmp_path, series_uid="1.2.3.4", origin=(-100, -120, 0), seed=2)
    assert "inconsistent image size" in _load_error(tmp_path)


def test_gantry_tilt_is_refused_naming_the_angle(tmp_path: Path) -> None:
    write_dicom_series(VOLUME, tmp_path, gantry_tilt=15)
    message = _load_error(tmp_path)
    assert "gantry tilt of 15.00°" in message and "does not resample" in message


def test_truncated_pixel_data_is_refused(tmp_path: Path) -> None:
    path = write_dicom_series(VOLUME[:, :, :1], tmp_path)[0]
    path.write_bytes(path.read_bytes()[:-100])
    message = _load_error(path)
    assert path.name in message and "header claims 1536 bytes of pixel data" in message and "holds 1436" in message


def test_truncated_header_and_non_dicom_are_refused(tmp_path: Path) -> None:
    path = write_dicom_series(VOLUME[:, :, :1], tmp_path)[0]
    path.write_bytes(path.read_bytes()[:300])
    assert _load_error(path) == f"{path}: truncated or corrupt: the file ends before its pixel data"
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x89PNG" + bytes(400))
    assert _load_error(fake) == f"{fake}: not a DICOM file (no DICM marker at byte 128)"


def test_zero_rows_is_refused(tmp_path: Path) -> None:
    path = write_dicom_series(VOLUME[:, :, :1], tmp_path)[0]
    ds = pydicom.dcmread(path)
    ds.Rows = 0
    ds.save_as(path)
    assert "image has 0 rows and 32 columns: no pixels" in _load_error(path)


def test_cli_convert_reports_one_line_and_writes_nothing(tmp_path: Path) -> None:
    files = write_dicom_series(VOLUME, tmp_path / "in")
    files[3].unlink()
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "in"), str(tmp_path / "out.nii.gz")])
    assert result.exit_code != 0 and isinstance(result.exception, MedfmError)
    assert not (tmp_path / "out.nii.gz").exists() and not list(tmp_path.glob(".medfm-tmp-*"))


def test_cli_convert_writes_dcm2niix_layout(tmp_path: Path) -> None:
    write_dicom_series(VOLUME, tmp_path / "in", spacing=SPACING, origin=ORIGIN)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "in"), str(tmp_path / "out.nii.gz")])
    assert result.exit_code == 0, result.output
    written = nib.load(tmp_path / "out.nii.gz")
    assert np.array_equal(np.asanyarray(written.dataobj), VOLUME[:, ::-1])
    assert np.allclose(written.affine, _expected_affine((1, 0, 0), (0, 1, 0)), atol=1e-4)
