"""Saved report versions through the API: author, time, text, evidence and provenance; listed newest
first, loaded, marked final, deleted (set aside, numbers never reused), size limits, atomic saves,
leftovers of killed saves removed at start-up, and a saved version exported as a DICOM SR."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pytest
from fakeencoder import fake_models  # noqa: F401  (the fixture, used by every test below)
from servertools import PATIENT_NAME, make_client, make_data

from medfm.io.dicom.sr import read_report_sr
from medfm.server.limits import MAX_REPORT_CHARS

pytestmark = pytest.mark.usefixtures("fake_models")


@pytest.fixture
def data(tmp_path: Path) -> dict:
    return {"root": tmp_path, **make_data(tmp_path)}


@pytest.fixture
def client(data: dict):
    with make_client(data["root"], data["url"], encoder="fake-clip") as client:
        yield client


def report_folder(data: dict, image_id: int) -> Path:
    return data["root"] / "annotations" / str(image_id) / ".report"


def save(client, image_id: int, *texts: str, **body) -> dict:
    sentences = [{"text": text, "source": None} for text in texts or ("A finding.",)]
    response = client.post(f"/api/images/{image_id}/reports", json={"sentences": sentences, **body})
    assert response.status_code == 200, response.text
    return response.json()


def numbers(client, image_id: int) -> list[int]:
    return [v["version"] for v in client.get(f"/api/images/{image_id}/reports").json()["versions"]]


def test_a_saved_report_keeps_author_time_text_evidence_and_provenance(client, data):
    disc, photo = data["disc"], data["photo"]
    sentences = [{"text": " Large mass in the liver. ", "source": photo}, {"text": "Written by the reader.", "source": None}]
    response = client.post(f"/api/images/{disc}/reports", json={"sentences": sentences, "author": "  Dr. Ada  ", "edited": True})
    assert response.status_code == 200, response.text
    saved = response.json()
    assert (saved["version"], saved["status"], saved["author"], saved["edited"]) == (1, "draft", "Dr. Ada", True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", saved["created"])  # to the millisecond, UTC
    assert saved["text"] == "Large mass in the liver. Written by the reader."
    assert [(s["text"], s["source"], s["image_id"]) for s in saved["sentences"]] == [
        ("Large mass in the liver.", photo, photo), ("Written by the reader.", None, None)]
    assert saved["sentences"][0]["name"] == "photo.png" and saved["sentences"][1]["name"] is None
    provenance = saved["provenance"]
    assert provenance["kind"] == "report" and provenance["model"] == "fake-clip" and provenance["parameters"]["edited"] is True
    assert provenance["inputs"] == [f"catalog-image:{disc}", f"index-item:{photo}"]
    on_disk = json.loads((report_folder(data, disc) / "v0001.json").read_text())
    assert on_disk["text"] == saved["text"] and on_disk["provenance"] == provenance and "version" not in on_disk
    # beside the annotations, but never one of them
    assert client.get(f"/api/images/{disc}/annotations").json() == {"annotations": []}
    assert client.get(f"/api/images/{disc}/reports/1").json() == saved


def test_versions_are_listed_newest_first_and_loaded_by_number(client, data):
    disc = data["disc"]
    for text in ("First.", "Second.", "Third " + "long " * 30 + "end."):
        save(client, disc, text)
    versions = client.get(f"/api/images/{disc}/reports").json()["versions"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert set(versions[0]) == {"version", "created", "author", "status", "edited", "preview"}
    assert versions[0]["preview"].endswith("…") and len(versions[0]["preview"]) == 80 and versions[1]["preview"] == "Second."
    assert client.get(f"/api/images/{disc}/reports/2").json()["text"] == "Second."
    assert client.get(f"/api/images/{disc}/reports/4").status_code == 404
    assert client.get(f"/api/images/{data['photo']}/reports").json()["versions"] == []
    assert client.get("/api/images/999999/reports").status_code == 404


def test_a_final_version_is_kept_until_made_draft_and_deleted_numbers_are_never_reused(client, data):
    disc = data["disc"]
    save(client, disc, "One.")
    save(client, disc, "Two.")
    url = f"/api/images/{disc}/reports/2"
    marked = client.patch(url, json={"status": "final"})
    assert marked.status_code == 200 and marked.json()["status"] == "final" and marked.json()["version"] == 2
    assert client.get(url).json()["status"] == "final" and client.get(url).json()["text"] == "Two."
    refused = client.delete(url)
    assert refused.status_code == 400 and "final" in refused.json()["detail"]
    assert client.patch(url, json={"status": "approved"}).status_code == 400
    assert client.patch(url, json={"status": "draft"}).json()["status"] == "draft"
    assert client.delete(url).json() == {"version": 2, "state": "deleted"}
    assert numbers(client, disc) == [1]
    assert client.get(url).status_code == 404 and client.delete(url).status_code == 404
    assert save(client, disc, "Three.")["version"] == 3  # v2 still means what it meant
    assert numbers(client, disc) == [3, 1]
    kept = report_folder(data, disc) / ".deleted"
    assert json.loads((kept / "v0002.json").read_text())["text"] == "Two."  # set aside, not lost


@pytest.mark.parametrize("body, field, says", [
    ({"sentences": [{"text": "x" * 2000}] * (MAX_REPORT_CHARS // 2000 + 1)}, "sentences", f"at most {MAX_REPORT_CHARS}"),
    ({"sentences": [{"text": "x" * 2001}]}, "sentences.0.text", "at most 2000"),
    ({"sentences": [{"text": "x"}] * 51}, "sentences", "at most 50"),
    ({"sentences": []}, "sentences", "at least 1"),
    ({"sentences": [{"text": "   "}]}, "sentences.0.text", "at least 1"),
    ({"sentences": [{"text": "x"}], "author": "a" * 65}, "author", "at most 64"),
])
def test_too_long_or_empty_reports_are_refused_and_nothing_is_saved(client, data, body, field, says):
    response = client.post(f"/api/images/{data['disc']}/reports", json=body)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}:") and says in detail and "\n" not in detail
    assert numbers(client, data["disc"]) == [] and not report_folder(data, data["disc"]).exists()


def test_a_save_that_fails_while_writing_leaves_no_file_and_takes_no_number(client, data, monkeypatch):
    from medfm.server import reports

    disc = data["disc"]
    save(client, disc, "Kept.")

    def full_disk(path):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(reports, "fsync", full_disk)
        assert client.post(f"/api/images/{disc}/reports", json={"sentences": [{"text": "Lost."}]}).status_code == 500
    assert sorted(p.name for p in report_folder(data, disc).iterdir()) == ["v0001.json"]  # no draft, no torn version
    assert save(client, disc, "Next.")["version"] == 2


def test_leftovers_of_killed_saves_are_removed_at_start_up_and_numbers_do_not_skip(data):
    disc = data["disc"]
    with make_client(data["root"], data["url"], encoder="fake-clip") as client:
        save(client, disc, "Kept.")
    folder = report_folder(data, disc)
    leftovers = [folder / ".draft-0123abcd.json", folder / ".tmp-4567ef-v0001.json"]
    for path in leftovers:
        path.write_text('{"text": "cut o')
    with make_client(data["root"], data["url"], encoder="fake-clip") as client:
        assert not [p for p in leftovers if p.exists()]
        assert numbers(client, disc) == [1] and client.get(f"/api/images/{disc}/reports/1").json()["text"] == "Kept."
        assert save(client, disc, "Next.")["version"] == 2


def test_a_saved_version_exports_as_an_sr_and_answers_name_no_patient(client, data, tmp_path):
    ct, photo = data["ct"], data["photo"]
    answers = [client.post(f"/api/images/{ct}/reports", json={"sentences": [
        {"text": "Large mass in the liver.", "source": photo}, {"text": "Written by the reader."}], "edited": True})]
    answers.append(client.patch(f"/api/images/{ct}/reports/1", json={"status": "final"}))
    answers += [client.get(f"/api/images/{ct}/reports"), client.get(f"/api/images/{ct}/reports/1")]
    for answer in answers:
        assert answer.status_code == 200 and "Doe" not in answer.text and "77123" not in answer.text
    answer = client.get(f"/api/images/{ct}/reports/1/sr")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/dicom"
    assert f"report-{ct}-v0001.dcm" in answer.headers["content-disposition"]
    (tmp_path / "v1.dcm").write_bytes(answer.content)
    sr = pydicom.dcmread(tmp_path / "v1.dcm")
    assert read_report_sr(tmp_path / "v1.dcm") == ["Large mass in the liver.", "Written by the reader."]
    assert str(sr.PatientName) == PATIENT_NAME  # the SR joins the study, as a fresh draft's does
    record = json.loads(sr.private_block(0x0071, "medfm provenance")[0x00].value)
    assert record["inputs"] == [f"catalog-image:{ct}", f"index-item:{photo}"]
    assert record["parameters"] == {"method": "retrieval-augmented draft (workbench)", "edited": True,
                                       "report_version": 1, "status": "final"}
    assert client.get(f"/api/images/{ct}/reports/2/sr").status_code == 404


def test_changes_from_another_site_are_refused_and_a_deleted_image_sets_its_reports_aside(client, data):
    disc = data["disc"]
    save(client, disc, "Mine.")
    foreign = {"X-Medfm-Client": "x", "Origin": "http://evil.example"}
    assert client.post(f"/api/images/{disc}/reports", json={"sentences": [{"text": "x"}]}, headers=foreign).status_code == 403
    assert client.patch(f"/api/images/{disc}/reports/1", json={"status": "final"}, headers=foreign).status_code == 403
    assert client.delete(f"/api/images/{disc}/reports/1", headers=foreign).status_code == 403
    assert numbers(client, disc) == [1]
    assert client.delete(f"/api/images/{disc}").status_code == 200
    assert client.get(f"/api/images/{disc}/reports").status_code == 404
    assert list((data["root"] / "deleted").glob(f"annotations-{disc}-*/.report/v0001.json"))
