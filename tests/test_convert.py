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


def test_ct_to_png_is_refused_with_the_window_offered_then_windowed(tmp_path):
    hu = np.array([[-1000, -160, 40, 240], [1000, 3000, 0, 80]], np.int16).T  # (I, J): 4 columns, 2 rows
    medfm.save(medfm.Image(hu, modality="CT"), tmp_path / "ct.nii.gz")
    refused = CliRunner().invoke(app, ["convert", str(tmp_path / "ct.nii.gz"), str(tmp_path / "ct.png")])
    assert refused.exit_code != 0 and "--window" in str(refused.exception) and not (tmp_path / "ct.png").exists()
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "ct.nii.gz"), str(tmp_path / "ct.png"), "--window", "40,400"])
    assert result.exit_code == 0, result.output
    # 40 +- 200 HU onto 0..255: -160 and below black, 240 and above white, linear between
    expected = np.clip(np.round((hu.astype(np.float32) + 160) / 400 * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(medfm.load(tmp_path / "ct.png").array[:, :, 0, 0, 0], expected)
    assert expected[2, 0] == 128 and expected[1, 0] == 0 and expected[3, 0] == 255  # 40 HU mid-grey
    preset = CliRunner().invoke(app, ["convert", str(tmp_path / "ct.nii.gz"), str(tmp_path / "lung.png"), "--window", "lung"])
    assert preset.exit_code == 0, preset.output
    lung = medfm.load(tmp_path / "lung.png").array[:, :, 0, 0, 0]
    assert lung[0, 0] == round((-1000 + 1350) / 1500 * 255)  # lung: center -600, width 1500


@pytest.mark.parametrize("text", ["40", "a,b", "40,0", "40,-5", "lungs"])
def test_bad_window_is_refused_in_one_line(text):
    from medfm.errors import MedfmError
    from medfm.io.convert import parse_window

    with pytest.raises(MedfmError, match="window"):
        parse_window(text)


def test_output_into_a_missing_folder_needs_mkdir(tmp_path):
    medfm.save(medfm.Image(np.zeros((4, 4), np.uint8)), tmp_path / "a.png")
    target = tmp_path / "typo" / "deeper" / "a.nii.gz"
    refused = CliRunner().invoke(app, ["convert", str(tmp_path / "a.png"), str(target)])
    assert refused.exit_code != 0 and "folder does not exist; create it first or pass --mkdir" in str(refused.exception)
    assert not (tmp_path / "typo").exists()
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "a.png"), str(target), "--mkdir"])
    assert result.exit_code == 0, result.output
    assert target.exists()
    from medfm.io.formats import CREATE_FOLDERS

    assert CREATE_FOLDERS.get() is True  # the command's setting ended with it: Python callers keep the default


def test_folder_of_series_into_a_new_folder_is_created_when_its_parent_exists(two_series, tmp_path):
    result = CliRunner().invoke(app, ["convert", str(two_series), str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "new").iterdir())) == 2


def test_python_callers_choose_whether_save_creates_folders(tmp_path):
    from medfm.errors import MedfmError
    from medfm.io.formats import CREATE_FOLDERS

    image = medfm.Image(np.zeros((4, 4), np.uint8))
    medfm.save(image, tmp_path / "made" / "a.png")  # the library default: folders created
    token = CREATE_FOLDERS.set(False)
    try:
        with pytest.raises(MedfmError, match="folder does not exist"):
            medfm.save(image, tmp_path / "refused" / "a.png")
    finally:
        CREATE_FOLDERS.reset(token)
    assert (tmp_path / "made" / "a.png").exists() and not (tmp_path / "refused").exists()
