"""The CLI and the REST server search through one function (medfm.tasks.search.search), with the
same features: a query by image, text or an indexed item's id, ``where`` filters, ``exact``.
Errors about a file reach the server's clients as a reason without the file's path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import FakeEncoder, fake_models  # noqa: F401  (the fixture, used by every test below)
from servertools import make_client, wait_for_job

from medfm.catalog import ingest, open_catalog
from medfm.errors import UnreadableFileError
from medfm.index import open_index
from medfm.io import Image, load, save
from medfm.tasks.classify import MAX_LABEL_CHARS, check_labels

pytestmark = pytest.mark.usefixtures("fake_models")

#: A folder name that stands for patient data in a path: it must never reach a client.
PATIENT_FOLDER = "Doe^Jane"


@pytest.fixture
def catalog(tmp_path: Path) -> dict:
    """Ten PNGs (even ones bright, odd ones dark) in a catalog: the first five in dataset "train", the rest "test"."""
    folder = tmp_path / PATIENT_FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        pixels = ((170 if i % 2 == 0 else 20) + rng.integers(0, 60, (32, 32))).astype(np.uint8)
        paths.append(save(Image(pixels), folder / f"img{i:02d}.png"))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest(paths[:5], url, dataset="train", progress=False)
    ingest(paths[5:], url, dataset="test", progress=False)
    with open_catalog(url) as store:
        ids = {Path(record.source_path).name: record.id for record in store.query()}
    return {"root": tmp_path, "url": url, "paths": paths, "ids": [ids[path.name] for path in paths]}


@pytest.fixture
def client(catalog: dict):
    with make_client(catalog["root"], catalog["url"], encoder="fake-clip") as client:
        status = wait_for_job(client, client.post("/api/index/build").json()["job"])
        assert status["state"] == "done" and status["result"]["added"] == 10, status
        yield client


def brute_force(index_dir: Path, query_id: int, dataset: str) -> list[tuple[int, float]]:
    """``(id, cosine)`` of every item of ``dataset`` against the stored vector of ``query_id``, best first."""
    with open_index(index_dir) as index:
        ids = [item_id for item_id, _ in index.records({"dataset": dataset})]
        vectors = index.vectors(ids)
        query = index.vectors([query_id])[0]
    scores = vectors @ query
    return sorted(zip(ids, scores.tolist()), key=lambda pair: -pair[1])


def test_rest_filters_with_where_and_searches_exactly(client, catalog):
    index_dir = client.app.state.medfm.index_dir
    query_id = catalog["ids"][0]
    response = client.get("/api/search", params={"image_id": query_id, "where": "dataset=test", "exact": "true", "k": 3})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    expected = brute_force(index_dir, query_id, "test")[:3]
    assert [hit["image_id"] for hit in hits] == [item_id for item_id, _ in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([score for _, score in expected], abs=1e-5)
    assert {hit["dataset"] for hit in hits} == {"test"} and query_id not in {hit["image_id"] for hit in hits}
    assert set(hits[0]) == {"image_id", "name", "score", "modality", "body_part", "dataset", "description"}
    # two filters, given as repeated parameters, both apply; a text query takes them too
    both = client.get("/api/search", params=[("text", "bright"), ("where", "dataset=train"), ("where", f"modality={hits[0]['modality']}")])
    assert both.status_code == 200 and {hit["dataset"] for hit in both.json()["hits"]} == {"train"}
    assert len(both.json()["hits"]) == 5
    nothing = client.get("/api/search", params={"text": "bright", "where": "dataset=validation"})
    assert nothing.status_code == 200 and nothing.json()["hits"] == []


def test_rest_refuses_malformed_filters_and_filters_on_paths(client, catalog):
    malformed = client.get("/api/search", params={"text": "bright", "where": "dataset"})
    assert malformed.status_code == 400 and "where takes KEY=VALUE" in malformed.json()["detail"]
    # the index holds each image's path, which may name the patient: no filter may probe it
    probe = client.get("/api/search", params={"text": "bright", "where": f"path={catalog['paths'][0]}"})
    assert probe.status_code == 400, probe.text
    assert probe.json()["detail"] == "where can filter on modality, body_part, dataset; got path"
    assert client.get("/api/search", params={"text": "bright", "k": 1001}).status_code == 400


def test_cli_and_rest_give_the_same_hits_for_the_same_query(client, catalog, capsys):
    index_dir = client.app.state.medfm.index_dir
    query_id = catalog["ids"][7]
    rest = client.get("/api/search", params={"image_id": query_id, "where": "dataset=train", "exact": "true", "k": 4}).json()["hits"]
    code, out, err = run_cli(["search", "--index", str(index_dir), "--id", str(query_id), "--where", "dataset=train",
                              "--exact", "-k", "4", "--json"], capsys)
    assert code == 0, err
    cli = json.loads(out)
    assert [hit["id"] for hit in cli] == [hit["image_id"] for hit in rest] and len(cli) == 4
    assert [hit["score"] for hit in cli] == [hit["score"] for hit in rest]
    # and a text query
    rest = client.get("/api/search", params={"text": "a dark image", "k": 3}).json()["hits"]
    code, out, _ = run_cli(["search", "--index", str(index_dir), "--text", "a dark image", "-k", "3", "--json"], capsys)
    assert code == 0 and [hit["id"] for hit in json.loads(out)] == [hit["image_id"] for hit in rest]
    assert all(int(Path(hit["path"]).stem[-2:]) % 2 == 1 for hit in json.loads(out))


def test_cli_searches_by_an_indexed_id_without_reading_or_encoding_an_image(catalog, tmp_path, capsys, monkeypatch):
    index = str(tmp_path / "ix")
    code, _, err = run_cli(["index", "build", catalog["url"], "--model", "fake-clip", "--index", index, "--no-progress"], capsys)
    assert code == 0, err
    query_id = catalog["ids"][2]
    code, out, _ = run_cli(["search", "--index", index, "--id", str(query_id), "-k", "10", "--json"], capsys)
    before = json.loads(out)
    for path in catalog["paths"]:
        path.unlink()  # a query that read any image would now fail

    def no_encoding(self, items):
        raise AssertionError("an --id query encoded something")

    monkeypatch.setattr(FakeEncoder, "encode_planes", no_encoding)
    monkeypatch.setattr(FakeEncoder, "encode_text", no_encoding)
    code, out, err = run_cli(["search", "--index", index, "--id", str(query_id), "-k", "10", "--json"], capsys)
    assert code == 0, err
    hits = json.loads(out)
    assert hits == before and len(hits) == 10
    assert hits[0]["id"] == query_id and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # the nearest others are bright like the query (even file numbers)
    assert all(int(Path(hit["path"]).stem[-2:]) % 2 == 0 for hit in hits[:5])
    code, out, _ = run_cli(["search", "--index", index, "--id", str(query_id), "--where", "dataset=test", "--json"], capsys)
    assert code == 0 and {hit["dataset"] for hit in json.loads(out)} == {"test"} and len(json.loads(out)) == 5


def test_cli_id_query_errors_are_one_line(catalog, tmp_path, capsys):
    index = str(tmp_path / "ix")
    assert run_cli(["index", "build", catalog["url"], "--model", "fake-clip", "--index", index, "--no-progress"], capsys)[0] == 0
    for item_id in ("12345", "-1"):
        code, _, err = run_cli(["search", "--index", index, "--id", item_id], capsys)
        assert code == 2 and f"has no id(s) {item_id}" in err and len(err.splitlines()) == 1, err
    code, _, err = run_cli(["search", "--index", index, "--id", str(catalog["ids"][0]), "--text", "bright"], capsys)
    assert code == 2 and "give exactly one query" in err
    # a named model is checked against the index's, even though an --id query does not use it
    code, _, err = run_cli(["search", "--index", index, "--id", str(catalog["ids"][0]), "--model", "other-clip"], capsys)
    assert code == 2 and "was built with model 'fake-clip'" in err


def test_rest_searches_an_image_not_yet_indexed_by_reading_it(client, catalog):
    state = client.app.state.medfm
    with state.encoder_lock:
        state.index().delete([catalog["ids"][4]])
    hits = client.get("/api/search", params={"image_id": catalog["ids"][4], "k": 2}).json()["hits"]
    assert len(hits) == 2 and catalog["ids"][4] not in {hit["image_id"] for hit in hits}
    assert hits[0]["score"] > 0.9  # another bright image, found from the embedding of the image read afresh


def truncate(path: Path) -> str:
    """Cut ``path`` to its first half; the reason medfm gives for not reading it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UnreadableFileError) as caught:
        load(path)
    return caught.value.reason


def test_server_errors_about_a_file_give_the_whole_reason_and_no_path(catalog, tmp_path):
    folder = tmp_path / "more" / PATIENT_FOLDER
    volume = save(Image(np.arange(24 * 24 * 4, dtype=np.float32).reshape(24, 24, 4)), folder / "scan.nii")
    ingest([volume], catalog["url"], progress=False)
    with open_catalog(catalog["url"]) as store:
        (image_id,) = [record.id for record in store.query() if record.source_path.endswith("scan.nii")]
    reason = truncate(volume)
    assert ": " in reason  # the part a split on ": " would have lost
    with make_client(catalog["root"], catalog["url"], encoder="fake-clip") as client:
        response = client.post(f"/api/images/{image_id}/classify", json={"labels": ["bright", "dark"]})
        assert response.status_code == 400
        assert response.json()["detail"] == f"image {image_id} cannot be read: {reason}"  # the catalog reads it by id
        response = client.get(f"/api/images/{image_id}")
        assert response.status_code == 400 and response.json()["detail"] == f"image {image_id} cannot be read: {reason}"
        for text in (response.text, client.post(f"/api/images/{image_id}/classify", json={"labels": ["a", "b"]}).text):
            assert "Doe" not in text and str(tmp_path) not in text


def test_labels_are_checked_by_the_library_for_both_surfaces(catalog, capsys):
    with make_client(catalog["root"], catalog["url"], encoder="fake-clip") as client:
        image_id = catalog["ids"][0]
        cases = [(["bright", "bright"], "at least two distinct labels"), (["bright"], "at least two distinct labels"),
                 (["bright", "  "], "label is blank"), (["bright", "x" * (MAX_LABEL_CHARS + 1)], f"at most {MAX_LABEL_CHARS} characters")]
        for labels, message in cases:
            response = client.post(f"/api/images/{image_id}/classify", json={"labels": labels})
            assert response.status_code == 400 and message in response.json()["detail"], response.text
            with pytest.raises(Exception, match=message):
                check_labels(labels)
        result = client.post(f"/api/images/{image_id}/classify", json={"labels": ["bright", "dark"]}).json()
        assert result["prediction"] == "bright"  # image 0 is a bright one
    code, _, err = run_cli(["classify", str(catalog["paths"][0]), "--labels", "bright,bright", "--model", "fake-clip"], capsys)
    assert code == 2 and "at least two distinct labels" in err
