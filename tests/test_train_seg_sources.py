"""Where ``medfm train seg`` reads its labels: several masks per image (fused), a catalog query, and the
annotation versions the workbench saves."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from clitools import run_cli
from segdata import write_spheres
from medfm.catalog import ingest
from medfm.errors import MedfmError
from medfm.io.formats import load
from medfm.provenance import Provenance
from medfm.server.annotations import AnnotationStore
from medfm.train.seg import collect_cases, train_segmenter
from medfm.train.seg_data import load_pair, read_cases

TINY = {"batch_size": "2", "patch_size": "[16, 16, 16]"}


@pytest.fixture(scope="module")
def raters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spheres(tmp_path_factory.mktemp("raters"), count=4, size=16, raters=3)


@pytest.fixture(scope="module")
def catalog(raters: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("catalog") / "catalog.db")
    ingest([], url, dataset="spheres", manifest=raters, progress=False)
    return url


def rater_mask(raters: Path, n: int) -> np.ndarray:
    return np.asarray(nib.load(raters.parent / "masks" / f"case{n:02d}.nii.gz").dataobj)


@pytest.mark.parametrize("method", ["staple", "majority"])
def test_several_mask_columns_are_fused_to_what_most_raters_drew(raters, method):
    case = read_cases(raters)[0]
    assert len(case.masks) == 3
    fused = load_pair(case, None, method).mask
    truth = rater_mask(raters, 0)  # rater 2 left out half the sphere; raters 1 and 3 agree
    assert np.array_equal(fused > 0, truth > 0) and (truth[:, :, :8] > 0).any()


def test_repeated_rows_of_an_image_are_its_several_masks(raters, tmp_path):
    folder = raters.parent
    rows = ["image,mask"] + [f"{folder}/images/case{n:02d}.nii.gz,{folder}/masks/{name}"
                             for n in range(4) for name in (f"case{n:02d}.nii.gz", f"case{n:02d}_r2.nii.gz")]
    (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n")
    by_rows, by_columns = read_cases(tmp_path / "rows.csv"), read_cases(raters)
    assert [c.masks for c in by_rows] == [c.masks[:2] for c in by_columns]


def test_the_plan_records_the_fusion(raters, tmp_path, capsys):
    code, stdout, stderr = run_cli(["train", "seg", str(raters), "-o", str(tmp_path / "model"), "--fuse", "majority",
                                    "--max-steps", "1", *[f"--plan={k}={v}" for k, v in TINY.items()]], capsys)
    assert code == 0, stderr
    assert json.loads((tmp_path / "model" / "plan.json").read_text())["label_fusion"] == "majority"
    assert json.loads((tmp_path / "model" / "fingerprint.json").read_text())["masks_per_image"] == {"max": 3, "min": 3}
    code, _, stderr = run_cli(["train", "seg", str(raters), "-o", str(tmp_path / "other"), "--fuse", "mean"], capsys)
    assert code == 2 and "--fuse must be one of staple, majority; got 'mean'" in stderr


def test_a_catalog_query_trains_on_its_images_with_masks(catalog, raters, tmp_path):
    cases = collect_cases(None, catalog=catalog, where={"dataset": "spheres"})
    assert len(cases) == 4 and all(len(case.masks) == 3 for case in cases)
    assert np.array_equal(load_pair(cases[0], None).mask > 0, rater_mask(raters, 0) > 0)
    summary = train_segmenter(None, tmp_path / "model", catalog=catalog, where={"dataset": "spheres"}, max_steps=1,
                              plan_overrides=TINY)
    assert summary["train_images"] + summary["val_images"] == 4
    with pytest.raises(MedfmError, match="the catalog has no image with a mask matching dataset=none"):
        collect_cases(None, catalog=catalog, where={"dataset": "none"})


def test_auto_segment_takes_a_catalog_query(catalog, tmp_path, capsys):
    train_segmenter(None, tmp_path / "model", catalog=catalog, where={"dataset": "spheres"}, max_steps=1,
                    plan_overrides=TINY)
    code, stdout, stderr = run_cli(["segment", "--auto", "--model", str(tmp_path / "model"), "--catalog", catalog,
                                    "--where", "dataset=spheres", "-o", str(tmp_path / "seg"), "--json"], capsys)
    assert code == 0, stderr
    outputs = sorted(Path(r["output"]).name for r in json.loads(stdout)["results"])
    assert len(outputs) == 4 and all(name.startswith("case") and name.endswith(".nii.gz") for name in outputs)
    assert load(tmp_path / "seg" / outputs[0]).shape == (16, 16, 16, 1, 1)


def test_saved_annotation_versions_train_with_their_newest_final_else_newest_version(catalog, raters, tmp_path):
    from medfm.catalog import open_catalog

    store = AnnotationStore(tmp_path / "annotations")
    made = Provenance(kind="segmentation", model="workbench", weights_sha256=None, inputs=("x",))
    with open_catalog(catalog) as opened:
        records = opened.query(dataset="spheres")
    for n, record in enumerate(records):
        image = load(record.source_path)
        mask = np.asarray(nib.load(raters.parent / "masks" / f"case{n:02d}.nii.gz").dataobj)
        for version in (np.zeros_like(mask), mask):  # a first empty save, then the real one
            labels = image.with_array(version.astype(np.uint8))
            labels.provenance = made
            store.save(record.id, "sphere", labels, "nifti", {"image_id": record.id})
    cases = collect_cases(tmp_path / "annotations", catalog=catalog)
    assert [Path(c.masks[0]).name for c in cases] == ["v0002.nii.gz"] * 4
    assert np.array_equal(load_pair(cases[1], None).mask, rater_mask(raters, 1))
    store.set_status(records[0].id, "sphere", 1, "final")  # a version marked final wins over newer drafts
    assert Path(collect_cases(tmp_path / "annotations", catalog=catalog)[0].masks[0]).name == "v0001.nii.gz"
    store.set_status(records[0].id, "sphere", 1, "draft")
    summary = train_segmenter(tmp_path / "annotations", tmp_path / "model", catalog=catalog, max_steps=1,
                              plan_overrides=TINY)
    assert summary["train_images"] + summary["val_images"] == 4


def test_an_annotation_of_an_image_not_in_the_catalog_is_named(catalog, tmp_path):
    folder = tmp_path / "annotations" / "999" / "sphere"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), folder / "v0001.nii.gz")
    (folder / "v0001.json").write_text(json.dumps({"format": "nifti", "voxels": {}}))
    with pytest.raises(MedfmError, match=r"v0001\.nii\.gz: annotates image 999, which the catalog does not hold"):
        collect_cases(tmp_path / "annotations", catalog=catalog)


def test_mask_columns_of_numbers_are_not_masks(raters, tmp_path):
    folder = raters.parent
    (tmp_path / "m.csv").write_text("image,mask,mask_area_px\n" + "".join(
        f"{folder}/images/case{n:02d}.nii.gz,{folder}/masks/case{n:02d}.nii.gz,{100 + n}\n" for n in range(4)))
    assert [len(case.masks) for case in read_cases(tmp_path / "m.csv")] == [1, 1, 1, 1]


def test_a_dicom_seg_annotation_version_is_read_on_its_series(tmp_path):
    from segdata import sphere_volume

    from medfm.catalog import open_catalog
    from medfm.catalog.loading import load_record, record_series
    from medfm.io.synthetic import write_dicom_series

    volume, _ = sphere_volume(np.random.default_rng(5), 16)
    write_dicom_series(volume, tmp_path / "series", spacing=(1.5, 1.5, 1.5))
    url = str(tmp_path / "catalog.db")
    ingest([tmp_path / "series"], url, progress=False)
    with open_catalog(url) as store:
        record = store.query(with_files=True)[0]
    image = load_record(record)
    drawn = np.zeros(image.spatial_shape, np.uint8)
    drawn[4:10, 5:11, 3:9] = 1
    labels = image.with_array(drawn)
    labels.provenance = Provenance(kind="segmentation", model="workbench", weights_sha256=None, inputs=("x",))
    AnnotationStore(tmp_path / "annotations").save(record.id, "sphere", labels, "dicom-seg", {"image_id": record.id},
                                                   record_series(record))
    case = collect_cases(tmp_path / "annotations", catalog=url)[0]
    assert Path(case.masks[0]).name == "v0001.dcm"
    assert np.array_equal(load_pair(case, None).mask, drawn)
