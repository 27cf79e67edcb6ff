"""``medfm catalog rename`` and ``delete``: what the workbench's Rename and Delete do, from the command line."""

from __future__ import annotations

import io
import json

import pytest

from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture)
from medfm.catalog import open_catalog
from servertools import make_client, make_data, wait_for_job


@pytest.fixture
def data(tmp_path, monkeypatch) -> dict:
    """A data folder with its default catalog (as `medfm serve` pairs them)."""
    made = make_data(tmp_path)
    monkeypatch.setenv("MEDFM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDFM_CATALOG", made["url"])
    return {"root": tmp_path, **made}


def test_rename_names_the_image_in_the_server_lists_too(data, capsys):
    code, out, _ = run_cli(["catalog", "rename", str(data["ct"]), "  Head CT, before surgery "], capsys)
    assert code == 0 and out.strip() == f"image {data['ct']} is now named 'Head CT, before surgery'"
    with make_client(data["root"], data["url"]) as client:
        assert client.get(f"/api/images/{data['ct']}").json()["name"] == "Head CT, before surgery"
    code, out, _ = run_cli(["catalog", "rename", str(data["photo"]), "Photo", "--json"], capsys)
    assert code == 0 and '"name": "Photo"' in out


@pytest.mark.parametrize("args, message", [
    (["catalog", "rename", "{ct}", "   "], "an image's name must be 1 to"),
    (["catalog", "rename", "999", "Name"], "has no image with id 999"),
    (["catalog", "delete", "999", "--yes"], "has no image with id 999"),
])
def test_bad_input_is_one_line_and_changes_nothing(data, capsys, args, message):
    code, out, err = run_cli([a.format(ct=data["ct"]) for a in args], capsys)
    assert code != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with open_catalog(data["url"]) as store:
        assert store.count() == 3 and store.get(data["ct"]).description != ""


def test_delete_asks_first_and_keeps_the_image_when_told_no(data, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, out, _ = run_cli(["catalog", "delete", str(data["photo"])], capsys)
    assert code != 0 and f"Delete image {data['photo']} (photo.png)" in out
    with open_catalog(data["url"]) as store:
        assert store.count() == 3


def test_delete_removes_the_image_and_sets_its_annotations_aside(data, capsys):
    saved = data["root"] / "annotations" / str(data["disc"]) / "liver"
    saved.mkdir(parents=True)
    (saved / "v1.json").write_text("{}")
    code, out, _ = run_cli(["catalog", "delete", str(data["disc"]), "--yes"], capsys)
    assert code == 0 and out.startswith(f"image {data['disc']} deleted from the catalog; its annotations moved to")
    with open_catalog(data["url"]) as store:
        assert store.count() == 2 and data["disc"] not in {r.id for r in store.query()}
    assert not saved.exists()
    (moved,) = (data["root"] / "deleted").glob(f"annotations-{data['disc']}-*")
    assert (moved / "liver" / "v1.json").read_text() == "{}"
    with make_client(data["root"], data["url"]) as client:  # the server agrees: the image is gone
        assert client.get(f"/api/images/{data['disc']}").status_code == 404


@pytest.mark.usefixtures("fake_models")
def test_delete_removes_the_image_from_the_data_folders_search_index(data, capsys):
    with make_client(data["root"], data["url"], encoder="fake-clip") as client:
        assert wait_for_job(client, client.post("/api/index/build").json()["job"])["state"] == "done"
    index = data["root"] / "index" / "fake-clip"
    query = ["search", "--index", str(index), "--id", str(data["ct"]), "--json", "--exact"]
    code, out, _ = run_cli(query, capsys)
    assert code == 0 and {hit["id"] for hit in json.loads(out)} == {data["disc"], data["photo"], data["ct"]}
    code, _, _ = run_cli(["catalog", "delete", str(data["disc"]), "--yes"], capsys)
    assert code == 0
    code, out, _ = run_cli(query, capsys)
    assert code == 0 and {hit["id"] for hit in json.loads(out)} == {data["photo"], data["ct"]}
    with make_client(data["root"], data["url"], encoder="fake-clip") as client:  # the server's count agrees
        assert client.get("/api/health").json()["index_size"] == 2
