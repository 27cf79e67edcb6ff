"""DICOM de-identification: PS3.15 Basic Profile actions, consistent UIDs, geometry kept, reports."""

from __future__ import annotations

import errno
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medfm.cli import main
from medfm.errors import MedfmError
from medfm.io.deid import UIDMap, deidentify, deidentify_dataset
from medfm.io.deid.profile import rule_for, table
from medfm.io.synthetic import phantom, write_dicom_series

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
SHIPPED = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "nested_priv_SQ.dcm")
PATIENT = {"patient_name": "Doe^Jane", "patient_id": "PID-778899"}
INSTITUTION = "St Example Hospital"
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName", "OperatorsName", "OtherPatientIDs")


def _edit(path: Path, **attributes) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def _make_input(root: Path) -> dict:
    """Two series of one study (one referencing the other), pydicom's files, a text file."""
    study, frame = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    volume = phantom((32, 24, 8))
    series = {
        name: write_dicom_series(volume, root / "study" / name, series_number=n, study_uid=study,
                                 frame_of_reference_uid=frame, **PATIENT)
        for n, name in ((1, "s1"), (2, "s2"))
    }
    first = pydicom.dcmread(series["s1"][0])
    for path in series["s2"]:
        ds = pydicom.dcmread(path)
        ds.InstitutionName = INSTITUTION
        ds.OtherPatientIDs = "OTHER-4455"
        ref = Dataset()
        ref.ReferencedSOPClassUID = first.SOPClassUID
        ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([ref])
        ds.add_new(0x00091010, "LO", "PRIVATE-PHI-Jane")
        ds.private_block(0x0011, "MEDFM TEST", create=True).add_new(0x01, "SH", "secret")
        ds.add_new(0x60000010, "US", 24)  # an overlay plane with burned text in its label
        ds.add_new(0x60001500, "LO", "Jane Doe overlay")
        ds.save_as(path)
    for name in SHIPPED:
        shutil.copy(PYDICOM_FILES / name, root / name)
    (root / "notes.txt").write_text("not DICOM")
    return {"study_uid": study, "frame_uid": frame, "series": series, "first": first}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("deid")
    made = _make_input(root / "in")
    report = deidentify(root / "in", root / "out", report=root / "report.json")
    return {**made, "root": root, "report": report, "source": root / "in", "out": root / "out"}


def _output(run, input_path: Path) -> Path:
    return run["out"] / input_path.relative_to(run["source"])


def test_table_covers_the_basic_profile():
    rows = table()["attributes"]
    assert len(rows) > 600
    actions = {row["action"] for row in rows}
    assert actions <= {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    assert rule_for(0x00100010).action == "Z"  # PatientName
    assert rule_for(0x00080080).action == "X/Z/D"  # InstitutionName
    assert rule_for(0x0020000D).action == "U"  # StudyInstanceUID
    assert rule_for(0x60023000).action == "X"  # Overlay Data in any 60xx group
    assert rule_for(0x00200037) is None  # ImageOrientationPatient is kept


def test_no_identifier_left_anywhere(run):
    outputs = sorted(p for p in run["out"].rglob("*") if p.is_file())
    assert len(outputs) == 16 + len(SHIPPED)
    for path in sorted(run["source"].rglob("*.dcm")):
        original = pydicom.dcmread(path)
        kept = {str(e.value) for e in original if rule_for(e.tag) is None and not e.tag.is_private}
        # a value that the profile keeps elsewhere (Institution "TOSHIBA", Manufacturer "TOSHIBA_MEC") may stay
        secrets = {v for k in IDENTIFYING if (v := str(original.get(k, ""))) and not any(v in other for other in kept)}
        raw = _output(run, path).read_bytes()
        for value in secrets:
            assert value.encode() not in raw, (path.name, value)
        for elem in pydicom.dcmread(_output(run, path)).iterall():
            assert not elem.tag.is_private, (path.name, elem.tag)
            assert elem.tag >> 24 not in (0x50, 0x60), (path.name, elem.tag)
            assert str(elem.value) not in secrets or elem.VR == "SQ", (path.name, elem.keyword)
    assert b"Jane" not in b"".join(p.read_bytes() for p in outputs)


def test_uids_remapped_consistently(run):
    new = {name: [pydicom.dcmread(_output(run, p)) for p in paths] for name, paths in run["series"].items()}
    everything = new["s1"] + new["s2"]
    studies = {ds.StudyInstanceUID for ds in everything}
    frames = {ds.FrameOfReferenceUID for ds in everything}
    assert len(studies) == 1 and studies != {run["study_uid"]}
    assert len(frames) == 1 and frames != {run["frame_uid"]}
    series = [{ds.SeriesInstanceUID for ds in new[name]} for name in ("s1", "s2")]
    assert len(series[0]) == 1 and len(series[1]) == 1 and series[0] != series[1]
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in everything)
    first_new = new["s1"][0]
    for ds in new["s2"]:
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first_new.SOPInstanceUID
        assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == run["first"].SOPClassUID
    assert first_new.SOPInstanceUID != run["first"].SOPInstanceUID


def test_uids_inside_shipped_sequences_are_replaced(run):
    original = pydicom.dcmread(run["source"] / "rtplan.dcm")
    instance_uids = {e.value for e in original.iterall() if e.VR == "UI" and (r := rule_for(e.tag)) and r.action == "U"}
    assert original.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID in instance_uids
    raw = (run["out"] / "rtplan.dcm").read_bytes()
    assert not [uid for uid in instance_uids if uid.encode() in raw]
    out = pydicom.dcmread(run["out"] / "rtplan.dcm")
    assert out.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")
    assert out.FractionGroupSequence[0].ReferencedBeamSequence[0].ReferencedBeamNumber == 1  # kept


def test_geometry_and_pixels_unchanged(run):
    import SimpleITK as sitk

    for paths in run["series"].values():
        for path in paths:
            before, after = pydicom.dcmread(path), pydicom.dcmread(_output(run, path))
            np.testing.assert_array_equal(before.pixel_array, after.pixel_array)
            for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness",
                            "RescaleSlope", "RescaleIntercept", "Rows", "Columns"):
                assert after.get(keyword) == before.get(keyword), keyword
        images = []
        for folder in (paths[0].parent, _output(run, paths[0]).parent):
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
            images.append(reader.Execute())
        assert images[0].GetOrigin() == images[1].GetOrigin()
        np.testing.assert_allclose(images[0].GetSpacing(), images[1].GetSpacing())
        np.testing.assert_allclose(images[0].GetDirection(), images[1].GetDirection())
        np.testing.assert_array_equal(sitk.GetArrayFromImage(images[0]), sitk.GetArrayFromImage(images[1]))
    ct_before, ct_after = (pydicom.dcmread(p) for p in (run["source"] / "CT_small.dcm", run["out"] / "CT_small.dcm"))
    np.testing.assert_array_equal(ct_before.pixel_array, ct_after.pixel_array)


def test_markers_and_pseudonyms(run):
    s1 = pydicom.dcmread(_output(run, run["series"]["s1"][0]))
    s2 = pydicom.dcmread(_output(run, run["series"]["s2"][3]))
    ct = pydicom.dcmread(run["out"] / "CT_small.dcm")
    for ds in (s1, s2, ct):
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod[0] == "DICOM PS3.15 Basic Application Confidentiality Profile"
        assert ds.DeidentificationMethod[1].startswith("medfm ")
        code = ds.DeidentificationMethodCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
        assert ds.PatientName == ds.PatientID and ds.PatientID.startswith("ANON-")
        assert not ds.StudyDate and not ds.AccessionNumber and not ds.PatientBirthDate
    assert s1.PatientID == s2.PatientID != ct.PatientID
    assert s2.InstitutionName == "ANONYMIZED"  # X/Z/D keeps the attribute with a dummy
    assert "SeriesDescription" not in s1 and "OtherPatientIDs" not in s2
    assert s1.Modality == "CT" and s1.SOPClassUID == run["first"].SOPClassUID


def test_report_lists_actions_without_values(run):
    report = run["report"]
    text = (run["root"] / "report.json").read_text()
    saved = json.loads(text)
    assert saved["written"] == 16 + len(SHIPPED) and saved["failed"] == 0
    assert saved["skipped_files"] == [{"path": "notes.txt", "reason": "not a DICOM file"}]
    assert saved["uids_remapped"] == report.uids_remapped > 16 * 2
    entry = next(f for f in saved["files"] if f["path"] == _output(run, run["series"]["s2"][0]).relative_to(run["out"]).as_posix())
    actions = {(c["keyword"], c["action"]) for c in entry["changes"]}
    assert {("PatientName", "D"), ("PatientBirthDate", "Z"), ("InstitutionName", "D"), ("OtherPatientIDs", "X"),
            ("SeriesDescription", "X"), ("StudyInstanceUID", "U"), ("private", "X"), ("OverlayRows", "X")} <= actions
    assert ("ReferencedImageSequence[0].ReferencedSOPInstanceUID") in {c["path"] for c in entry["changes"]}
    assert entry["uids_remapped"] == sum(c["action"] == "U" for c in entry["changes"])
    for value in (*PATIENT.values(), INSTITUTION, "ACC0001", "19700101", run["study_uid"], "CompressedSamples"):
        assert value not in text


def test_dataset_actions_follow_the_table():
    ds = Dataset()
    ds.PatientName, ds.StationName, ds.StudyDate, ds.ContentDate = "Roe^Richard", "CT-ROOM-7", "20240101", "20240101"
    ds.StudyDescription, ds.PatientAge = "Head CT for Richard", "061Y"
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ContentSequence = Sequence([Dataset()])
    ds.ContentSequence[0].TextValue = "Richard Roe reported pain"
    ds.SourceImageSequence = Sequence([Dataset()])
    ds.SourceImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ImagePositionPatient = [1.0, 2.0, 3.0]
    uid_map = UIDMap(b"k")
    changes = {c.keyword: c.action for c in deidentify_dataset(ds, uid_map)}
    assert ds.StationName == "ANONYMIZED" and ds.ContentDate == "19000101"  # X/Z/D and Z/D: dummy
    assert not ds.StudyDate and "StudyDescription" not in ds and "PatientAge" not in ds
    assert len(ds.ReferencedStudySequence) == 0 and len(ds.ContentSequence) == 0  # X/Z and D sequences emptied
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == uid_map.uid("1.2.3.4") != "1.2.3.4"
    assert ds.ImagePositionPatient == [1.0, 2.0, 3.0]
    assert changes["ContentSequence"] == "Z" and changes["StationName"] == "D" and changes["PatientName"] == "D"
    assert uid_map.uid("1.2.3.4") == UIDMap(b"k").uid("1.2.3.4") != UIDMap(b"other").uid("1.2.3.4")


def test_burned_in_warning(tmp_path, monkeypatch, capsys):
    paths = write_dicom_series(phantom((16, 16, 2)), tmp_path / "in", **PATIENT)
    _edit(paths[0], Modality="US")
    _edit(paths[1], BurnedInAnnotation="YES")
    monkeypatch.setattr(sys, "argv", ["medfm", "deid", str(tmp_path / "in"), str(tmp_path / "out"), "--json"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["burned_in_warnings"] == 2
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2 and all(line.startswith("medfm: warning: ") for line in warnings)
    assert "modality US" in captured.err and "BurnedInAnnotation is YES" in captured.err


def test_corrupt_file_fails_and_others_are_written(tmp_path, monkeypatch, capsys):
    paths = write_dicom_series(phantom((16, 16, 3)), tmp_path / "in", **PATIENT)
    paths[1].write_bytes(paths[1].read_bytes()[:700])  # cut inside Pixel Data
    monkeypatch.setattr(sys, "argv", ["medfm", "deid", str(tmp_path / "in"), str(tmp_path / "out"), "--report", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"medfm: failed: {paths[1]}: cannot read as DICOM: file is truncated" in err  # the input, as given
    assert "medfm: error: 1 file(s) could not be de-identified" in err and "Doe" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in (paths[0], paths[2]))
    assert json.loads((tmp_path / "r.json").read_text())["failed_files"][0]["path"] == paths[1].name


def test_a_single_file_that_fails_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    paths = write_dicom_series(phantom((16, 16, 1)), tmp_path / "in", **PATIENT)
    paths[0].write_bytes(paths[0].read_bytes()[:700])
    monkeypatch.setattr(sys, "argv", ["medfm", "deid", str(paths[0]), str(tmp_path / "anon.dcm")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"medfm: error: {paths[0]}: cannot read as DICOM: file is truncated inside (0020,000D)"]
    assert captured.out == "" and not (tmp_path / "anon.dcm").exists()


def test_output_into_a_missing_folder_is_refused_unless_mkdir(tmp_path, monkeypatch, capsys):
    paths = write_dicom_series(phantom((16, 16, 1)), tmp_path / "in", **PATIENT)
    target = tmp_path / "missing" / "deeper" / "anon.dcm"
    for options, code in (([], 2), (["--mkdir"], 0)):
        monkeypatch.setattr(sys, "argv", ["medfm", "deid", str(paths[0]), str(target), *options])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == code
        assert target.exists() == (code == 0)
    assert "missing/deeper: folder does not exist; create it first or pass --mkdir" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["read-only", "io-error"])
def test_output_that_cannot_be_written_gives_the_reason(tmp_path, monkeypatch, capsys, failure):
    paths = write_dicom_series(phantom((16, 16, 1)), tmp_path / "in", **PATIENT)
    if failure == "read-only":
        def refuse(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        reason = f"{tmp_path / 'anon.dcm'}: cannot write: Read-only file system"
    else:
        def refuse(*args, **kwargs):  # an error that names a patient-named file: only its reason is shown
            raise OSError(errno.EIO, "Input/output error", str(tmp_path / "Doe^Jane"))

        monkeypatch.setattr(Dataset, "save_as", refuse)
        reason = "cannot write: Input/output error"
    monkeypatch.setattr(sys, "argv", ["medfm", "deid", str(paths[0]), str(tmp_path / "anon.dcm")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"medfm: error: {paths[0]}: {reason}"]
    assert "Doe" not in err and not (tmp_path / "anon.dcm").exists()


def test_report_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    write_dicom_series(phantom((16, 16, 2)), tmp_path / "in", **PATIENT)
    original_write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.endswith("r.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    monkeypatch.setattr(sys, "argv", ["medfm", "deid", str(tmp_path / "in"), str(tmp_path / "out"), "--report", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"medfm: error: {tmp_path / 'r.json'}: cannot write: No space left on device\n"
    assert not (tmp_path / "r.json").exists()


def test_a_folder_without_dicom_files_leaves_no_output_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sys, "argv", ["medfm", "deid", str(tmp_path / "empty"), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"medfm: error: {tmp_path / 'empty'}: no DICOM file found (0 skipped)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_same_secret_same_uids(tmp_path, monkeypatch, capsys):
    paths = write_dicom_series(phantom((16, 16, 2)), tmp_path / "in", **PATIENT)

    def uids(out: str, *options: str) -> list[tuple[str, str, str]]:
        monkeypatch.setattr(sys, "argv", ["medfm", "deid", str(tmp_path / "in"), str(tmp_path / out), *options])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 0
        found = [pydicom.dcmread(tmp_path / out / p.name) for p in paths]
        return [(ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.PatientID) for ds in found]

    assert uids("a", "--uid-secret", "shared") == uids("b", "--uid-secret", "shared")
    assert uids("c")[0][0] != uids("d")[0][0]
    assert uids("e", "--uid-secret", "other")[0][0] != uids("a", "--uid-secret", "shared")[0][0]
    assert "2 de-identified, 0 skipped, 0 failed" in capsys.readouterr().out


def test_refuses_to_write_into_the_input(tmp_path):
    write_dicom_series(phantom((8, 8, 1)), tmp_path / "in")
    with pytest.raises(MedfmError, match="must not be inside the input folder"):
        deidentify(tmp_path / "in", tmp_path / "in" / "out")
    with pytest.raises(MedfmError, match="no DICOM file found"):
        (tmp_path / "text").mkdir()
        (tmp_path / "text" / "a.txt").write_text("x")
        deidentify(tmp_path / "text", tmp_path / "out")


def test_file_without_preamble_is_deidentified(tmp_path):
    source = tmp_path / "in" / "rtstruct.dcm"
    source.parent.mkdir()
    shutil.copy(PYDICOM_FILES / "rtstruct.dcm", source)
    original = pydicom.dcmread(source, force=True)
    assert source.read_bytes()[128:132] != b"DICM" and original.PatientName
    result = deidentify(tmp_path / "in", tmp_path / "out")
    assert [f.path for f in result.files] == ["rtstruct.dcm"] and not result.skipped
    cleaned = pydicom.dcmread(tmp_path / "out" / "rtstruct.dcm", force=True)
    assert cleaned.PatientName != original.PatientName
    assert cleaned.PatientIdentityRemoved == "YES"
    assert cleaned.SOPInstanceUID != original.SOPInstanceUID
