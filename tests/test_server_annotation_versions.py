"""Annotation versions through the API: author, time and draft/final status; list, load, mark final,
delete (set aside, numbers never reused, a final version protected), under the cross-site rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medfm.server.app import create_app
from medfm.server.settings import ServerSettings
from servertools import make_client, make_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("versions")
    return {"root": root, **make_data(root)}


@pytest.fixture(scope="module")
def client(data: dict):
    with make_client(data["root"], data["url"]) as client:
        yield client


def save(client, image_id: int, name: str, author: str | None = None, box=(16, 16, 32, 32)) -> dict:
    session = client.post("/api/sessions", json={"image_id": image_id}).json()["session"]
    assert client.post(f"/api/sessions/{session}/prompts", json={"k": 2, "box": list(box)}).status_code == 200
    response = client.post(f"/api/sessions/{session}/save", json={"name": name, **({"author": author} if author else {})})
    assert response.status_code == 200, response.text
    return response.json()


def versions(client, image_id: int, name: str) -> list[dict]:
    listing = client.get(f"/api/images/{image_id}/annotations").json()["annotations"]
    return next((a["versions"] for a in listing if a["name"] == name), [])


def test_a_version_records_its_author_time_and_starts_as_a_draft(client, data):
    saved = save(client, data["disc"], "liver", author="  Dr. Ada  ")
    assert saved["author"] == "Dr. Ada" and saved["status"] == "draft" and saved["created"]
    (listed,) = versions(client, data["disc"], "liver")
    assert listed["author"] == "Dr. Ada" and listed["status"] == "draft" and listed["voxels"]["1"] > 0
    assert save(client, data["disc"], "liver")["author"] is None  # a script that names no one
    too_long = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
    response = client.post(f"/api/sessions/{too_long}/save", json={"name": "liver", "author": "x" * 65})
    assert response.status_code == 400 and "author" in response.json()["detail"]


def test_mark_final_then_delete_is_refused_until_it_is_a_draft_again(client, data):
    first = save(client, data["disc"], "kidney")
    url = f"/api/images/{data['disc']}/annotations/kidney/{first['version']}"
    response = client.patch(url, json={"status": "final"})
    assert response.status_code == 200 and response.json()["status"] == "final"
    assert versions(client, data["disc"], "kidney")[0]["status"] == "final"
    refused = client.delete(url)
    assert refused.status_code == 400 and "final" in refused.json()["detail"]
    assert client.patch(url, json={"status": "approved"}).status_code == 400
    assert client.patch(url, json={"status": "draft"}).json()["status"] == "draft"
    assert client.delete(url).json() == {"name": "kidney", "version": first["version"], "state": "deleted"}
    assert versions(client, data["disc"], "kidney") == []
    assert client.get(f"{url}/file").status_code == 404 and client.delete(url).status_code == 404
    kept = Path(data["root"], "annotations", str(data["disc"]), "kidney", ".deleted")
    assert sorted(p.name for p in kept.iterdir()) == ["v0001.json", "v0001.nii.gz"]  # set aside, not lost


def test_a_deleted_number_is_never_given_to_another_version(client, data):
    numbers = [save(client, data["disc"], "spleen")["version"] for _ in range(2)]
    assert numbers == [1, 2]
    assert client.delete(f"/api/images/{data['disc']}/annotations/spleen/2").status_code == 200
    assert save(client, data["disc"], "spleen")["version"] == 3  # v2 still means what it meant
    assert [v["version"] for v in versions(client, data["disc"], "spleen")] == [1, 3]


def test_a_deleted_version_cannot_be_loaded_and_others_still_can(client, data):
    save(client, data["disc"], "bladder")
    save(client, data["disc"], "bladder", box=(10, 10, 20, 20))
    client.delete(f"/api/images/{data['disc']}/annotations/bladder/1")
    gone = client.post("/api/sessions", json={"image_id": data["disc"], "annotation": {"name": "bladder", "version": 1}})
    assert gone.status_code == 404
    assert client.post("/api/sessions", json={"image_id": data["disc"], "annotation": {"name": "bladder", "version": 2}}).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-Medfm-Client": "x", "Origin": "http://evil.example"}])
def test_status_and_delete_from_another_site_are_refused(client, data, headers):
    saved = save(client, data["disc"], "gland")
    url = f"/api/images/{data['disc']}/annotations/gland/{saved['version']}"
    app = create_app(ServerSettings(data_dir=data["root"], catalog_url=data["url"]))
    with TestClient(app, base_url="http://127.0.0.1", headers=headers) as foreign:
        assert foreign.patch(url, json={"status": "final"}).status_code == 403
        assert foreign.delete(url).status_code == 403
    assert versions(client, data["disc"], "gland")[-1]["status"] == "draft"
