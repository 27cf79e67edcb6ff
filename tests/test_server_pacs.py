"""The server's PACS endpoints against a real Orthanc: search, pull job, segment and save a DICOM SEG, push, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medfm.io.dicomweb import DicomWeb
from medfm.server.app import create_app
from medfm.server.settings import ServerSettings
from orthanc import CENTRE, PATIENT_NAME, RADIUS, SHAPE, Orthanc, free_port, orthanc, upload_study  # noqa: F401  (the fixture)
from servertools import CLIENT_HEADERS, wait_for_job


def _client(tmp_path: Path, pacs_url: str | None) -> TestClient:
    settings = ServerSettings(data_dir=tmp_path / "data", catalog_url=f"sqlite:///{tmp_path / 'catalog.db'}",
                              pacs_url=pacs_url, web_dir=tmp_path / "no-web")
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers=CLIENT_HEADERS)


@pytest.fixture
def client(orthanc: Orthanc, tmp_path: Path):  # noqa: F811
    with _client(tmp_path, orthanc.dicomweb_url) as client:
        yield client


def test_search_hides_patient_identifiers_unless_asked(client: TestClient, orthanc: Orthanc, tmp_path: Path) -> None:  # noqa: F811
    study = upload_study(orthanc, tmp_path / "ct")
    response = client.get("/api/pacs/studies", params={"modality": "CT", "study_date": "20260101"})
    assert response.status_code == 200 and PATIENT_NAME not in response.text
    (ours,) = [s for s in response.json()["studies"] if s["study_uid"] == study.study_uid]
    assert ours["modalities"] == ["CT"] and ours["num_instances"] == SHAPE[2]
    shown = client.get("/api/pacs/studies", params={"show_phi": "true", "limit": 1000}).json()["studies"]
    assert [s["patient_name"] for s in shown if s["study_uid"] == study.study_uid] == [PATIENT_NAME]
    series = client.get(f"/api/pacs/studies/{study.study_uid}/series").json()["series"]
    assert [(s["series_uid"], s["modality"]) for s in series] == [(study.series_uid, "CT")] and "patient_name" not in series[0]


def test_pull_segment_save_push_and_read_back(client: TestClient, orthanc: Orthanc, tmp_path: Path) -> None:  # noqa: F811
    from highdicom.seg import segread

    study = upload_study(orthanc, tmp_path / "ct")
    job = client.post("/api/pacs/pull", json={"study_uid": study.study_uid}).json()["job"]
    pulled = wait_for_job(client, job)
    assert pulled["state"] == "done" and pulled["kind"] == "pacs-pull", pulled
    (image_id,) = pulled["result"]["image_ids"]
    details = client.get(f"/api/images/{image_id}").json()
    assert details["dataset"] == "pacs" and details["shape"][:3] == list(SHAPE)
    again = wait_for_job(client, client.post("/api/pacs/pull", json={"study_uid": study.study_uid,
                                                                   "series_uid": study.series_uid}).json()["job"])
    assert again["result"] == {"image_ids": [image_id]}  # pulled twice, catalogued once

    # A click on the cylinder: plane pixel (i, j) with j mirrored by the reader (as dcm2niix does), then
    # mapped to display pixels the way the workbench shows the plane.
    display, k = details["display"], SHAPE[2] // 2
    x, y = CENTRE[0], SHAPE[1] - 1 - CENTRE[1]
    x = display["width"] - 1 - x if display["flip_columns"] else x
    y = display["height"] - 1 - y if display["flip_rows"] else y
    session = client.post("/api/sessions", json={"image_id": image_id}).json()["session"]
    plane = client.post(f"/api/sessions/{session}/prompts", json={"k": k, "t": 0, "label": 1, "label_name": "cylinder",
                                                                    "points": [[x, y]], "point_labels": [1]})
    assert plane.status_code == 200, plane.text
    saved = client.post(f"/api/sessions/{session}/save", json={"name": "cylinder", "format": "dicom-seg"}).json()
    voxels = saved["voxels"]["1"]
    assert abs(voxels - np.pi * RADIUS**2) < 0.15 * np.pi * RADIUS**2  # about the cylinder's section on one slice

    pushed = client.post("/api/pacs/push", json={"image_id": image_id, "name": "cylinder", "version": saved["version"]})
    assert pushed.status_code == 200, pushed.text
    pacs = DicomWeb(orthanc.dicomweb_url)
    (seg_series,) = pacs.search_series(study.study_uid, modality="SEG")
    assert seg_series["series_uid"] == pushed.json()["series_uid"]
    (back,) = pacs.retrieve(study.study_uid, tmp_path / "back", seg_series["series_uid"])
    seg = segread(back)
    assert seg.SOPInstanceUID == pushed.json()["sop_instance_uid"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series_uid
    assert int(np.count_nonzero(seg.pixel_array)) == voxels

    nifti = client.post(f"/api/sessions/{session}/save", json={"name": "cylinder", "format": "nifti"}).json()
    refused = client.post("/api/pacs/push", json={"image_id": image_id, "name": "cylinder", "version": nifti["version"]})
    assert refused.status_code == 400 and "not a DICOM SEG" in refused.json()["detail"]
    missing = client.post("/api/pacs/push", json={"image_id": image_id, "name": "cylinder", "version": 99})
    assert missing.status_code == 404


def test_failures_are_one_line_answers(client: TestClient) -> None:
    failed = wait_for_job(client, client.post("/api/pacs/pull", json={"study_uid": "1.2.3.999"}).json()["job"])
    assert failed["state"] == "failed" and "retrieve study 1.2.3.999 failed: HTTP 404" in failed["error"]
    bad = client.post("/api/pacs/pull", json={"study_uid": "1.2.3", "series_uid": "../../etc"})
    assert bad.status_code == 400 and "series UID must be 1 to 64 digits and dots" in bad.json()["detail"]
    assert client.get("/api/pacs/studies/not-a-uid/series").status_code == 400


def test_an_unreachable_or_missing_pacs_is_a_one_line_answer(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with _client(tmp_path / "down", f"http://user:secret@127.0.0.1:{port}/dicom-web") as down:
        response = down.get("/api/pacs/studies")
    assert response.status_code == 400
    assert response.json() == {"detail": f"http://127.0.0.1:{port}: search studies failed: cannot connect to the server"}
    with _client(tmp_path / "none", None) as unconfigured:
        response = unconfigured.get("/api/pacs/studies")
    assert response.status_code == 404
    assert response.json() == {"detail": "no PACS configured; start medfm serve with --pacs URL"}


def test_push_takes_only_a_saved_annotation_by_name(client: TestClient) -> None:
    # no file path can be sent through push: only an annotation's name, checked against the allowed pattern
    response = client.post("/api/pacs/push", json={"image_id": 1, "name": "../../etc", "version": 1})
    assert response.status_code == 400 and "annotation name" in response.json()["detail"]
