"""Chunked, resumable uploads: a study of many files in a few requests, resumed after a lost
answer, refused when incomplete, never seen by an ingest until whole."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from medfm.io.synthetic import phantom, write_dicom_series
from medfm.server.uploads import Uploads
from servertools import make_client, make_data, wait_for_job


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("uploads")
    return {"root": root, **make_data(root)}


def study(folder: Path, slices: int) -> list[tuple[str, bytes]]:
    """A DICOM series of ``slices`` files, as (relative name, bytes), with a file that is not DICOM."""
    files = write_dicom_series(phantom((16, 16, slices)), folder / "study", patient_name="Doe^Jane")
    named = [(f"study/{path.name}", path.read_bytes()) for path in files]
    return named + [("study/README.txt", b"not an image"), ("study/empty.txt", b"")]


def test_a_study_of_many_files_goes_in_by_chunks_and_resumes(data, tmp_path):
    files = study(tmp_path, 1200)  # more files than one multipart request may carry
    stream = b"".join(content for _name, content in files)
    with make_client(data["root"], data["url"], max_upload_bytes=64 * 1024) as client:
        begun = client.post("/api/uploads/chunked", json={"files": [{"name": n, "size": len(c)} for n, c in files]}).json()
        upload, chunk = begun["upload"], begun["chunk_bytes"]
        assert chunk == 64 * 1024 and len(stream) > 20 * chunk
        offset, requests = 0, 0
        while offset < len(stream):
            answer = client.put(f"/api/uploads/chunked/{upload}", params={"offset": offset}, content=stream[offset:offset + chunk])
            assert answer.status_code == 200, answer.text
            requests += 1
            if requests == 3:  # the answer was lost: the client sends the same chunk again
                again = client.put(f"/api/uploads/chunked/{upload}", params={"offset": offset}, content=stream[offset:offset + chunk])
                assert again.status_code == 409 and again.json()["received"] == answer.json()["received"]
                status = client.get(f"/api/uploads/chunked/{upload}").json()
                assert status == {"upload": upload, "received": answer.json()["received"], "size": len(stream)}
            offset = answer.json()["received"]
            if requests == 5:  # nothing is ingested before the upload is finished
                assert not list((Path(data["root"]) / "uploads").glob(f"{upload}*"))
        assert requests == -(-len(stream) // chunk)
        status = wait_for_job(client, client.post(f"/api/uploads/chunked/{upload}/finish").json()["job"], timeout=300)
        assert status["state"] == "done", status
        (image_id,) = status["result"]["image_ids"]
        assert client.get(f"/api/images/{image_id}").json()["num_slices"] == 1200
        stored = Path(data["root"]) / "uploads" / upload
        assert sorted(p.read_bytes() for p in stored.iterdir()) == sorted(content for _name, content in files)
        assert client.get(f"/api/uploads/chunked/{upload}").status_code == 404  # finished: no longer open


def test_an_incomplete_or_overlong_upload_is_refused(data, tmp_path):
    with make_client(data["root"], data["url"]) as client:
        upload = client.post("/api/uploads/chunked", json={"files": [{"name": "a.png", "size": 10}]}).json()["upload"]
        assert client.put(f"/api/uploads/chunked/{upload}", params={"offset": 0}, content=b"x" * 4).json() == {"received": 4}
        response = client.post(f"/api/uploads/chunked/{upload}/finish")
        assert response.status_code == 400 and "4 of 10 bytes" in response.json()["detail"]
        response = client.put(f"/api/uploads/chunked/{upload}", params={"offset": 4}, content=b"x" * 7)
        assert response.status_code == 400 and "declared with 10 bytes" in response.json()["detail"]
        assert client.put(f"/api/uploads/chunked/{upload}", params={"offset": 9}, content=b"x").status_code == 409
        assert client.delete(f"/api/uploads/chunked/{upload}").json() == {"upload": upload, "state": "cancelled"}
        assert not list((Path(data["root"]) / "uploads").glob(f".incoming-{upload}*"))
        for bad in ("../../etc", "x" * 32, "0" * 32):
            assert client.get(f"/api/uploads/chunked/{bad}").status_code == 404
        assert client.post("/api/uploads/chunked", json={"files": []}).status_code == 400
        response = client.post("/api/uploads/chunked", json={"files": [{"name": "a", "size": 2**62}]})
        assert response.status_code == 400 and "free" in response.json()["detail"]


def test_unfinished_uploads_are_removed_when_stale(tmp_path):
    uploads = Uploads(tmp_path / "uploads")
    old, fresh = uploads.begin([("a.dcm", 3)]), uploads.begin([("b.dcm", 3)])
    uploads.write(old, 0, b"ab")
    long_ago = time.time() - 2 * 24 * 3600
    for path in (tmp_path / "uploads").glob(f".incoming-{old}*"):
        os.utime(path, (long_ago, long_ago))
    uploads.remove_stale()
    assert not list((tmp_path / "uploads").glob(f".incoming-{old}*"))
    assert uploads.received(fresh) == (0, 3)
