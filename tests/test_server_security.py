"""Token, rate limit, upload limit, path and name checks; concurrent saves never lose a version."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from medfm.io import Image
from medfm.server.annotations import AnnotationStore
from servertools import make_client, make_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("secure")
    return {"root": root, **make_data(root)}


def test_token_is_required_off_loopback_for_the_api_and_the_page(data):
    with make_client(data["root"], data["url"], host="0.0.0.0", token="s3cret") as client:
        for path in ("/api/images", "/", "/docs"):
            response = client.get(path)
            assert response.status_code == 401 and "token" in response.json()["detail"]
        assert client.get("/api/images", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/images", params={"token": "wrong"}).status_code == 401
        assert client.get("/api/images", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        page = client.get("/", params={"token": "s3cret"})
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert "medfm_token=s3cret" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.get("/api/images").status_code == 200  # the cookie now carries the token


def test_loopback_needs_no_token(data):
    with make_client(data["root"], data["url"]) as client:
        assert client.get("/api/images").status_code == 200


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:8000", True), ("localhost:8000", True), ("[::1]:8000", True), ("LOCALHOST", True),
    ("evil.example:8000", False), ("127.0.0.1.evil.example", False), ("", False),
])
def test_loopback_server_refuses_other_host_names(data, host, allowed):
    """A page elsewhere that points its own domain at 127.0.0.1 (DNS rebinding) cannot read the API."""
    with make_client(data["root"], data["url"]) as client:
        response = client.get("/api/images", headers={"host": host})
        assert response.status_code == (200 if allowed else 403)
        if not allowed:
            assert "127.0.0.1" in response.json()["detail"] and "images" not in response.json()


@pytest.mark.parametrize("path", ["../../etc", "/etc", "images/../../..", "escape", "images/inner"])
def test_ingest_refuses_paths_leading_outside_the_data_dir(data, path, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"not read")
    root = Path(data["root"])
    if not (root / "escape").exists():
        (root / "escape").symlink_to(outside, target_is_directory=True)
        (root / "images" / "inner").mkdir()
        (root / "images" / "inner" / "link.png").symlink_to(outside / "secret.png")
    with make_client(root, data["url"]) as client:
        before = client.get("/api/images").json()["images"]
        response = client.post("/api/ingest", json={"path": path})
        assert response.status_code == 400, response.text
        assert "data directory" in response.json()["detail"]
        assert client.get("/api/images").json()["images"] == before


def test_ingest_inside_the_data_dir_works(data):
    with make_client(data["root"], data["url"]) as client:
        from servertools import wait_for_job

        job = client.post("/api/ingest", json={"path": "images/ct"}).json()["job"]
        assert wait_for_job(client, job)["result"]["image_ids"] == [data["ct"]]


def test_oversized_upload_is_refused_and_leaves_no_file(data):
    with make_client(data["root"], data["url"], max_upload_bytes=1000) as client:
        files = {"files": ("big.png", b"x" * 5000, "image/png")}
        response = client.post("/api/uploads", files=files)
        assert response.status_code == 413 and "limit" in response.json()["detail"]

        def chunks():  # no Content-Length: the limit must hold while streaming
            for _ in range(10):
                yield b"y" * 500

        response = client.post("/api/uploads", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert response.status_code == 413
    assert not list(Path(data["root"]).glob("uploads/*/*"))


def test_rate_limit_answers_429(data):
    with make_client(data["root"], data["url"], rate_per_second=1.0, rate_burst=3) as client:
        codes = [client.get("/api/health").status_code for _ in range(6)]
        assert codes[:3] == [200, 200, 200] and codes[-1] == 429
        response = client.get("/api/health")
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("name", ["../x", "..", ".hidden", "a/b", "x" * 65, ""])
def test_annotation_names_that_could_escape_are_refused(data, name):
    with make_client(data["root"], data["url"]) as client:
        session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        client.post(f"/api/sessions/{session}/prompts", json={"k": 0, "points": [[24, 24]], "point_labels": [1]})
        response = client.post(f"/api/sessions/{session}/save", json={"name": name})
        assert response.status_code == 400 and "not allowed" in response.json()["detail"]
    assert not (Path(data["root"]) / "x").exists()


def test_concurrent_saves_from_threads_get_distinct_versions(tmp_path):
    store = AnnotationStore(tmp_path)
    from medfm.provenance import Provenance

    stamp = Provenance("segmentation", "test-model", None)  # a label map is saved only with its provenance
    labels = [Image(np.full((4, 4, 2), n % 2, np.uint8), provenance=stamp) for n in range(16)]
    results, barrier = [], threading.Barrier(8)

    def save(n: int) -> None:
        barrier.wait()
        for m in (n, n + 8):
            results.append(store.save(1, "race", labels[m], "nifti", {"labels": {}, "writer": m}))

    threads = [threading.Thread(target=save, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["version"] for r in results) == list(range(1, 17))
    writers = {store.sidecar(1, "race", v)["writer"] for v in range(1, 17)}
    assert writers == set(range(16))
    assert not [p for p in os.listdir(tmp_path / "1" / "race") if p.startswith(".")]  # no draft left


def test_an_unreadable_image_is_reported_without_its_path(tmp_path):
    from medfm.catalog import ingest
    from medfm.io.synthetic import phantom, write_dicom_series

    folder = tmp_path / "images" / "Doe_Jane_MRN-77123"  # folder names often carry patient names
    files = write_dicom_series(phantom((16, 16, 3)), folder, patient_name="Doe^Jane")
    save_png = tmp_path / "images" / "Doe_Jane.png"
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(save_png)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest([tmp_path / "images"], url, progress=False)
    files[1].write_bytes(b"truncated")
    save_png.unlink()
    with make_client(tmp_path, url) as client:
        for image in client.get("/api/images").json()["images"]:
            response = client.get(f"/api/images/{image['id']}/slice.png")
            assert response.status_code == 400 and response.json()["detail"].startswith(f"image {image['id']} cannot be read")
            assert "Doe" not in response.text and str(tmp_path) not in response.text


@pytest.mark.parametrize("path, reason", [
    ("a\x00b", "not a usable file name"), ("x" * 5000, "not a usable file name"),
    (".", "medfm's own files"), ("annotations", "medfm's own files"), ("index/x", "medfm's own files"),
])
def test_ingest_refuses_unusable_names_and_medfms_own_folders(data, path, reason):
    (Path(data["root"]) / "annotations").mkdir(exist_ok=True)
    with make_client(data["root"], data["url"]) as client:
        response = client.post("/api/ingest", json={"path": path})
        assert response.status_code == 400 and reason in response.json()["detail"], response.text


def test_ids_beyond_64_bits_are_unknown_not_a_crash(data):
    with make_client(data["root"], data["url"]) as client:
        huge = 2**70
        for path in (f"/api/images/{huge}", f"/api/images/{huge}/annotations", f"/api/images/{huge}/slice.png"):
            assert client.get(path).status_code == 404, path
        assert client.get("/api/search", params={"image_id": huge}).status_code in (400, 404)
        assert client.get("/api/images", params={"limit": huge}).status_code == 200


def test_a_bug_answers_a_bare_500_and_logs_only_its_type(data, monkeypatch, caplog):
    from medfm.server.state import ServerState

    def broken(self, image_id):
        raise RuntimeError("Doe^Jane was here")  # a bug whose text names the patient

    monkeypatch.setattr(ServerState, "record", broken)
    with make_client(data["root"], data["url"]) as client, caplog.at_level("DEBUG", logger="medfm.server"):
        response = client.get(f"/api/images/{data['ct']}")
    assert response.status_code == 500 and response.json() == {"detail": "internal server error"}
    assert "RuntimeError" in caplog.text and "Doe" not in caplog.text and "Traceback" not in caplog.text


def test_pages_may_load_nothing_from_elsewhere(data):
    """The page, the API and /docs carry a content policy that keeps everything on this server."""
    with make_client(data["root"], data["url"]) as client:
        for path in ("/", "/api/images", "/js/main.js"):
            headers = client.get(path).headers
            policy = headers["content-security-policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline'" not in policy.split("style-src")[0]
            assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
        docs = client.get("/docs").headers["content-security-policy"]
        assert "script-src 'self' 'unsafe-inline'" in docs and "http" not in docs


def test_an_upload_that_cannot_be_stored_is_a_one_line_error(tmp_path):
    root = tmp_path / "data"
    data = make_data(root)
    (root / "uploads").write_text("a file where the uploads folder should be")
    with make_client(root, data["url"]) as client:
        response = client.post("/api/uploads", files=[("files", ("a.png", b"\x89PNG", "image/png"))])
    assert response.status_code == 400 and response.json()["detail"].startswith("cannot store the upload")
