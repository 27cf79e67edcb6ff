"""The REST API of docs/server-api.md over a small catalog, with the real shipped segmenter and encoder."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from servertools import PATIENT_NAME, make_client, make_data, mask_of, wait_for_job


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("server")
    return {"root": root, **make_data(root)}


@pytest.fixture(scope="module")
def client(data: dict):
    with make_client(data["root"], data["url"]) as client:
        yield client


def assert_no_phi(text: str, data: dict) -> None:
    for secret in (PATIENT_NAME, "Doe", "MRN-77123", str(data["root"])):
        assert secret not in text


def open_session(client, image_id: int, **extra) -> str:
    response = client.post("/api/sessions", json={"image_id": image_id, **extra})
    assert response.status_code == 200, response.text
    return response.json()["session"]


def click(client, session: str, x: float, y: float, positive: bool = True, k: int = 2, label: int = 1) -> dict:
    response = client.post(f"/api/sessions/{session}/prompts",
                           json={"k": k, "label": label, "points": [[x, y]], "point_labels": [int(positive)]})
    assert response.status_code == 200, response.text
    return response.json()


def test_health_and_listing_carry_no_paths_or_patient_data(client, data):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["catalog_images"] == 3
    assert health["segmenter"] == "medfm-interactive" and health["encoder"] == "medfm-clip-small"
    assert health["pacs"] is False  # no --pacs: the workbench hides its PACS panel
    response = client.get("/api/images")
    images = response.json()["images"]
    assert {image["id"] for image in images} == {data["disc"], data["photo"], data["ct"]}
    assert set(images[0]) == {"id", "name", "dataset", "format", "modality", "body_part", "description", "shape", "spacing",
                              "orientation", "num_slices", "num_frames", "num_channels", "patient", "study", "synthetic"}
    assert_no_phi(response.text, data)
    # titles: a file's own name, never the DICOM series' folder (which may name the patient)
    names = {image["id"]: image["name"] for image in images}
    assert names[data["disc"]] == "disc.nii.gz" and names[data["photo"]] == "photo.png"
    assert names[data["ct"]] in ("CT image", client.get(f"/api/images/{data['ct']}").json()["description"])
    assert [image["id"] for image in client.get("/api/images", params={"modality": "CT"}).json()["images"]] == [data["ct"]]
    details = client.get(f"/api/images/{data['ct']}")
    assert_no_phi(details.text, data)
    assert details.json()["shape"] == [32, 32, 4, 1, 1]
    assert PATIENT_NAME in client.get(f"/api/images/{data['ct']}", params={"show_phi": True}).text  # only when asked


def test_slice_png_is_the_display_plane_with_its_window(client, data):
    details = client.get(f"/api/images/{data['disc']}").json()
    assert details["display"] == {"width": 48, "height": 48, "flip_columns": True, "flip_rows": True}  # a RAS NIfTI
    assert details["value_range"] == [10.0, 200.0]
    png = client.get(f"/api/images/{data['disc']}/slice.png", params={"k": 1})
    assert png.headers["content-type"] == "image/png"
    pixels = np.asarray(PILImage.open(io.BytesIO(png.content)))
    assert pixels.shape == (48, 48) and pixels.dtype == np.uint8
    assert pixels[24, 24] == 255 and pixels[0, 0] == 0  # default window: the disc white, the background black
    narrow = client.get(f"/api/images/{data['disc']}/slice.png", params={"k": 1, "center": 0, "width": 1})
    assert np.asarray(PILImage.open(io.BytesIO(narrow.content))).min() == 255  # everything above the window
    photo = np.asarray(PILImage.open(io.BytesIO(client.get(f"/api/images/{data['photo']}/slice.png").content)))
    assert photo.shape == (40, 30, 3) and tuple(photo[15, 10]) == (255, 0, 0)  # RGB as stored
    thumb = PILImage.open(io.BytesIO(client.get(f"/api/images/{data['disc']}/thumbnail.png").content))
    assert max(thumb.size) <= 96


def test_bad_plane_and_unknown_ids_are_one_line_errors(client, data):
    response = client.get(f"/api/images/{data['disc']}/slice.png", params={"k": 99})
    assert response.status_code == 400 and response.json() == {"detail": "slice 99 is outside the image (slices 0 to 5)"}
    assert client.get("/api/images/9999").status_code == 404
    assert client.get("/api/sessions/nope/mask").status_code == 404
    assert client.get("/api/jobs/nope").status_code == 404
    response = client.post("/api/sessions", json={"image_id": "x"})
    assert response.status_code == 400 and "\n" not in response.json()["detail"]


def test_click_segments_where_clicked_and_a_negative_click_shrinks_it(client, data):
    session = open_session(client, data["disc"])
    first = click(client, session, 24, 24)
    mask = mask_of(first)
    assert mask[24, 24] == 1 and 200 < (mask == 1).sum() < 48 * 48 / 2
    assert first["can_undo"] and not first["can_redo"] and first["labels"]["1"]["name"] == "label 1"
    corrected = mask_of(click(client, session, 18, 24, positive=False))
    assert (corrected == 1).sum() < (mask == 1).sum()
    assert not corrected[24, 18]


def test_undo_and_redo_restore_planes_exactly(client, data):
    session = open_session(client, data["disc"])
    first = mask_of(click(client, session, 24, 24))
    second = mask_of(click(client, session, 18, 24, positive=False))
    undone = client.post(f"/api/sessions/{session}/undo").json()
    assert np.array_equal(mask_of(undone), first) and undone["can_redo"]
    redone = client.post(f"/api/sessions/{session}/redo").json()
    assert np.array_equal(mask_of(redone), second) and not redone["can_redo"]
    client.post(f"/api/sessions/{session}/undo")
    empty = client.post(f"/api/sessions/{session}/undo").json()
    assert not mask_of(empty).any() and not empty["can_undo"]
    response = client.post(f"/api/sessions/{session}/undo")
    assert response.status_code == 400 and response.json()["detail"] == "nothing to undo"
    # the structure's prompts were undone too: a new click starts from nothing
    assert np.array_equal(mask_of(click(client, session, 24, 24)), first)


def test_propagate_carries_the_structure_through_the_volume_as_one_step(client, data):
    session = open_session(client, data["disc"])
    click(client, session, 24, 24, k=2)
    job = client.post(f"/api/sessions/{session}/propagate", json={"label": 1, "axis": "k"}).json()["job"]
    status = wait_for_job(client, job)
    assert status["state"] == "done" and status["kind"] == "propagate", status
    assert status["result"]["planes"] >= 4
    assert mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": 4}).json())[24, 24] == 1
    client.post(f"/api/sessions/{session}/undo")
    assert not mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": 4}).json()).any()
    assert mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": 2}).json())[24, 24] == 1


def test_save_lists_a_new_version_that_reopens_with_the_same_labels(client, data):
    session = open_session(client, data["disc"])
    client.post(f"/api/sessions/{session}/labels", json={"label": 1, "name": "disc", "color": "#00ff00"})
    drawn = mask_of(click(client, session, 24, 24))
    saved = [client.post(f"/api/sessions/{session}/save", json={"name": "disc-outline"}).json() for _ in range(2)]
    assert [s["version"] for s in saved] == [1, 2] and saved[0]["format"] == "nifti"
    assert saved[0]["voxels"] == {"1": int((drawn == 1).sum())}
    listing = client.get(f"/api/images/{data['disc']}/annotations").json()["annotations"]
    entry = next(a for a in listing if a["name"] == "disc-outline")
    assert [v["version"] for v in entry["versions"]] == [1, 2]
    assert entry["versions"][0]["labels"] == {"1": {"name": "disc", "color": "#00ff00"}}
    reopened = client.post("/api/sessions", json={"image_id": data["disc"], "annotation": {"name": "disc-outline", "version": 1}}).json()
    assert reopened["labels"] == {"1": {"name": "disc", "color": "#00ff00"}}
    again = client.get(f"/api/sessions/{reopened['session']}/mask", params={"k": 2}).json()
    assert np.array_equal(mask_of(again), drawn)
    file = client.get(f"/api/images/{data['disc']}/annotations/disc-outline/1/file")
    assert file.status_code == 200 and file.content[:2] == b"\x1f\x8b"  # gzipped NIfTI
    sidecar = Path(data["root"], "annotations", str(data["disc"]), "disc-outline", "v0001.json").read_text()
    assert "medfm-interactive" in sidecar and '"prompts"' in sidecar


def test_dicom_seg_save_reads_back_with_highdicom(client, data):
    import highdicom as hd

    session = open_session(client, data["ct"])
    response = client.post(f"/api/sessions/{session}/prompts", json={"k": 1, "box": [8, 8, 24, 24]})
    assert_no_phi(response.text, data)
    saved = client.post(f"/api/sessions/{session}/save", json={"name": "ct-seg", "format": "dicom-seg"}).json()
    assert saved["format"] == "dicom-seg" and saved["voxels"]["1"] > 0
    path = Path(data["root"], "annotations", str(data["ct"]), "ct-seg", f"v{saved['version']:04d}.dcm")
    seg = hd.seg.segread(path)
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "medfm-interactive"
    assert int(np.asarray(seg.pixel_array).sum()) == saved["voxels"]["1"]
    drawn = client.get(f"/api/sessions/{session}/mask", params={"k": 1}).json()
    reopened = open_session(client, data["ct"], annotation={"name": "ct-seg", "version": saved["version"]})
    again = client.get(f"/api/sessions/{reopened}/mask", params={"k": 1}).json()
    assert np.array_equal(mask_of(again), mask_of(drawn))  # the SEG reads back onto the series' grid
    photo_session = open_session(client, data["disc"])
    click(client, photo_session, 24, 24)
    response = client.post(f"/api/sessions/{photo_session}/save", json={"name": "x", "format": "dicom-seg"})
    assert response.status_code == 400 and "DICOM series" in response.json()["detail"]


def test_errors_about_a_dicom_image_carry_no_patient_data(client, data):
    session = open_session(client, data["ct"])
    response = client.post(f"/api/sessions/{session}/prompts", json={"k": 1, "points": [[500, 5]], "point_labels": [1]})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("point (500, 5) is outside")
    assert_no_phi(response.text, data)


def test_index_build_job_then_search_by_text_and_image_and_classify(client, data):
    response = client.get("/api/search", params={"text": "head CT"})
    if response.status_code == 400:  # not indexed yet
        assert "index" in response.json()["detail"]
    job = client.post("/api/index/build").json()["job"]
    status = wait_for_job(client, job)
    assert status["state"] == "done" and status["kind"] == "index"
    assert status["done"] == status["total"] == 3 and status["result"]["added"] + status["result"]["skipped"] == 3
    state = client.app.state.medfm
    loads = []
    load_image = state.load_image
    state.load_image = lambda image_id: loads.append(image_id) or load_image(image_id)
    try:
        hits = client.get("/api/search", params={"image_id": data["ct"], "k": 2}).json()["hits"]
    finally:
        del state.load_image
    assert hits[0]["image_id"] == data["ct"] and len(hits) == 2
    assert loads == []  # an indexed image is searched by its stored embedding: nothing read again
    assert set(hits[0]) == {"image_id", "name", "score", "modality", "body_part", "dataset", "description"}
    hits = client.get("/api/search", params={"text": "a CT scan of the head", "k": 3}).json()["hits"]
    assert {hit["image_id"] for hit in hits} == {data["disc"], data["photo"], data["ct"]}
    assert client.get("/api/health").json()["index_size"] == 3
    result = client.post(f"/api/images/{data['ct']}/classify", json={"labels": ["CT scan", "photograph"]}).json()
    assert set(result["probabilities"]) == {"CT scan", "photograph"} and result["model"]["name"] == "medfm-clip-small"
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-3
    assert client.get("/api/search").status_code == 400


def test_evaluate_two_versions(client, data):
    session = open_session(client, data["disc"])
    click(client, session, 24, 24)
    reference = client.post(f"/api/sessions/{session}/save", json={"name": "eval-ref"}).json()
    click(client, session, 18, 24, positive=False)
    prediction = client.post(f"/api/sessions/{session}/save", json={"name": "eval-pred"}).json()
    body = {"image_id": data["disc"], "prediction": {"name": "eval-pred", "version": prediction["version"]},
            "reference": {"name": "eval-ref", "version": reference["version"]}}
    scores = client.post("/api/evaluate/segmentation", json=body).json()
    dice = scores["labels"]["1"]["dice"]
    expected = 2 * prediction["voxels"]["1"] / (prediction["voxels"]["1"] + reference["voxels"]["1"])  # pred ⊂ ref
    assert 0.5 < dice < 1 and dice == pytest.approx(expected, abs=0.02)
    assert set(scores["labels"]["1"]) >= {"dice", "iou", "hd95", "assd", "nsd"}
    same = client.post("/api/evaluate/segmentation", json={**body, "prediction": body["reference"]}).json()
    assert same["labels"]["1"]["dice"] == 1.0
    missing = client.post("/api/evaluate/segmentation", json={**body, "prediction": {"name": "eval-pred", "version": 99}})
    assert missing.status_code == 404


def test_upload_starts_an_ingest_job(client, data):
    picture = io.BytesIO()
    PILImage.fromarray(np.full((20, 20), 128, np.uint8)).save(picture, format="PNG")
    files = [("files", ("../../evil name.png", picture.getvalue(), "image/png")),
             ("files", ("notes.txt", b"not an image", "text/plain"))]
    job = client.post("/api/uploads", files=files).json()["job"]
    status = wait_for_job(client, job)
    assert status["state"] == "done" and status["done"] == status["total"] == 1, status  # the PNG; the text is skipped
    (image_id,) = status["result"]["image_ids"]
    assert client.get(f"/api/images/{image_id}").json()["shape"] == [20, 20, 1, 1, 1]
    uploaded = list(Path(data["root"], "uploads").rglob("*.png"))
    assert len(uploaded) == 1 and uploaded[0].name == "00000-evil_name.png"
    assert not list(Path(data["root"], "uploads").glob(".incoming-*"))  # written aside, then moved in whole
    assert uploaded[0].resolve().is_relative_to(Path(data["root"]).resolve())
    # the new image joins the search index by itself, in the background
    deadline = time.monotonic() + 60
    while client.get("/api/health").json()["index_size"] != client.get("/api/health").json()["catalog_images"]:
        assert time.monotonic() < deadline, "the upload was not indexed"
        time.sleep(0.1)
    hits = client.get("/api/search", params={"image_id": image_id, "k": 1}).json()["hits"]
    assert hits[0]["image_id"] == image_id


def test_docs_and_openapi_work_offline(client):
    assert "/api/sessions/{session_id}/prompts" in client.get("/openapi.json").json()["paths"]
    page = client.get("/docs").text
    assets = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and "://" not in page
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
