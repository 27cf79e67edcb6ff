"""Browsing the catalog through the API: patient → study → series grouping without patient data,
sorting, server-side paging, rename and delete (under the same cross-site rules as every change)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medfm.catalog import ingest, open_catalog
from medfm.catalog.browse import browse
from medfm.catalog.store import FileRecord, ImageEntry
from medfm.io.synthetic import phantom, write_dicom_series
from medfm.server.app import create_app
from medfm.server.settings import ServerSettings
from servertools import make_client

#: (patient name, patient id, study, series description): two patients, the first with two studies
SERIES = [
    ("Roe^Richard", "MRN-1", "1.2.826.0.1.3680043.8.498.1", "head plain"),
    ("Roe^Richard", "MRN-1", "1.2.826.0.1.3680043.8.498.1", "head contrast"),
    ("Roe^Richard", "MRN-1", "1.2.826.0.1.3680043.8.498.2", "follow-up"),
    ("Poe^Paula", "MRN-2", "1.2.826.0.1.3680043.8.498.3", "abdomen"),
]
SECRETS = ("Roe", "Richard", "Poe", "Paula", "MRN-1", "MRN-2", "1.2.826.0.1.3680043.8.498")


@pytest.fixture
def data(tmp_path: Path) -> dict:
    images = tmp_path / "images"
    for number, (name, patient_id, study, description) in enumerate(SERIES, start=1):
        write_dicom_series(phantom((16, 16, 3)), images / f"s{number}", patient_name=name, patient_id=patient_id,
                           study_uid=study, series_description=description, series_number=number, seed=number)
    from PIL import Image as PILImage

    PILImage.fromarray(np.full((12, 12), 80, np.uint8)).save(images / "zebra.png")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest([images], url, progress=False)
    return {"root": tmp_path, "url": url}


@pytest.fixture
def client(data: dict):
    with make_client(data["root"], data["url"]) as client:
        yield client


def listing(client, **params) -> dict:
    response = client.get("/api/images", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_series_group_by_patient_pseudonym_and_study_without_patient_data(client):
    answer = listing(client, sort="patient")
    images = answer["images"]
    assert answer["total"] == 5 and [image["name"] for image in images][-1] == "zebra.png"  # no patient: last
    by_name = {image["name"]: image for image in images}
    assert by_name["head plain"]["patient"] == by_name["follow-up"]["patient"] != by_name["abdomen"]["patient"]
    assert by_name["head plain"]["study"] == by_name["head contrast"]["study"] != by_name["follow-up"]["study"]
    assert by_name["zebra.png"]["patient"] is None and by_name["zebra.png"]["study"] is None
    # each patient's series, and each study's, are next to each other
    patients = [image["patient"] for image in images]
    assert patients == sorted(patients, key=lambda p: (p is None, p or ""))
    response = client.get("/api/images", params={"sort": "patient"})
    assert not any(secret in response.text for secret in SECRETS)
    shown = listing(client, sort="patient", show_phi=True)["images"]
    assert {image["phi"].get("patient_name") for image in shown[:4]} == {"Roe^Richard", "Poe^Paula"}  # only when asked


def test_sorting_and_paging_happen_on_the_server(client):
    names = [image["name"] for image in listing(client, sort="name")["images"]]
    assert names == sorted(names, key=str.casefold)
    assert [image["name"] for image in listing(client, sort="name", order="desc")["images"]] == names[::-1]
    assert listing(client, modality="OT", limit=1)["modalities"] == ["CT", "OT"]  # the whole catalog's, for the menu
    pages = [listing(client, sort="name", offset=offset, limit=2) for offset in (0, 2, 4)]
    assert [len(page["images"]) for page in pages] == [2, 2, 1] and {page["total"] for page in pages} == {5}
    assert [image["name"] for page in pages for image in page["images"]] == names
    assert listing(client, sort="name", offset=9)["images"] == []
    for sort in ("added", "name"):  # past SQLite's 64-bit integers: an empty page, not an overflow
        assert listing(client, sort=sort, offset=2**63)["images"] == [] and listing(client, sort=sort, offset=2**70)["total"] == 5
    assert listing(client, text="HEAD", sort="name")["total"] == 2  # the filter counts before paging
    for params, says in (({"sort": "size"}, "sort must be one of"), ({"offset": -1}, "offset"), ({"limit": 0}, "limit"),
                         ({"order": "up"}, "order")):
        response = client.get("/api/images", params=params)
        assert response.status_code == 400 and says in response.json()["detail"]


@pytest.mark.parametrize("sort", ["added", "modality", "patient"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_the_database_and_the_text_filter_sort_alike(client, sort, order):
    by_database = [i["id"] for i in listing(client, sort=sort, order=order)["images"]]
    by_text = [i["id"] for i in listing(client, sort=sort, order=order, text="e")["images"]]  # all but "follow-up"
    assert len(by_text) == 4 and by_text == [i for i in by_database if i in by_text]


def test_rename_changes_the_name_lists_and_filters_show(client):
    image = next(i for i in listing(client)["images"] if i["name"] == "zebra.png")
    response = client.patch(f"/api/images/{image['id']}", json={"name": "  left hand  "})
    assert response.status_code == 200 and response.json()["name"] == "left hand"
    assert [i["id"] for i in listing(client, text="left hand")["images"]] == [image["id"]]
    assert listing(client, text="zebra")["total"] == 0
    for body in ({"name": ""}, {"name": "x" * 201}, {}):
        assert client.patch(f"/api/images/{image['id']}", json=body).status_code == 400
    assert client.patch("/api/images/999999", json={"name": "x"}).status_code == 404


def test_delete_removes_the_entry_and_sets_its_annotations_aside(client, data):
    image = next(i for i in listing(client)["images"] if i["name"] == "head plain")
    session = client.post("/api/sessions", json={"image_id": image["id"]}).json()["session"]
    client.post(f"/api/sessions/{session}/prompts", json={"k": 1, "box": [2, 2, 12, 12]})
    assert client.post(f"/api/sessions/{session}/save", json={"name": "brain"}).status_code == 200
    response = client.delete(f"/api/images/{image['id']}")
    assert response.status_code == 200 and response.json() == {"id": image["id"], "state": "deleted"}
    assert image["id"] not in [i["id"] for i in listing(client)["images"]] and listing(client)["total"] == 4
    assert client.get(f"/api/images/{image['id']}").status_code == 404
    assert client.delete(f"/api/images/{image['id']}").status_code == 404
    assert not (Path(data["root"]) / "annotations" / str(image["id"])).exists()
    kept = list((Path(data["root"]) / "deleted").glob(f"annotations-{image['id']}-*/brain/v0001.nii.gz"))
    assert len(kept) == 1  # set aside, not lost
    assert any(Path(data["root"], "images", "s1").iterdir())  # the files on disk stay


@pytest.mark.parametrize("headers", [{}, {"X-Medfm-Client": "x", "Origin": "http://evil.example"},
                                     {"X-Medfm-Client": "x", "Sec-Fetch-Site": "cross-site"}])
def test_rename_and_delete_from_another_site_are_refused(data, headers):
    app = create_app(ServerSettings(data_dir=data["root"], catalog_url=data["url"]))
    with TestClient(app, base_url="http://127.0.0.1", headers=headers) as client:
        image = client.get("/api/images").json()["images"][0]
        assert client.patch(f"/api/images/{image['id']}", json={"name": "pwned"}).status_code == 403
        assert client.delete(f"/api/images/{image['id']}").status_code == 403
        assert client.get(f"/api/images/{image['id']}").json()["name"] == image["name"]


def test_a_page_of_ten_thousand_images_reads_only_that_page(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with open_catalog(url) as catalog:
        entries = [ImageEntry("png", f"/data/img{n:05d}.png", "OT", None, None, (8, 8), (1.0, 1.0), "RA",
                              [FileRecord(f"/data/img{n:05d}.png", 1, 1, f"{n:064x}")]) for n in range(10_000)]
        catalog.save(entries)
        asked: list[int] = []
        get_many = catalog.get_many
        monkeypatch.setattr(catalog, "get_many", lambda ids: asked.extend(ids) or get_many(ids))
        page = browse(catalog, sort="name", descending=True, offset=100, limit=50)
        assert page.total == 10_000 and len(asked) == 50
        assert [r.source_path for r in page.records] == [f"/data/img{n:05d}.png" for n in range(9899, 9849, -1)]
        page = browse(catalog, sort="added", descending=True, offset=100, limit=50)  # the database's own paging
        assert page.total == 10_000 and len(asked) == 50
        assert [r.source_path for r in page.records] == [f"/data/img{n:05d}.png" for n in range(9899, 9849, -1)]
