"""Datasets with their labels: masks attached to their image, manifest columns as tags, export back."""

from __future__ import annotations

import csv
import errno
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli

import medfm
from medfm.catalog import ingest, open_catalog
from medfm.catalog.export import export_manifest
from medfm.catalog.schema import SCHEMA_VERSION
from medfm.errors import MedfmError
from medfm.eval.protocols.interactive import read_manifest as read_interactive_manifest
from medfm.io.image import Image
from medfm.io.label_maps import read_mask
from medfm.io.manifest import read_manifest
from medfm.io.synthetic import phantom
from medfm.paths import shared_data_dir

DIAGNOSES = ["melanoma", "common_nevus", "melanoma", "atypical_nevus"]
SHARED_PH2 = shared_data_dir() / "ph2_dermoscopy"


@pytest.fixture(autouse=True)
def data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFM_DATA_DIR", str(tmp_path / "medfm-data"))
    monkeypatch.delenv("MEDFM_CATALOG", raising=False)


def save_png(array: np.ndarray, path: Path) -> Path:
    return medfm.save(Image(array.astype(np.uint8)), path)


def case_image(i: int) -> np.ndarray:
    return (np.arange(24 * 20).reshape(24, 20) * (i + 1) % 251).astype(np.uint8)


def case_mask(i: int) -> np.ndarray:
    mask = np.zeros((24, 20), np.uint8)
    mask[4 : 10 + i, 3:12] = 255
    return mask


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def manifest_dataset(root: Path) -> Path:
    """Four dermoscopy-like cases: images/, masks/ named ``_lesion``, an extra ROI mask column, a manifest."""
    rows = []
    for i, diagnosis in enumerate(DIAGNOSES):
        save_png(case_image(i), root / "images" / f"IMD{i:03}.png")
        save_png(case_mask(i), root / "masks" / f"IMD{i:03}_lesion.png")
        roi = ""
        if i == 0:
            save_png(case_mask(0), root / "roi" / "IMD000_R1.png")
            save_png(case_mask(1), root / "roi" / "IMD000_R2.png")
            roi = "roi/IMD000_R1.png;roi/IMD000_R2.png"
        rows.append({"image": f"images/IMD{i:03}.png", "mask": f"masks/IMD{i:03}_lesion.png", "diagnosis": diagnosis,
                     "subject": f"S{i // 2}", "split": "dev", "roi_masks": roi, "patient_id": f"PID-{i}"})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_a_manifest_attaches_masks_and_makes_its_columns_searchable(tmp_path: Path) -> None:
    root = manifest_dataset(tmp_path / "derm")
    db = str(tmp_path / "c.db")
    report = ingest(root, db, progress=False)
    assert (report.added, report.bad, report.labelled, report.label_files) == (4, [], 4, 6)
    with open_catalog(db) as catalog:
        records = catalog.query(with_files=True)
        assert catalog.count() == 4  # not 4 images + 4 masks + 2 ROI masks
        assert sorted(Path(r.source_path).name for r in records) == [f"IMD{i:03}.png" for i in range(4)]
        for record in records:
            number = int(Path(record.source_path).stem[3:])
            assert Path(record.mask.path) == (root / "masks" / f"IMD{number:03}_lesion.png").resolve()
            assert record.tags == {"diagnosis": DIAGNOSES[number], "subject": f"S{number // 2}", "split": "dev"}
        first = next(r for r in records if r.source_path.endswith("IMD000.png"))
        assert [f.name for f in first.label_files] == ["mask", "roi_masks", "roi_masks"]
        melanoma = catalog.query(where={"diagnosis": "Melanoma"})
        assert sorted(Path(r.source_path).name for r in melanoma) == ["IMD000.png", "IMD002.png"]
        assert [Path(r.source_path).name for r in catalog.query(where={"diagnosis": "melanoma", "subject": "S1"})] == ["IMD002.png"]
        assert catalog.query(where={"diagnosis": "melan"}) == []  # whole values, not substrings
        assert "PID-" not in str([r.to_dict() for r in records])  # a patient column is not catalogued


def test_re_ingest_removes_masks_an_older_ingest_made_images_of(tmp_path: Path) -> None:
    root = manifest_dataset(tmp_path / "derm")
    db = str(tmp_path / "c.db")
    (root / "manifest.csv").rename(tmp_path / "manifest.csv")
    assert ingest(root, db, progress=False).added == 10 - 4  # images/ + masks/ layout: the ROI masks stay images
    (tmp_path / "manifest.csv").rename(root / "manifest.csv")
    report = ingest(root, db, progress=False)
    assert (report.added, report.removed, report.unchanged) == (0, 2, 4)
    with open_catalog(db) as catalog:
        assert catalog.count() == 4
        assert all(r.mask for r in catalog.query())
    again = ingest(root, db, progress=False)
    assert (again.added, again.updated, again.removed, again.labelled) == (0, 0, 0, 4)


def test_images_and_masks_folders_pair_by_name(tmp_path: Path) -> None:
    root = tmp_path / "polyps"
    for name in ("a1", "a10", "b"):
        save_png(case_image(1), root / "images" / f"{name}.png")
    save_png(case_mask(0), root / "masks" / "a1.png")
    save_png(case_mask(1), root / "masks" / "a10_mask.png")
    save_png(case_mask(2), root / "masks" / "orphan.png")
    db = str(tmp_path / "c.db")
    report = ingest(root, db, progress=False)
    assert (report.added, report.label_files, report.unmatched_labels) == (3, 2, 1)
    with open_catalog(db) as catalog:
        masks = {Path(r.source_path).name: r.mask and Path(r.mask.path).name for r in catalog.query()}
    assert masks == {"a1.png": "a1.png", "a10.png": "a10_mask.png", "b.png": None}


def test_msd_and_nnunet_layouts_attach_labels(tmp_path: Path) -> None:
    msd = tmp_path / "Task02_Heart"
    for case in ("la_003", "la_004"):
        medfm.save(Image(phantom((12, 10, 5))), msd / "imagesTr" / f"{case}.nii.gz")
        medfm.save(Image((phantom((12, 10, 5)) > 0.5).astype(np.uint8)), msd / "labelsTr" / f"{case}.nii.gz")
    medfm.save(Image(phantom((12, 10, 5))), msd / "imagesTs" / "la_001.nii.gz")
    nnunet = tmp_path / "Dataset001"
    for channel in ("0000", "0001"):
        medfm.save(Image(phantom((12, 10, 5))), nnunet / "imagesTr" / f"case_7_{channel}.nii.gz")
    medfm.save(Image((phantom((12, 10, 5)) > 0.5).astype(np.uint8)), nnunet / "labelsTr" / "case_7.nii.gz")
    db = str(tmp_path / "c.db")
    report = ingest([msd, nnunet], db, progress=False)
    assert (report.added, report.label_files) == (5, 4)
    with open_catalog(db) as catalog:
        masks = {Path(r.source_path).name: r.mask and Path(r.mask.path).name for r in catalog.query()}
    assert masks == {"la_003.nii.gz": "la_003.nii.gz", "la_004.nii.gz": "la_004.nii.gz", "la_001.nii.gz": None,
                     "case_7_0000.nii.gz": "case_7.nii.gz", "case_7_0001.nii.gz": "case_7.nii.gz"}


def test_export_writes_a_manifest_the_readers_accept(tmp_path: Path) -> None:
    root = manifest_dataset(tmp_path / "derm")
    db = str(tmp_path / "c.db")
    ingest(root, db, dataset="derm", progress=False)
    with open_catalog(db) as catalog:
        records = catalog.query(with_files=True, where={"diagnosis": "melanoma"})
    out = tmp_path / "exports" / "melanoma.csv"
    out.parent.mkdir()
    assert export_manifest(records, out) == 2
    images, masks = read_manifest(out, "mask", "image")
    assert images == [str((root / "images" / f"IMD{i:03}.png").resolve()) for i in (0, 2)]
    masks = [(out.parent / mask).resolve() for mask in masks]  # label cells are relative, as robustness reads them
    assert masks == [(root / "masks" / f"IMD{i:03}_lesion.png").resolve() for i in (0, 2)]
    assert read_mask(masks[1]).sum() == case_mask(2).astype(bool).sum()
    _paths, diagnoses = read_manifest(out, "diagnosis", "image")
    assert diagnoses == ["melanoma", "melanoma"]
    rows = read_csv(out)
    assert list(rows[0])[:3] == ["image", "mask", "dataset"] and rows[0]["image"].startswith("../derm/")
    assert rows[0]["roi_masks"] == "../derm/roi/IMD000_R1.png;../derm/roi/IMD000_R2.png"
    assert [row["dataset"] for row in read_interactive_manifest(out)] == ["derm", "derm"]
    absolute = tmp_path / "absolute.csv"
    export_manifest(records, absolute, absolute=True)
    assert read_csv(absolute)[0]["image"] == images[0]
    with pytest.raises(MedfmError, match="no catalog image matches"):
        export_manifest([], tmp_path / "none.csv")
    assert not (tmp_path / "none.csv").exists()


def test_export_into_a_read_only_folder_names_the_output_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = manifest_dataset(tmp_path / "derm")
    db = str(tmp_path / "c.db")
    ingest(root, db, dataset="derm", progress=False)
    with open_catalog(db) as catalog:
        records = catalog.query(with_files=True)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(MedfmError) as caught:
        export_manifest(records, Path("derm/kv.csv"))
    assert str(caught.value) == "derm/kv.csv: cannot write: Read-only file system"


def test_cli_ingest_query_show_and_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = manifest_dataset(tmp_path / "derm")
    (root / "manifest.csv").rename(tmp_path / "cases.csv")
    (root / "masks" / "IMD003_lesion.png").unlink()  # a manifest row naming a missing mask: reported
    db = str(tmp_path / "c.db")
    code, out, err = run_cli(["ingest", "--manifest", str(tmp_path / "cases.csv"), "--catalog", db, "--no-progress"], capsys)
    # the manifest is outside the folder: its paths are relative to it, so this one names nothing
    assert code == 2 and "cases.csv: none of its 4 images exists" in err
    (tmp_path / "cases.csv").rename(root / "cases.csv")
    code, out, err = run_cli(["ingest", "--manifest", str(root / "cases.csv"), "--catalog", db, "--no-progress"], capsys)
    assert code == 1 and "4 images added" in out and "4 images labelled" in out
    assert "line 5: mask 'masks/IMD003_lesion.png' is not a file" in err
    code, out, _ = run_cli(["catalog", "query", "--where", "diagnosis=melanoma", "--catalog", db], capsys)
    assert code == 0 and len(out.splitlines()) == 2 and "mask: " in out
    code, _, err = run_cli(["catalog", "query", "--where", "diagnosis", "--catalog", db], capsys)
    assert code == 2 and "--where takes KEY=VALUE" in err
    code, out, _ = run_cli(["catalog", "show", "1", "--catalog", db], capsys)
    assert code == 0 and "IMD000_lesion.png  (mask)" in out and "tag   diagnosis: melanoma" in out
    target = tmp_path / "new" / "labelled.csv"
    code, _, err = run_cli(["catalog", "export", "--has-mask", "-o", str(target), "--catalog", db], capsys)
    assert code == 2 and "new" in err and not target.parent.exists()  # a missing folder needs --mkdir
    code, out, _ = run_cli(["catalog", "export", "--has-mask", "-o", str(target), "--catalog", db, "--mkdir"], capsys)
    assert code == 0 and "3 images" in out
    assert len(read_manifest(target, "mask", "image")[0]) == 3


def test_a_refused_manifest_leaves_no_catalog_behind(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text("path,mask\nimages/IMD001.png,\n")
    code, out, err = run_cli(["ingest", "--manifest", str(manifest), "--catalog", str(tmp_path / "c3.db"), "--no-progress"], capsys)
    assert (code, out) == (2, "")
    assert err == f"medfm: error: {manifest}: a manifest needs an 'image' column; the columns are path, mask\n"
    assert list(tmp_path.iterdir()) == [manifest]


def test_an_old_catalog_is_migrated_and_a_newer_one_refused(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    save_png(case_image(0), tmp_path / "data" / "a.png")
    ingest(tmp_path / "data", str(db), progress=False)
    with sqlite3.connect(db) as connection:  # what a version-1 catalog is: no label tables
        connection.execute("DROP TABLE label_files")
        connection.execute("DROP TABLE tags")
        connection.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with open_catalog(str(db)) as catalog:
        assert [r.label_files for r in catalog.query()] == [()]
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (SCHEMA_VERSION,)
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(MedfmError, match=f"schema version 99; this medfm reads version {SCHEMA_VERSION}"):
        open_catalog(str(db))


@pytest.mark.skipif(not (SHARED_PH2 / "manifest.csv").is_file(), reason=f"shared dataset not present: {SHARED_PH2}")
def test_ph2_from_shared_data_is_159_images_with_their_masks(tmp_path: Path) -> None:
    db = str(tmp_path / "ph2.db")
    report = ingest(SHARED_PH2, db, progress=False)
    assert (report.added, report.bad) == (159, [])
    with open_catalog(db) as catalog:
        records = catalog.query()
        assert len(records) == 159 and all(r.mask for r in records)
        assert len(catalog.query(where={"clinical_diagnosis_name": "melanoma"})) == 30
