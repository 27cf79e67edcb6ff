"""Every catalog record names exactly its own files, and is read back from those files alone.

A folder holding two series, a DICOM file ingested on its own next to other series, and
the same file saved under two names: indexing, classification, the server and
``medfm catalog list`` all see one record per series with exactly its files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture)

from medfm.catalog import ingest, open_catalog
from medfm.catalog.loading import load_record
from medfm.errors import MedfmError
from medfm.io.dicom import scan_dicom
from medfm.io.synthetic import phantom, write_dicom_series


@pytest.fixture
def two_series(tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    """One folder holding a 5-slice CT and a 3-slice MR, their files mixed together."""
    folder = tmp_path / "upload"
    ct = write_dicom_series(phantom((20, 16, 5)), folder, series_number=1, series_description="ct series")
    mr = write_dicom_series(phantom((12, 12, 3), seed=1), folder, modality="MR", series_number=2,
                            series_description="mr series", spacing=(1.0, 1.0, 2.0), seed=1)  # other file names
    return folder, ct, mr


def _records(catalog: str) -> dict[str, object]:
    with open_catalog(catalog) as store:
        return {r.description: r for r in store.query(with_files=True)}


def test_each_series_of_a_folder_is_its_own_files_and_loads_alone(two_series, tmp_path: Path) -> None:
    folder, ct, mr = two_series
    catalog = str(tmp_path / "c.db")
    report = ingest([folder], catalog, progress=False)
    assert report.added == 2 and not report.bad
    records = _records(catalog)
    for description, files, shape in (("ct series", ct, (20, 16, 5)), ("mr series", mr, (12, 12, 3))):
        record = records[description]
        assert sorted(f.path for f in record.files) == sorted(str(p.resolve()) for p in files)
        assert load_record(record).shape[:3] == shape


def test_a_dicom_file_ingested_alone_is_that_file_not_its_folder(two_series, tmp_path: Path) -> None:
    _, ct, _ = two_series
    catalog = str(tmp_path / "c.db")
    ingest([ct[2]], catalog, progress=False)
    (record,) = _records(catalog).values()
    assert record.source_path == str(ct[2].resolve()) and [f.path for f in record.files] == [record.source_path]
    image = load_record(record)  # the folder holds two series: loading it would fail
    assert image.shape[:3] == (20, 16, 1)
    assert np.array_equal(image.array[..., 0, 0, 0], phantom((20, 16, 5))[:, ::-1, 2])


def test_a_file_copied_under_another_name_is_a_duplicate_not_a_frame(two_series, tmp_path: Path) -> None:
    folder, ct, mr = two_series
    shutil.copy(mr[0], folder / "copy-of-a-slice.dcm")
    series, bad = scan_dicom(sorted(folder.iterdir()))
    by_number = {s.metadata["series_number"]: s for s in series}
    assert not bad and len(by_number[2].files) == 3 and len(by_number[2].duplicates) == 1
    catalog = str(tmp_path / "c.db")
    report = ingest([folder], catalog, progress=False)
    assert report.added == 2 and report.duplicates == 1 and not report.bad
    record = _records(catalog)["mr series"]
    assert record.num_files == 3 and load_record(record).shape[:4] == (12, 12, 3, 1)
    # a single copied file on its own: one slice, not a 2-frame series
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(ct[0], lone / "a.dcm")
    shutil.copy(ct[0], lone / "b.dcm")
    report = ingest([lone], str(tmp_path / "lone.db"), progress=False)
    (record,) = _records(str(tmp_path / "lone.db")).values()
    assert report.duplicates == 1 and load_record(record).shape[:4] == (20, 16, 1, 1)


def test_a_copy_found_under_another_dataset_is_a_duplicate_and_its_image_stays_in_its_dataset(
        two_series, tmp_path: Path, capsys) -> None:
    _, ct, _ = two_series
    for site in ("siteA", "siteB"):
        (tmp_path / site).mkdir()
        shutil.copy(ct[0], tmp_path / site / "slice.dcm")
    catalog = str(tmp_path / "c.db")
    code, _, _ = run_cli(["ingest", str(tmp_path / "siteA"), "--dataset", "siteA", "--catalog", catalog, "--no-progress"], capsys)
    assert code == 0
    code, out, err = run_cli(["ingest", str(tmp_path / "siteB"), "--dataset", "siteB", "--catalog", catalog, "--no-progress"], capsys)
    assert code == 0 and not err
    assert "0 images added, 0 updated" in out and "1 duplicates" in out
    assert out.splitlines()[1] == "duplicates of images catalogued before, which stay in their dataset: image 1 (dataset siteA)"
    (record,) = _records(catalog).values()
    assert record.dataset == "siteA" and [f.path for f in record.files] == [str((tmp_path / "siteA" / "slice.dcm").resolve())]


def test_a_record_whose_files_are_gone_is_a_one_line_error(two_series, tmp_path: Path) -> None:
    folder, ct, _ = two_series
    catalog = str(tmp_path / "c.db")
    ingest([folder], catalog, progress=False)
    ct[1].unlink()
    record = _records(catalog)["ct series"]
    with pytest.raises(MedfmError, match=rf"^image {record.id} cannot be read: 1 of its 5 files are missing"):
        load_record(record)
    with open_catalog(catalog) as store:
        (without_files,) = store.query(text="ct series")
    with pytest.raises(MedfmError, match="fetched without its files"):
        load_record(without_files)


def test_catalog_list_names_each_records_files(two_series, tmp_path: Path, capsys) -> None:
    folder, ct, mr = two_series
    catalog = str(tmp_path / "c.db")
    ingest([folder], catalog, progress=False)
    code, out, _ = run_cli(["catalog", "list", "--catalog", catalog, "--json"], capsys)
    assert code == 0
    listed = {r["description"]: sorted(f["path"] for f in r["files"]) for r in json.loads(out)}
    assert listed == {"ct series": sorted(str(p.resolve()) for p in ct), "mr series": sorted(str(p.resolve()) for p in mr)}
    code, out, _ = run_cli(["catalog", "list", "--catalog", catalog], capsys)
    mr_names = sorted(p.name for p in mr)
    (mr_line,) = [line for line in out.splitlines() if "mr series" in line]
    assert f"3 files: {', '.join(mr_names)}" in mr_line


@pytest.mark.usefixtures("fake_models")
def test_index_build_embeds_each_series_of_a_shared_folder(two_series, tmp_path: Path, capsys) -> None:
    folder, _, _ = two_series
    catalog = str(tmp_path / "c.db")
    ingest([folder], catalog, progress=False)
    code, out, err = run_cli(["index", "build", catalog, "--model", "fake-clip", "--index", str(tmp_path / "ix"),
                              "--no-progress"], capsys)
    assert code == 0 and "2 added" in out, err


@pytest.mark.usefixtures("fake_models")
def test_classify_takes_catalog_records(two_series, tmp_path: Path) -> None:
    from fakeencoder import FakeEncoder

    from medfm.tasks.classify import classify

    folder, _, _ = two_series
    catalog = str(tmp_path / "c.db")
    ingest([folder], catalog, progress=False)
    records = list(_records(catalog).values())
    results = classify(records, FakeEncoder(), labels=["bright", "dark"])
    assert [r["image_id"] for r in results] == [r.id for r in records] and all("path" not in r for r in results)


def test_server_two_series_uploaded_together_each_classify_and_index(two_series, tmp_path: Path) -> None:
    from servertools import make_client, wait_for_job

    _, ct, mr = two_series
    upload = [("files", (f"slice{n}.dcm", path.read_bytes(), "application/dicom")) for n, path in enumerate(ct + mr)]
    upload.append(("files", ("again.dcm", mr[0].read_bytes(), "application/dicom")))  # the same file twice
    url = f"sqlite:///{tmp_path / 'server.db'}"
    with make_client(tmp_path / "data", url) as client:
        status = wait_for_job(client, client.post("/api/uploads", files=upload).json()["job"])
        assert status["state"] == "done", status
        image_ids = status["result"]["image_ids"]
        assert len(image_ids) == 2
        shapes = sorted(client.get(f"/api/images/{i}").json()["shape"][:4] for i in image_ids)
        assert shapes == [[12, 12, 3, 1], [20, 16, 5, 1]]
        for image_id in image_ids:
            response = client.post(f"/api/images/{image_id}/classify", json={"labels": ["CT scan", "MR scan"]})
            assert response.status_code == 200, response.text
        status = wait_for_job(client, client.post("/api/index/build").json()["job"], timeout=120)
        assert status["state"] == "done" and status["result"]["failed"] == 0, status
        assert client.get("/api/health").json()["index_size"] == 2
