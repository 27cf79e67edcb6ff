"""The catalog and ``medfm ingest`` / ``medfm catalog``: SQLite in a temporary folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli

import medfm
from medfm.catalog import ingest, open_catalog
from medfm.catalog import ingestion
from medfm.catalog.schema import SCHEMA_VERSION
from medfm.catalog.store import normalize_url
from medfm.errors import MedfmError
from medfm.io.image import Image
from medfm.io.synthetic import phantom, write_dicom_series
from medfm.paths import data_dir, default_catalog_url

PATIENT_NAME = "Zyxwvut^Quentin"
PATIENT_ID = "PID-77-4242"


def make_tree(root: Path) -> Path:
    """Two DICOM series of one study, a NIfTI, a PNG, a README, and five bad images."""
    study = "1.2.826.0.1.3680043.8.498.1"
    common = {"patient_name": PATIENT_NAME, "patient_id": PATIENT_ID, "study_uid": study}
    write_dicom_series(phantom((24, 20, 6)), root / "dicom" / "ct", series_number=1,
                       series_description="head phantom axial", body_part="HEAD", **common)
    write_dicom_series(phantom((16, 16, 4)), root / "dicom" / "mr", modality="MR", series_number=2,
                       series_description="brain T1", body_part="BRAIN", spacing=(1.0, 1.0, 3.0), **common)
    medfm.save(Image(phantom((12, 10, 5)), np.diag([1.0, 1.5, 2.0, 1.0])), root / "nifti" / "volume.nii.gz")
    medfm.save(Image(np.arange(200, dtype=np.uint8).reshape(20, 10)), root / "photos" / "picture.png")
    (root / "README.txt").write_text("Phantom data for the catalog tests.\n")
    (root / "broken").mkdir()
    (root / "broken" / "corrupt.dcm").write_bytes(b"this is not DICOM " * 40)
    (root / "broken" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 30)
    (root / "broken" / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    truncated = medfm.save(Image(phantom((16, 16, 8))), root / "broken" / "truncated.nii")
    truncated.write_bytes(truncated.read_bytes()[:1000])
    (root / "broken" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(autouse=True)
def data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "medfm-data"
    monkeypatch.setenv("MEDFM_DATA_DIR", str(folder))
    monkeypatch.delenv("MEDFM_CATALOG", raising=False)
    return folder


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


# ---- checks shared with test_catalog_postgres.py -------------------------------------------


def check_first_ingest(url: str | None, tree: Path) -> None:
    report = ingest([tree], url, dataset="phantoms", progress=False)
    assert (report.added, report.updated, report.unchanged, report.skipped) == (4, 0, 0, 1)
    reasons = {Path(path).name: reason for path, reason in report.bad}
    assert list(reasons) == ["corrupt.dcm", "corrupt.nii.gz", "corrupt.png", "empty.png", "truncated.nii"]
    assert "not a DICOM file" in reasons["corrupt.dcm"]
    assert reasons["corrupt.nii.gz"].startswith("cannot read as nifti")
    assert reasons["corrupt.png"].startswith("cannot read as png")
    assert reasons["empty.png"] == "file is empty (0 bytes)"
    assert reasons["truncated.nii"].endswith("it is truncated or damaged")  # from the header alone
    assert PATIENT_NAME not in repr(report) and PATIENT_ID not in repr(report)

    with open_catalog(url) as catalog:
        records = catalog.query()
        assert len(records) == 4
        by_format = {}
        for record in records:
            by_format.setdefault(record.format, []).append(record)
        ct, mr = sorted(by_format["dicom"], key=lambda r: r.modality)
        assert (ct.modality, ct.body_part, ct.num_files, ct.shape) == ("CT", "HEAD", 6, (24, 20, 6, 1, 1))
        assert (mr.modality, mr.body_part, mr.num_files, mr.shape) == ("MR", "BRAIN", 4, (16, 16, 4, 1, 1))
        assert ct.spacing == pytest.approx((0.8, 0.8, 2.5)) and mr.spacing == pytest.approx((1.0, 1.0, 3.0))
        assert ct.study_uid == mr.study_uid == "1.2.826.0.1.3680043.8.498.1"
        assert ct.series_uid != mr.series_uid
        assert ct.orientation == "LAS"  # dcm2niix's layout: the row axis runs against the column direction
        assert Path(ct.source_path) == (tree / "dicom" / "ct").resolve()
        assert ct.description == "head phantom axial" and ct.dataset == "phantoms"

        # One pseudonym per patient, keyed: neither the raw ID nor its plain hash.
        assert ct.patient_key == mr.patient_key == catalog.patient_key(PATIENT_ID)
        assert len(ct.patient_key) == 32 and PATIENT_ID not in ct.patient_key
        assert ct.patient_key not in hashlib.sha256(PATIENT_ID.encode()).hexdigest()
        for record in records:
            assert PATIENT_NAME not in json.dumps(record.to_dict()) and PATIENT_ID not in json.dumps(record.to_dict())
            assert PATIENT_NAME not in repr(record)
        assert catalog.get(ct.id).to_dict(show_phi=True)["phi"]["patient_name"] == PATIENT_NAME

        (nifti,) = by_format["nifti"]
        assert nifti.shape == (12, 10, 5, 1, 1) and nifti.spacing == pytest.approx((1.0, 1.5, 2.0))
        assert nifti.orientation == "RAS" and nifti.modality == "OT" and nifti.patient_key is None
        (png,) = by_format["png"]
        assert png.shape == (20, 10, 1, 1, 1) and png.metadata["spacing_known"] is False

        full = catalog.get(png.id)
        (file,) = full.files
        picture = tree / "photos" / "picture.png"
        assert file.sha256 == hashlib.sha256(picture.read_bytes()).hexdigest()
        assert (Path(file.path), file.size) == (picture.resolve(), picture.stat().st_size)
        assert len(catalog.get(ct.id).files) == 6


def check_reingest_adds_nothing(url: str | None, tree: Path) -> None:
    report = ingest(tree, url, progress=False)
    assert (report.added, report.updated, report.unchanged, report.skipped) == (0, 0, 12, 1)
    assert len(report.bad) == 5  # still bad, so still reported
    with open_catalog(url) as catalog:
        records = catalog.query()
        assert len(records) == 4 and sum(r.num_files for r in records) == 12
        assert {r.dataset for r in records} == {"phantoms"}


def check_queries(url: str | None) -> None:
    with open_catalog(url) as catalog:
        assert [r.modality for r in catalog.query(modality="ct")] == ["CT"]
        assert [r.body_part for r in catalog.query(body_part="Brain")] == ["BRAIN"]
        assert len(catalog.query(dataset="phantoms")) == 4 and catalog.query(dataset="other") == []
        assert [r.description for r in catalog.query(text="PHANTOM AX")] == ["head phantom axial"]
        assert [r.format for r in catalog.query(text="picture.png")] == ["png"]
        assert len(catalog.query(text="phantoms")) == 4  # the dataset name
        assert catalog.query(text="100%_") == []  # wildcards are literal
        assert len(catalog.query(limit=3)) == 3
        assert catalog.query(modality="CT", body_part="BRAIN") == []
        with pytest.raises(MedfmError, match="no image with id 9999"):
            catalog.get(9999)
        with pytest.raises(MedfmError, match="limit must be a positive"):
            catalog.query(limit=0)


def interrupt_after(monkeypatch: pytest.MonkeyPatch, files: int) -> None:
    """Make the ingest die (as on Ctrl-C) when it reaches its ``files``-th file hash."""
    real = ingestion.sha256_of
    calls = {"n": 0}

    def hashing(path: Path) -> str:
        calls["n"] += 1
        if calls["n"] > files:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(ingestion, "sha256_of", hashing)
    monkeypatch.setattr(ingestion, "BATCH_IMAGES", 2)


def check_resume_after_interrupt(url: str | None, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest interrupted mid-run keeps its committed batches; the next run adds the rest once."""
    for n in range(8):
        medfm.save(Image(np.full((6, 5), n, dtype=np.uint8)), tree / "more" / f"extra_{n}.png")
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        interrupt_after(patch, files=7)
        ingest(tree, url, progress=False)
    with open_catalog(url) as catalog:
        partial = len(catalog.query())
    assert 0 < partial < 12

    report = ingest(tree, url, progress=False)
    assert report.added == 12 - partial and report.updated == 0
    with open_catalog(url) as catalog:
        records = catalog.query()
        assert len(records) == 12 and sum(r.num_files for r in records) == 20
        assert len({r.source_path for r in records if r.format != "dicom"}) == 10
        assert len({r.series_uid for r in records if r.format == "dicom"}) == 2


# ---- SQLite ---------------------------------------------------------------------------------


def test_ingest_records_images_metadata_and_bad_files(tree: Path, data_folder: Path) -> None:
    check_first_ingest(None, tree)
    assert (data_folder / "catalog.db").is_file()  # the default catalog


def test_reingest_adds_nothing(tree: Path) -> None:
    check_first_ingest(None, tree)
    check_reingest_adds_nothing(None, tree)


def test_progress_function_hears_every_file(tree: Path) -> None:
    calls: list[tuple[int, int]] = []
    report = ingest(tree, progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert done == sorted(done) and len({t for _, t in calls}) == 1
    # each file that looks like an image is counted once, done: the 10 DICOM files, the NIfTI,
    # the PNG and the 4 broken ones that are found bad only when read
    assert calls[-1][0] == calls[-1][1] == 16 and report.added == 4


def test_count_matches_the_listing(tree: Path) -> None:
    with open_catalog() as catalog:
        assert catalog.count() == 0
        ingest(tree, catalog, progress=False)
        assert catalog.count() == len(catalog.query()) == 4


def test_queries_and_filters(tree: Path) -> None:
    check_first_ingest(None, tree)
    check_queries(None)


def test_interrupted_ingest_resumes_without_duplicates(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_resume_after_interrupt(None, tree, monkeypatch)


def test_patient_key_is_stable_per_catalog_and_differs_between_catalogs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with open_catalog(url) as first:
        key = first.patient_key(PATIENT_ID)
    with open_catalog(url) as again, open_catalog(str(tmp_path / "b.db")) as other:
        assert again.patient_key(PATIENT_ID) == key
        assert other.patient_key(PATIENT_ID) != key
        assert again.patient_key("") is None


def test_changed_file_replaces_its_image(tree: Path) -> None:
    ingest(tree, dataset="phantoms", progress=False)
    picture = tree / "photos" / "picture.png"
    with open_catalog() as catalog:
        (before,) = catalog.query(text="picture.png")
    medfm.save(Image(np.zeros((30, 40), dtype=np.uint8)), picture)
    report = ingest(tree, progress=False)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 11)
    with open_catalog() as catalog:
        (after,) = catalog.query(text="picture.png")
        assert after.id == before.id and after.shape == (30, 40, 1, 1, 1)
        assert after.dataset == "phantoms"  # an ingest without --dataset does not take it out of its dataset
        assert catalog.get(after.id).files[0].sha256 == hashlib.sha256(picture.read_bytes()).hexdigest()
        assert len(catalog.query()) == 4


def test_new_files_of_a_catalogued_series_update_it(tmp_path: Path) -> None:
    files = write_dicom_series(phantom((16, 16, 6)), tmp_path / "series", patient_id=PATIENT_ID)
    holding = tmp_path / "later"
    holding.mkdir()
    for path in files[4:]:
        path.rename(holding / path.name)
    assert ingest(tmp_path / "series", progress=False).added == 1
    for path in files[4:]:
        (holding / path.name).rename(path)
    report = ingest(tmp_path / "series", progress=False)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 4)
    with open_catalog() as catalog:
        (record,) = catalog.query()
        assert record.num_files == 6 and record.shape[2] == 6


def test_killed_ingest_process_resumes(tmp_path: Path) -> None:
    """SIGKILL mid-run (no clean-up at all) leaves a catalog the next run completes."""
    tree = tmp_path / "many"
    total = 120
    for n in range(total):
        medfm.save(Image(np.full((8, 8), n % 256, dtype=np.uint8)), tree / f"{n // 40}" / f"image_{n:03d}.png")
    db = tmp_path / "killed.db"
    url = f"sqlite:///{db}"
    script = (
        "import sys, time\n"
        "import medfm.catalog.ingestion as m\n"
        "real = m.sha256_of\n"
        "m.sha256_of = lambda p: (time.sleep(0.02), real(p))[1]\n"
        "m.BATCH_IMAGES = 4\n"
        "m.ingest(sys.argv[1], sys.argv[2], progress=False)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(tree), url], env=os.environ.copy())
    deadline = time.monotonic() + 60
    catalogued = 0
    try:
        while time.monotonic() < deadline and catalogued < 20:
            time.sleep(0.05)
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as connection:
                        catalogued = connection.execute("SELECT count(*) FROM images").fetchone()[0]
                except sqlite3.OperationalError:  # tables not created yet
                    pass
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    with open_catalog(url) as catalog:
        partial = len(catalog.query())
    assert process.returncode == -signal.SIGKILL
    assert 0 < partial < total

    report = ingest(tree, url, progress=False)
    assert report.added == total - partial and report.unchanged == partial and not report.bad
    with open_catalog(url) as catalog:
        records = catalog.query()
        assert len(records) == total and len({r.source_path for r in records}) == total


# ---- the command line -----------------------------------------------------------------------


def test_cli_ingest_lists_bad_files_and_exits_1(tree: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["ingest", str(tree), "--dataset", "phantoms", "--no-progress"], capsys)
    assert code == 1
    assert "4 images added" in out and "1 skipped" in out and "5 bad" in out
    assert len(err.strip().splitlines()) == 5 and "corrupt.dcm: not a DICOM file" in err and "corrupt.png" in err
    assert PATIENT_NAME not in out + err and PATIENT_ID not in out + err

    code, out, err = run_cli(["ingest", str(tree / "nifti"), "--no-progress"], capsys)
    assert code == 0 and "0 images added" in out and "1 unchanged" in out


def test_cli_ingest_missing_path_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["ingest", str(tmp_path / "nowhere"), "--catalog", str(tmp_path / "new.db")], capsys)
    assert code == 2
    assert err.strip() == f"medfm: error: {tmp_path / 'nowhere'}: no such file or folder"
    assert not (tmp_path / "new.db").exists()


def test_cli_catalog_list_query_show(tree: Path, capsys: pytest.CaptureFixture) -> None:
    run_cli(["ingest", str(tree), "--dataset", "phantoms", "--no-progress"], capsys)

    code, out_list, _ = run_cli(["catalog", "list"], capsys)
    assert code == 0 and len(out_list.strip().splitlines()) == 4
    assert "head phantom axial" in out_list and PATIENT_NAME not in out_list

    code, out, _ = run_cli(["catalog", "list", "--json", "--limit", "2"], capsys)
    records = json.loads(out)
    assert code == 0 and isinstance(records, list) and len(records) == 2
    assert {"id", "modality", "body_part", "shape", "spacing", "orientation", "dataset", "patient_key",
            "study_uid", "series_uid", "source_path", "num_files", "metadata"} <= set(records[0])
    assert "phi" not in records[0]
    assert [Path(f["path"]).name for f in records[0]["files"]] == [Path(records[0]["source_path"]).name]  # the NIfTI
    ct_files = sorted(p.name for p in (tree / "dicom" / "ct").iterdir())
    (ct_line,) = [line for line in out_list.splitlines() if "head phantom axial" in line]
    assert f"6 files: {ct_files[0]}, {ct_files[1]} ... {ct_files[-1]}" in ct_line

    code, out, _ = run_cli(["catalog", "query", "--modality", "mr", "--json"], capsys)
    (mr,) = json.loads(out)
    assert mr["body_part"] == "BRAIN" and mr["shape"] == [16, 16, 4, 1, 1]
    code, out, _ = run_cli(["catalog", "query", "--body-part", "head", "--dataset", "phantoms", "--text", "axial"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 1 and "CT" in out

    code, out, _ = run_cli(["catalog", "show", str(mr["id"]), "--json"], capsys)
    shown = json.loads(out)
    assert isinstance(shown, dict) and shown["id"] == mr["id"] and len(shown["files"]) == 4
    assert "phi" not in shown and PATIENT_NAME not in out and PATIENT_ID not in out
    code, out, _ = run_cli(["catalog", "show", str(mr["id"])], capsys)
    assert code == 0 and "brain T1" in out and PATIENT_NAME not in out

    code, out, _ = run_cli(["catalog", "show", str(mr["id"]), "--json", "--show-phi"], capsys)
    assert json.loads(out)["phi"]["patient_name"] == PATIENT_NAME
    code, out, _ = run_cli(["catalog", "show", str(mr["id"]), "--show-phi"], capsys)
    assert PATIENT_NAME in out and "[PHI]" in out
    code, out, _ = run_cli(["catalog", "query", "--modality", "CT", "--json", "--show-phi"], capsys)
    assert json.loads(out)[0]["phi"]["patient_id"] == PATIENT_ID

    code, _, err = run_cli(["catalog", "show", "9999"], capsys)
    assert code == 2 and "no image with id 9999" in err and "Traceback" not in err
    code, _, err = run_cli(["catalog", "list", "--limit", "0"], capsys)
    assert code == 2 and "limit must be a positive" in err


def test_cli_catalog_option_and_env_choose_the_catalog(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.db"
    run_cli(["ingest", str(tree / "nifti"), "--catalog", f"sqlite:///{other}", "--no-progress"], capsys)
    code, out, _ = run_cli(["catalog", "list", "--json", "--catalog", str(other)], capsys)
    assert len(json.loads(out)) == 1
    monkeypatch.setenv("MEDFM_CATALOG", f"sqlite:///{other}")
    code, out, _ = run_cli(["catalog", "list", "--json"], capsys)
    assert len(json.loads(out)) == 1
    monkeypatch.delenv("MEDFM_CATALOG")
    code, out, _ = run_cli(["catalog", "list", "--json"], capsys)
    assert json.loads(out) == []


def test_a_file_that_is_no_catalog_is_a_one_line_error_and_left_as_it_was(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "text.png"
    text.write_text("hello\n")
    refused = f"medfm: error: cannot open catalog {text}: not an SQLite database (file is not a database)\n"
    for args in (["catalog", "list"], ["ingest", str(tree / "nifti"), "--no-progress"],
                 ["segment", "--where", "modality=CT", "-o", str(tmp_path / "out")]):
        code, out, err = run_cli([*args, "--catalog", str(text)], capsys)
        assert (code, out, err) == (2, "", refused)
    monkeypatch.setenv("MEDFM_CATALOG", str(text))
    code, out, err = run_cli(["catalog", "list"], capsys)
    assert (code, err) == (2, refused.replace(f"{text}:", f"{text} ($MEDFM_CATALOG):"))
    assert text.read_text() == "hello\n" and sorted(tmp_path.iterdir()) == [text, tree]


def test_reading_a_catalog_file_that_is_not_there_is_refused_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from medfm.tasks.batch import catalog_inputs
    from medfm.tasks.search import collect_items

    typo = tmp_path / "typo.db"
    refused = f"{typo}: no catalog there; medfm ingest creates one"
    for args in (["catalog", "list"], ["catalog", "query", "--modality", "CT"], ["catalog", "show", "1"],
                 ["catalog", "export", "-o", str(tmp_path / "out.csv")], ["catalog", "rename", "1", "x"],
                 ["segment", "--where", "modality=CT", "-o", str(tmp_path / "out")]):
        code, out, err = run_cli([*args, "--catalog", str(typo)], capsys)
        assert (code, out, err) == (2, "", f"medfm: error: {refused}\n")
    with pytest.raises(MedfmError, match=f"^{re.escape(refused)}$"):
        catalog_inputs(str(typo), {})
    with pytest.raises(MedfmError, match=f"^{re.escape(refused)}$"):
        collect_items([f"sqlite:///{typo}"])
    monkeypatch.setenv("MEDFM_CATALOG", str(typo))
    code, out, err = run_cli(["catalog", "list"], capsys)
    assert (code, err) == (2, f"medfm: error: {typo} ($MEDFM_CATALOG): no catalog there; medfm ingest creates one\n")
    assert list(tmp_path.iterdir()) == []


# ---- paths, URLs and schema -----------------------------------------------------------------


def test_data_dir_and_default_catalog_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_dir() == tmp_path / "medfm-data"
    assert default_catalog_url() == f"sqlite:///{tmp_path / 'medfm-data' / 'catalog.db'}"
    monkeypatch.setenv("MEDFM_CATALOG", "postgresql://me@db.example/medfm")
    assert default_catalog_url() == "postgresql://me@db.example/medfm"
    monkeypatch.delenv("MEDFM_DATA_DIR")
    assert data_dir().name == "medfm"


def test_catalog_urls_are_normalised() -> None:
    assert normalize_url("postgresql://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:////x/catalog.db") == "sqlite:////x/catalog.db"
    assert normalize_url("relative.db") == f"sqlite:///{Path('relative.db').resolve()}"


def test_bad_catalog_urls_and_versions_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MedfmError, match="cannot use catalog URL nosuchdb://"):
        open_catalog("nosuchdb://host/x")
    with pytest.raises(MedfmError, match=r"cannot open catalog postgresql\+psycopg://me:\*\*\*@127.0.0.1:9/x"):
        open_catalog("postgresql://me:secret@127.0.0.1:9/x")
    db = tmp_path / "old.db"
    open_catalog(str(db)).close()
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(MedfmError, match=f"schema version 0; this medfm reads version {SCHEMA_VERSION}"):
        open_catalog(str(db))
