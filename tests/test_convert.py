"""``medfm convert`` on folders that hold several DICOM series."""

import numpy as np
import pytest
from typer.testing import CliRunner

import medfm
from medfm.io.convert import convert
from medfm.cli import app
from medfm.io.synthetic import phantom, write_dicom_series


@pytest.fixture()
def two_series(tmp_path):
    study = "1.2.826.0.1.3680043.8.498.1"
    write_dicom_series(phantom((24, 20, 6)), tmp_path / "in" / "a", series_number=3, series_description="T1 axial", study_uid=study)
    write_dicom_series(
        phantom((24, 20, 5), seed=1), tmp_path / "in" / "b", series_number=7, series_description="T2/sag",
        row_direction=(0, 1, 0), column_direction=(0, 0, -1), study_uid=study,
    )
    return tmp_path / "in"


def test_folder_of_series_gives_one_file_per_series(two_series, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(app, ["convert", str(two_series), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["series_003_T1_axial.nii.gz", "series_007_T2_sag.nii.gz"]
    axial = medfm.load(out / "series_003_T1_axial.nii.gz")
    sagittal = medfm.load(out / "series_007_T2_sag.nii.gz")
    assert axial.spatial_shape == (24, 20, 6) and sagittal.spatial_shape == (24, 20, 5)
    assert axial.orientation != sagittal.orientation


def test_file_name_with_several_series_gets_series_stems(two_series, tmp_path):
    result = CliRunner().invoke(app, ["convert", str(two_series), str(tmp_path / "study.nrrd")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.nrrd")) == ["study_series_003_T1_axial.nrrd", "study_series_007_T2_sag.nrrd"]


def test_each_series_keeps_its_voxels(two_series, tmp_path):
    written = convert(two_series, tmp_path)
    for series_folder, path in zip(sorted(two_series.iterdir()), sorted(written)):
        np.testing.assert_array_equal(medfm.load(path).array, medfm.load(series_folder).array)
