"""PACS access over DICOMweb against a real Orthanc: search without PHI, pull into the catalog, push DICOM SEG."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from clitools import run_cli
from medfm.catalog import open_catalog
from medfm.catalog.pacs import pull, push_segmentation
from medfm.errors import MedfmError
from medfm.eval.seg_metrics import dice
from medfm.io import load
from medfm.io.dicom import scan_dicom
from medfm.io.dicomweb import DicomWeb
from orthanc import CENTRE, PATIENT_ID, PATIENT_NAME, SHAPE, Orthanc, free_port, orthanc, upload_study  # noqa: F401  (the fixture)

@pytest.fixture(scope="module")
def study(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:  # noqa: F811
    return upload_study(orthanc, tmp_path_factory.mktemp("ct"))


@pytest.fixture
def pacs(orthanc: Orthanc) -> DicomWeb:  # noqa: F811
    return DicomWeb(orthanc.dicomweb_url)


def _ours(found: list[dict], study_uid: str) -> dict:
    (item,) = [s for s in found if s["study_uid"] == study_uid]
    return item


def test_study_and_series_search_hide_patient_identifiers_unless_asked(pacs: DicomWeb, study: SimpleNamespace) -> None:
    hidden = _ours(pacs.search_studies(modality="CT"), study.study_uid)
    assert hidden == {"study_uid": study.study_uid, "study_date": "20260101", "modalities": ["CT"],
                      "description": None, "num_series": 1, "num_instances": SHAPE[2]}
    shown = _ours(pacs.search_studies(show_phi=True), study.study_uid)
    assert shown == {**hidden, "patient_name": PATIENT_NAME, "patient_id": PATIENT_ID}
    assert not [s for s in pacs.search_studies(modality="MR") if s["study_uid"] == study.study_uid]
    assert not [s for s in pacs.search_studies(study_date="19990101") if s["study_uid"] == study.study_uid]
    assert _ours(pacs.search_studies(modality="ct", study_date="20251231-", accession="ACC0001"), study.study_uid) == hidden
    assert not [s for s in pacs.search_studies(accession="NOPE") if s["study_uid"] == study.study_uid]
    with pytest.raises(MedfmError, match=r"study date must be YYYYMMDD or a range .*; got '2026-01-01'"):
        pacs.search_studies(study_date="2026-01-01")

    (series,) = pacs.search_series(study.study_uid)
    assert series["series_uid"] == study.series_uid and series["modality"] == "CT"
    assert series["num_instances"] == SHAPE[2] and "patient_name" not in json.dumps(series)
    assert pacs.search_series(study.study_uid, show_phi=True)[0]["patient_name"] == PATIENT_NAME


def test_pull_reproduces_the_original_and_pulling_again_adds_nothing(pacs: DicomWeb, study: SimpleNamespace, tmp_path: Path) -> None:
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    report = pull(pacs, study.study_uid, catalog=catalog, folder=tmp_path / "pacs")
    assert (report.added, report.updated, report.bad, report.series_uids) == (1, 0, [], [study.series_uid])
    with open_catalog(catalog) as store:
        (record,) = store.query(dataset="pacs")
        assert report.image_ids == [record.id] and record.series_uid == study.series_uid
    pulled, original = load(record.source_path), load(study.folder)
    assert np.array_equal(pulled.array, original.array) and np.array_equal(pulled.affine, original.affine)
    assert sorted(p.name for p in (tmp_path / "pacs" / study.series_uid).iterdir()) == sorted(
        f"{pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID}.dcm" for f in study.files)  # no temp files left

    again = pull(pacs, study.study_uid, series_uid=study.series_uid, catalog=catalog, folder=tmp_path / "pacs")
    assert (again.added, again.updated, again.unchanged, again.image_ids) == (0, 0, SHAPE[2], report.image_ids)


def test_a_segmentation_pushed_through_stow_reads_back_from_the_pacs(pacs: DicomWeb, orthanc: Orthanc, tmp_path: Path) -> None:  # noqa: F811
    from highdicom.seg import segread

    from medfm.io.label_maps import save_segmentation
    from medfm.models.registry import create_segmenter
    from medfm.models.segmenters import Prompt
    from medfm.tasks.segment import segment

    source = upload_study(orthanc, tmp_path / "ct")  # its own study, so that other tests see no SEG series
    report = pull(pacs, source.study_uid, catalog=f"sqlite:///{tmp_path / 'catalog.db'}", folder=tmp_path / "pacs")
    folder = tmp_path / "pacs" / source.series_uid
    image = load(folder)
    k = SHAPE[2] // 2
    # read_series flips the row axis (as dcm2niix does), so the cylinder's j is mirrored; a click is (x, y) = (i, j).
    click = Prompt(points=[(CENTRE[0], SHAPE[1] - 1 - CENTRE[1])], point_labels=[1], slice_index=k)
    labels = segment(image, [click], create_segmenter("medfm-interactive"))
    mask = labels.array[:, :, k, 0, 0] > 0
    bright = image.array[:, :, k, 0, 0] > 600
    assert dice(mask, bright) > 0.9  # the shipped model found the cylinder
    (series,), _ = scan_dicom(sorted(folder.iterdir()))
    seg_path = save_segmentation(labels, tmp_path / "seg.dcm", series)

    sop_uid = push_segmentation(pacs, seg_path)
    assert sop_uid == pydicom.dcmread(seg_path, stop_before_pixels=True).SOPInstanceUID
    (seg_series,) = pacs.search_series(source.study_uid, modality="SEG")
    (back,) = pacs.retrieve(source.study_uid, tmp_path / "back", seg_series["series_uid"])
    seg = segread(back)
    assert seg.SOPInstanceUID == sop_uid and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series_uid
    assert int(np.count_nonzero(seg.pixel_array)) == int(np.count_nonzero(labels.array)) == int(mask.sum())
    assert report.image_ids and len(pacs.search_series(source.study_uid)) == 2


def test_store_reports_the_instances_the_server_refused(pacs: DicomWeb, study: SimpleNamespace, tmp_path: Path) -> None:
    broken = pydicom.dcmread(study.files[0])
    del broken.StudyInstanceUID  # Orthanc refuses an instance without one
    broken.save_as(tmp_path / "broken.dcm")
    with pytest.raises(MedfmError, match=rf"refused 1 of 2 instance\(s\), e.g. {broken.SOPInstanceUID} \(failure reason 0xC000\)"):
        pacs.store([study.files[1], tmp_path / "broken.dcm"])
    with pytest.raises(MedfmError, match="not a DICOM SEG .modality CT."):
        push_segmentation(pacs, study.files[0])
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(MedfmError, match="notes.txt: not a readable DICOM file"):
        push_segmentation(pacs, tmp_path / "notes.txt")


def test_cli_searches_without_phi_unless_asked(orthanc: Orthanc, study: SimpleNamespace, capsys) -> None:  # noqa: F811
    code, out, err = run_cli(["pacs", "studies", orthanc.dicomweb_url, "--modality", "CT", "--json"], capsys)
    assert code == 0 and not err and _ours(json.loads(out), study.study_uid)["num_instances"] == SHAPE[2]
    assert PATIENT_NAME not in out and PATIENT_ID not in out
    code, out, _ = run_cli(["pacs", "studies", orthanc.dicomweb_url, "--date", "20260101", "--show-phi"], capsys)
    assert code == 0 and study.study_uid in out and f"patient_name: {PATIENT_NAME}  [PHI]" in out
    code, out, _ = run_cli(["pacs", "series", orthanc.dicomweb_url, study.study_uid], capsys)
    assert code == 0 and out.startswith(f"{study.series_uid}  CT ") and PATIENT_NAME not in out


def test_cli_pull_segment_push(orthanc: Orthanc, tmp_path: Path, capsys) -> None:  # noqa: F811
    study = upload_study(orthanc, tmp_path / "ct")  # its own study: it gets a SEG series
    args = ["pacs", "pull", orthanc.dicomweb_url, study.study_uid, "--catalog", str(tmp_path / "c.db"), "--folder", str(tmp_path / "in")]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and not err and "1 series pulled; 1 images added" in out
    code, out, _ = run_cli([*args, "--json"], capsys)
    assert code == 0 and json.loads(out)["added"] == 0 and json.loads(out)["unchanged"] == SHAPE[2]

    point = f"{CENTRE[0]},{SHAPE[1] - 1 - CENTRE[1]},{SHAPE[2] // 2}"  # x, y, slice; the reader mirrors j
    code, _, err = run_cli(["segment", str(tmp_path / "in" / study.series_uid), "--point", point, "-o", str(tmp_path / "seg.dcm")], capsys)
    assert code == 0, err
    code, out, err = run_cli(["pacs", "push", orthanc.dicomweb_url, str(tmp_path / "seg.dcm")], capsys)
    sop_uid = pydicom.dcmread(tmp_path / "seg.dcm", stop_before_pixels=True).SOPInstanceUID
    assert code == 0 and not err and out == f"{tmp_path / 'seg.dcm'}: stored {sop_uid}\n"
    code, out, _ = run_cli(["pacs", "series", orthanc.dicomweb_url, study.study_uid, "--modality", "SEG", "--json"], capsys)
    assert code == 0 and [s["modality"] for s in json.loads(out)] == ["SEG"]

    code, _, err = run_cli(["pacs", "push", orthanc.dicomweb_url, str(study.files[0])], capsys)
    assert code == 2 and err.count("\n") == 1 and "not a DICOM SEG" in err


@pytest.mark.parametrize("command", [["studies"], ["series", "1.2.3"], ["pull", "1.2.3"]])
def test_an_unreachable_server_is_one_line_naming_it_without_credentials(command: list[str], tmp_path: Path, capsys) -> None:
    port = free_port()  # nothing listens there
    url = f"http://user:secret@127.0.0.1:{port}/dicom-web"
    code, out, err = run_cli(["pacs", command[0], url, *command[1:], *(["--folder", str(tmp_path)] if command[0] == "pull" else [])], capsys)
    assert code == 2 and not out
    assert err == f"medfm: error: http://127.0.0.1:{port}: {_what(command)} failed: cannot connect to the server\n"


def _what(command: list[str]) -> str:
    return {"studies": "search studies", "series": "search series of study 1.2.3", "pull": "retrieve study 1.2.3"}[command[0]]


def test_unknown_study_and_bad_uids_are_clear_errors(orthanc: Orthanc, tmp_path: Path, capsys) -> None:  # noqa: F811
    code, _, err = run_cli(["pacs", "pull", orthanc.dicomweb_url, "1.2.3.999", "--folder", str(tmp_path)], capsys)
    assert code == 2 and err == (f"medfm: error: {orthanc.rest_url}: retrieve study 1.2.3.999 failed: "
                                 "HTTP 404 Not Found (not found on the server)\n")
    for command in (["pull", orthanc.dicomweb_url, "../etc"], ["series", orthanc.dicomweb_url, "not-a-uid"]):
        code, _, err = run_cli(["pacs", *command], capsys)
        assert code == 2 and err.startswith("medfm: error: study UID must be 1 to 64 digits and dots") and err.count("\n") == 1
    code, _, err = run_cli(["pacs", "studies", "ftp://pacs/dicom-web"], capsys)
    assert code == 2 and "must be an http:// or https:// URL" in err
    assert not list(tmp_path.iterdir())
