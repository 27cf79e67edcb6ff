"""The workbench's generation, report and question endpoints, and reports as DICOM SR (API and CLI),
with the fake encoder and a tiny generator."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture, used by every test below)
from servertools import PATIENT_NAME, make_client, wait_for_job
from test_generators import SIZE, TINY, write_classes

from medfm.catalog import ingest
from medfm.index import open_index
from medfm.io import Image, load, save
from medfm.io.dicom.sr import MACHINE_GENERATED_NOTE, read_report_sr
from medfm.io.synthetic import phantom, write_dicom_series
from medfm.server.security import CLIENT_HEADER
from medfm.tasks.search import build_index
from medfm.train.generator import train_generator

pytestmark = [pytest.mark.usefixtures("fake_models"), pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")]

BRIGHT_CAPTION = "Large mass in the liver. Small pleural effusion."
DARK_CAPTION = "Normal brain without hemorrhage. Ventricles are normal."


def _png(path: Path, level: int, seed: int) -> Path:
    pixels = (level + np.random.default_rng(seed).integers(0, 40, (32, 32))).astype(np.uint8)
    return save(Image(pixels), path)


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("generator")
    train_generator(write_classes(root / "data"), root / "tiny", size=SIZE, network=TINY, max_steps=10, batch_size=4)
    return root / "tiny"


@pytest.fixture
def data(tmp_path: Path, generator_dir: Path) -> dict:
    """A catalog of six captioned PNG cases (manifest captions), a bright and a dark uncaptioned query, and a
    DICOM series; the tiny generator as ``<data_dir>/generators/tiny``."""
    cases = tmp_path / "images" / "cases"
    cases.mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(6):
        _png(cases / f"case{i}.png", 190 if i % 2 == 0 else 15, i)
        rows.append(f"case{i}.png,{BRIGHT_CAPTION if i % 2 == 0 else DARK_CAPTION}")
    (cases / "manifest.csv").write_text("\n".join(rows) + "\n")
    _png(tmp_path / "images" / "bright.png", 200, 99)
    _png(tmp_path / "images" / "dark.png", 10, 98)
    write_dicom_series(phantom((32, 32, 4)), tmp_path / "images" / "ct", patient_name=PATIENT_NAME, patient_id="MRN-77123")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest([tmp_path / "images"], url, progress=False)
    (tmp_path / "generators").mkdir()
    (tmp_path / "generators" / "tiny").symlink_to(generator_dir, target_is_directory=True)
    return {"root": tmp_path, "url": url}


@pytest.fixture
def client(data: dict):
    with make_client(data["root"], data["url"], encoder="fake-clip") as client:
        yield client


def _ids(client) -> dict[str, int]:
    return {image["name"]: image["id"] for image in client.get("/api/images").json()["images"]}


def _indexed(client) -> None:
    assert wait_for_job(client, client.post("/api/index/build").json()["job"])["state"] == "done"


def _id(ids: dict[str, int], stem: str) -> int:
    return next(value for name, value in ids.items() if stem in name)


def test_report_links_every_sentence_to_another_catalogued_case(client) -> None:
    _indexed(client)
    ids = _ids(client)
    bright, case0 = _id(ids, "bright"), _id(ids, "case0")
    answer = client.post("/api/report", json={"image_id": bright, "k": 4, "ratio": 0.5, "abstain": False})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["sentences"] and "liver" in result["draft"] and "brain" not in result["draft"]
    cases = {value: name for name, value in ids.items()}
    for sentence in result["sentences"]:
        assert sentence["image_id"] == sentence["source"] != bright and sentence["name"] == cases[sentence["source"]]
        assert "case" in sentence["name"]
    assert result["provenance"]["kind"] == "report"
    # an indexed case is never its own evidence
    own = client.post("/api/report", json={"image_id": case0, "abstain": False}).json()
    assert case0 not in [c["id"] for c in own["contexts"]] and own["contexts"]


def test_report_refusals_are_one_line_400s(client) -> None:
    ids = _ids(client)
    bright = _id(ids, "bright")
    not_indexed = client.post("/api/report", json={"image_id": bright, "abstain": False})
    assert not_indexed.status_code == 400 and "not indexed" in not_indexed.json()["detail"]
    _indexed(client)
    for body, field in (({"k": 0}, "k"), ({"k": 1000}, "k"), ({"ratio": 1.5}, "ratio"), ({"sentences": 99}, "sentences")):
        answer = client.post("/api/report", json={"image_id": bright, "abstain": False, **body})
        assert answer.status_code == 400 and answer.json()["detail"].startswith(field), answer.text
    # the fake encoder has no calibrated threshold: the router's abstention must be asked for explicitly
    uncalibrated = client.post("/api/report", json={"image_id": bright})
    assert uncalibrated.status_code == 400 and "abstention threshold" in uncalibrated.json()["detail"]
    assert client.post("/api/report", json={"image_id": 999999, "abstain": False}).status_code == 404


def test_ask_answers_with_evidence_from_other_cases(client) -> None:
    _indexed(client)
    ids = _ids(client)
    dark = _id(ids, "dark")
    answer = client.post("/api/ask", json={"image_ids": [dark], "question": "Is it bright or dark?", "k": 2, "abstain": False})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["answer"] == "dark" and 0.5 < result["confidence"] <= 1
    assert len(result["evidence"]) == 2 and all(hit["caption"] == DARK_CAPTION and hit["id"] != dark for hit in result["evidence"])
    assert all("path" not in hit and "case" in hit["name"] for hit in result["evidence"])
    several = client.post("/api/ask", json={"image_ids": [dark, _id(ids, "bright"), _id(ids, "case0")],
                                            "question": "Is it bright or dark?", "abstain": False}).json()
    assert [i["prediction"] for i in several["per_image"]] == ["dark", "bright", "bright"]
    for body, message in (({"question": "   "}, "empty"), ({"question": "x" * 600}, "characters"),
                          ({"question": "Tell me a story"}, "cannot parse"), ({"image_ids": []}, "image_ids"),
                          ({"image_ids": [dark] * 17}, "image_ids")):
        answer = client.post("/api/ask", json={"image_ids": [dark], "abstain": False, **body})
        assert answer.status_code == 400 and message in answer.json()["detail"], answer.text
    assert client.post("/api/ask", json={"image_ids": [999999], "question": "Is it bright or dark?"}).status_code == 404


def test_sr_export_references_a_dicom_source_and_invents_no_patient(client, tmp_path: Path) -> None:
    ids = _ids(client)
    ct = next(image["id"] for image in client.get("/api/images").json()["images"] if image["format"] == "dicom")
    bright, case0 = _id(ids, "bright"), _id(ids, "case0")
    # a reader's bullet, dash and accent survive as written (UTF-8), not as Latin-1's "?"
    sentences = [{"text": "Large mass in the liver.", "source": case0}, {"text": "• Écho – written by the reader.", "source": None}]
    answer = client.post("/api/report/sr", json={"image_id": ct, "sentences": sentences, "edited": True})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/dicom"
    (tmp_path / "ct.dcm").write_bytes(answer.content)
    sr = pydicom.dcmread(tmp_path / "ct.dcm")
    source = pydicom.dcmread(next((data_root(client) / "images" / "ct").iterdir()))
    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage and sr.Modality == "SR"
    assert (sr.StudyInstanceUID, str(sr.PatientName), sr.PatientID) == (source.StudyInstanceUID, PATIENT_NAME, "MRN-77123")
    referenced = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID and len(referenced.ReferencedSOPSequence) == 4
    assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == ("PRELIMINARY", "UNVERIFIED", "PARTIAL")
    assert read_report_sr(tmp_path / "ct.dcm") == [s["text"] for s in sentences]
    assert MACHINE_GENERATED_NOTE in str(sr.ContentSequence[-1].ContentSequence[0].TextValue)
    record = json.loads(sr.private_block(0x0071, "medfm provenance")[0x00].value)
    assert record["inputs"] == [f"catalog-image:{ct}", f"index-item:{case0}"] and record["parameters"]["edited"] is True
    png = client.post("/api/report/sr", json={"image_id": bright, "sentences": sentences[:1]})
    (tmp_path / "png.dcm").write_bytes(png.content)
    alone = pydicom.dcmread(tmp_path / "png.dcm")
    assert (str(alone.PatientName), alone.PatientID, alone.PatientBirthDate) == ("", "", "")
    assert "CurrentRequestedProcedureEvidenceSequence" not in alone
    for body in ({"sentences": []}, {"sentences": [{"text": "  "}]}, {"sentences": [{"text": "x"}] * 51}):
        assert client.post("/api/report/sr", json={"image_id": bright, **body}).status_code == 400


def data_root(client) -> Path:
    return client.app.state.medfm.data_dir


def test_generation_job_catalogues_images_flagged_synthetic(client) -> None:
    listed = client.get("/api/generators").json()["generators"]  # fake_models' configuration registers no generator
    assert [(g["name"], g["condition"], g["classes"]) for g in listed] == [("tiny", "class", ["bright", "dark"])]
    answer = client.post("/api/generate", json={"generator": "tiny", "class": "dark", "n": 2, "steps": 2, "seed": 5})
    assert answer.status_code == 200, answer.text
    job = wait_for_job(client, answer.json()["job"])
    assert job["state"] == "done", job
    result = job["result"]
    assert (result["generator"], result["steps"]) == ("tiny", 2)
    assert [(i["condition"], i["seed"], i["synthetic"]) for i in result["images"]] == [("dark", 5, True), ("dark", 6, True)]
    for image in result["images"]:
        details = client.get(f"/api/images/{image['image_id']}").json()
        assert details["synthetic"] is True and details["shape"][:2] == [SIZE, SIZE]
        assert client.get(f"/api/images/{image['image_id']}/thumbnail.png").status_code == 200
    assert not any(image["synthetic"] for image in client.get("/api/images", params={"text": "case"}).json()["images"])
    files = sorted((data_root(client) / "generated").rglob("*.png"))
    assert len(files) == 2 and load(files[0]).provenance.synthetic


def test_one_generation_at_a_time(client, monkeypatch) -> None:
    """A second sampling job while one runs is a 409 (both would share the two cores); once it ends, another may start."""
    import medfm.tasks.generate as generate_task

    release = threading.Event()
    sample = generate_task.generate

    def held(*args, **kwargs):
        assert release.wait(timeout=120), "the test never released the first job"
        return sample(*args, **kwargs)

    monkeypatch.setattr(generate_task, "generate", held)
    body = {"generator": "tiny", "class": "dark", "n": 1, "steps": 1}
    first = client.post("/api/generate", json=body).json()["job"]
    second = client.post("/api/generate", json=body)
    release.set()
    assert second.status_code == 409, second.text
    assert second.json()["detail"] == "a generation is already running (generator tiny); wait for it or cancel it"
    assert wait_for_job(client, first)["state"] == "done"
    third = client.post("/api/generate", json=body)
    assert third.status_code == 200 and wait_for_job(client, third.json()["job"])["state"] == "done"
    assert len(list((data_root(client) / "generated").rglob("*.png"))) == 2


@pytest.mark.parametrize("body, status, message", [
    ({"generator": "nope"}, 400, "unknown generator"),
    ({"generator": "../generators/tiny"}, 400, "unknown generator"),
    ({"generator": "tiny", "class": "purple"}, 400, "unknown class"),
    ({"generator": "tiny", "class": 7}, 400, "out of range"),
    ({"generator": "tiny", "condition": "dark", "class": "dark"}, 400, "not both"),
    ({"generator": "tiny", "n": 0}, 400, "n:"),
    ({"generator": "tiny", "n": 17}, 400, "n:"),
    ({"generator": "tiny", "steps": 1000}, 400, "steps:"),
    ({"generator": "tiny", "guidance": -1}, 400, "guidance:"),
])
def test_generation_refusals_are_one_line_400s_and_start_no_job(client, body: dict, status: int, message: str) -> None:
    answer = client.post("/api/generate", json=body)
    assert answer.status_code == status and message in answer.json()["detail"], answer.text
    assert not (data_root(client) / "generated").exists()


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"generator": "tiny", "n": 1, "steps": 1}),
    ("/api/report", {"image_id": 1, "abstain": False}),
    ("/api/ask", {"image_ids": [1], "question": "Is it bright or dark?", "abstain": False}),
    ("/api/report/sr", {"image_id": 1, "sentences": [{"text": "A finding."}]}),
])
def test_new_routes_refuse_cross_site_requests(client, path: str, body: dict) -> None:
    headers_without_client = {key: value for key, value in client.headers.items() if key.lower() != CLIENT_HEADER.lower()}
    bare = client.post(path, json=body, headers={**headers_without_client, CLIENT_HEADER: ""})
    assert bare.status_code == 403
    foreign = client.post(path, json=body, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "Origin" in foreign.json()["detail"]
    cross = client.post(path, json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert not (data_root(client) / "generated").exists()


def test_cli_report_writes_an_sr_referencing_a_dicom_study(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    metadata = {str(_png(folder / f"case{i}.png", 190, i)): {"caption": BRIGHT_CAPTION} for i in range(3)}
    from fakeencoder import FakeEncoder

    build_index([], FakeEncoder(), tmp_path / "index", metadata=metadata)
    files = write_dicom_series(phantom((32, 32, 3)), tmp_path / "study", patient_name=PATIENT_NAME, patient_id="MRN-1")
    out = tmp_path / "report.dcm"
    code, stdout, stderr = run_cli(["report", str(tmp_path / "study"), "--index", str(tmp_path / "index"),
                                    "--abstain-threshold", "-1", "--sr", str(out), "--json"], capsys)
    assert code == 0, stderr
    drafted = [s["text"] for s in json.loads(stdout)["sentences"]]
    assert drafted and read_report_sr(out) == drafted
    sr, source = pydicom.dcmread(out), pydicom.dcmread(files[0])
    assert sr.StudyInstanceUID == source.StudyInstanceUID and str(sr.PatientName) == PATIENT_NAME
    with open_index(tmp_path / "index") as store:
        assert len(store) == 3
    for bad, message in ((tmp_path / "report.txt", "DICOM SR is written to a .dcm"), (tmp_path / "missing" / "r.dcm", "does not exist")):
        code, _, stderr = run_cli(["report", str(tmp_path / "study"), "--index", str(tmp_path / "index"),
                                   "--abstain-threshold", "-1", "--sr", str(bad)], capsys)
        assert code != 0 and message in stderr and len(stderr.strip().splitlines()) == 1 and not bad.exists()
