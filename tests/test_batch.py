"""Batch modes: ``medfm segment``, ``classify`` and ``info`` over many inputs in one process.

A bad file in the middle is reported (one line naming it) and the others still get their
outputs; the exit code says that something failed; outputs are named after their inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from fakesegmenter import fake_segmenter  # noqa: F401  (the fixture)
from PIL import Image as PILImage

from medfm.errors import MedfmError
from medfm.tasks.batch import (
    BatchInput,
    expand_paths,
    output_paths,
    read_batch_manifest,
)

FAKE = ["--model", "fake-threshold"]


def _picture(path: Path, rows: slice, cols: slice) -> Path:
    pixels = np.zeros((60, 80), np.uint8)  # (rows, columns)
    pixels[rows, cols] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(pixels).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """a.png and c.png (a bright rectangle each) with b.png, not an image, between them."""
    images = tmp_path / "images"
    _picture(images / "a.png", slice(20, 40), slice(10, 50))
    (images / "b.png").write_bytes(b"not a picture")
    _picture(images / "c.png", slice(5, 15), slice(5, 25))
    (images / "notes.txt").write_text("not an image: ignored")
    return images


@pytest.mark.usefixtures("fake_segmenter")
def test_segment_folder_with_a_bad_file_in_the_middle(folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "masks"
    code, stdout, err = run_cli(["segment", str(folder), "--box", "0,0,79,59", "-o", str(out), *FAKE,
                                 "--summary", str(tmp_path / "summary.json")], capsys)
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert np.asarray(PILImage.open(out / "a.png")).astype(bool).sum() == 20 * 40
    assert np.asarray(PILImage.open(out / "c.png")).astype(bool).sum() == 10 * 20
    failed = [line for line in err.splitlines() if line.startswith("medfm: failed:")]
    assert len(failed) == 1 and str(folder / "b.png") in failed[0]
    assert "medfm: error: 1 of 3 inputs failed" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["inputs"], summary["succeeded"], summary["failed"]) == (3, 2, 1)
    assert [r["input"] for r in summary["results"]] == [str(folder / "a.png"), str(folder / "c.png")]
    assert summary["failures"][0]["input"] == str(folder / "b.png")
    assert "a.png: label 1: 800 voxels" in stdout


@pytest.mark.usefixtures("fake_segmenter")
def test_segment_manifest_gives_each_image_its_own_prompt(folder: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "m.csv").write_text("image,box\nimages/a.png,\"10,20,29,39\"\nimages/c.png,\"5,5,14,14\"\n")
    code, stdout, err = run_cli(["segment", "--manifest", str(tmp_path / "m.csv"), "-o", str(tmp_path / "out"),
                                 "--suffix", ".nii.gz", *FAKE, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert [s["structures"][0]["voxels"] for s in summary["results"]] == [20 * 20, 10 * 10]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "c.nii.gz"]


@pytest.mark.usefixtures("fake_segmenter")
def test_segment_jsonl_manifest_points_and_boxes_as_lists(folder: Path, tmp_path: Path, capsys) -> None:
    rows = [{"image": "images/a.png", "points": ["30,30:pos"]}, {"image": "images/c.png", "box": [5, 5, 14, 14]}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, stdout, err = run_cli(["segment", "--manifest", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "out"), *FAKE, "--json"], capsys)
    assert code == 0, err
    results = json.loads(stdout)["results"]
    assert results[0]["provenance"]["prompts"][0]["points"] == [[30, 30]]
    assert results[1]["structures"][0]["voxels"] == 100


@pytest.mark.usefixtures("fake_segmenter")
def test_segment_catalog_query(folder: Path, tmp_path: Path, capsys) -> None:
    (folder / "b.png").unlink()
    catalog = str(tmp_path / "catalog.db")
    code, _, err = run_cli(["ingest", str(folder), "--catalog", catalog], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["segment", "--catalog", catalog, "--where", "text=c.png", "--box", "0,0,79,59",
                                 "-o", str(tmp_path / "out"), *FAKE, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["inputs"] == 1 and [p.name for p in (tmp_path / "out").iterdir()] == ["c-2.png"]  # name-id
    code, _, err = run_cli(["segment", "--catalog", catalog, "--where", "colour=red", "--box", "0,0,9,9", "-o", str(tmp_path / "o2"), *FAKE], capsys)
    assert code == 2 and "colour" in err and "modality" in err


@pytest.mark.usefixtures("fake_segmenter")
def test_segment_catalog_query_reads_each_series_from_its_own_files(tmp_path: Path, capsys) -> None:
    from medfm.io.synthetic import write_dicom_series

    volume = np.zeros((24, 20, 4), np.int16)
    volume[6:14, 5:12, :] = 300
    for number in (1, 2):  # two series, then in one folder
        for path in write_dicom_series(volume * number, tmp_path / f"series{number}", series_number=number):
            path.rename((tmp_path / "study").mkdir(exist_ok=True) or tmp_path / "study" / f"s{number}-{path.name}")
    catalog = str(tmp_path / "catalog.db")
    assert run_cli(["ingest", str(tmp_path / "study"), "--catalog", catalog, "--no-progress"], capsys)[0] == 0
    code, stdout, err = run_cli(["segment", "--catalog", catalog, "--where", "modality=CT", "--box", "5,6,11,13,1",
                                 "-o", str(tmp_path / "out"), *FAKE, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["inputs"] == 2 and not summary["failures"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["study-1.nii.gz", "study-2.nii.gz"]


def test_outputs_named_after_inputs_and_collisions_refused(tmp_path: Path) -> None:
    inputs = [BatchInput(Path("x/scan.nii.gz")), BatchInput(Path("x/photo.jpg")), BatchInput(Path("x/series_folder"))]
    assert [p.name for p in output_paths(inputs, tmp_path)] == ["scan.nii.gz", "photo.png", "series_folder.nii.gz"]
    assert [p.name for p in output_paths(inputs, tmp_path, ".nii")] == ["scan.nii", "photo.nii", "series_folder.nii"]
    with pytest.raises(MedfmError, match="would both be written to .*case.png"):
        output_paths([BatchInput(Path("a/case.png")), BatchInput(Path("b/case.png"))], tmp_path)


def test_a_folder_of_images_expands_a_dicom_folder_does_not(folder: Path, tmp_path: Path) -> None:
    assert [i.path.name for i in expand_paths([folder])] == ["a.png", "b.png", "c.png"]
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "1.dcm").write_bytes(b"x")
    assert expand_paths([tmp_path / "series"]) == [BatchInput(tmp_path / "series")]


def test_manifest_without_an_image_column_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,box\na.png,\"1,2,3,4\"\n")
    with pytest.raises(MedfmError, match=r"m.csv, line 2: no image"):
        read_batch_manifest(tmp_path / "m.csv")


@pytest.mark.usefixtures("fake_segmenter")
def test_segment_collision_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    a = _picture(tmp_path / "one" / "case.png", slice(0, 5), slice(0, 5))
    b = _picture(tmp_path / "two" / "case.png", slice(0, 5), slice(0, 5))
    code, _, err = run_cli(["segment", str(a), str(b), "--box", "0,0,9,9", "-o", str(tmp_path / "out"), *FAKE], capsys)
    assert code == 2 and "would both be written" in err and not (tmp_path / "out").exists()


def test_info_many_files_reports_the_bad_one_and_goes_on(folder: Path, tmp_path: Path, capsys) -> None:
    code, stdout, err = run_cli(["info", str(folder / "a.png"), str(folder), "--json"], capsys)
    assert code == 2
    summary = json.loads(stdout)
    assert (summary["inputs"], summary["succeeded"], summary["failed"]) == (4, 3, 1)
    assert [r["images"][0]["shape"][:2] for r in summary["results"]] == [[80, 60]] * 3
    assert err.count("medfm: failed:") == 1 and f"medfm: failed: {folder / 'b.png'}: " in err


@pytest.mark.usefixtures("fake_segmenter")
def test_segment_output_into_a_missing_folder_needs_mkdir(folder: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "no" / "such" / "out.png"
    args = ["segment", str(folder / "a.png"), "--box", "0,0,79,59", "-o", str(target), *FAKE]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.splitlines() == [
        f"medfm: error: {tmp_path / 'no' / 'such'}: folder does not exist; create it first or pass --mkdir"]
    assert not (tmp_path / "no").exists()
    code, _, err = run_cli([*args, "--mkdir"], capsys)
    assert code == 0, err
    assert target.exists()


@pytest.mark.usefixtures("fake_segmenter")
@pytest.mark.parametrize("command", [["info"], ["segment", "--box", "0,0,79,59", *FAKE]], ids=["info", "segment"])
def test_summary_into_a_missing_folder_is_refused_before_the_batch_unless_mkdir(command: list[str], folder: Path,
                                                                               tmp_path: Path, capsys) -> None:
    summary = tmp_path / "typo1" / "typo2" / "s.json"
    outputs = ["-o", str(tmp_path / "out")] if command[0] == "segment" else []
    args = [command[0], str(folder / "a.png"), str(folder / "c.png"), *command[1:], *outputs, "--summary", str(summary)]
    code, stdout, err = run_cli(args, capsys)
    assert (code, stdout) == (2, "") and err.splitlines() == [
        f"medfm: error: {summary.parent}: folder does not exist; create it first or pass --mkdir"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no label map, no folder
    code, _, err = run_cli([*args, "--mkdir"], capsys)
    assert code == 0, err
    assert json.loads(summary.read_text())["succeeded"] == 2


@pytest.mark.usefixtures("fake_segmenter")
def test_segment_batch_whose_every_input_fails_leaves_no_output_folder(folder: Path, tmp_path: Path, capsys) -> None:
    (folder / "d.png").write_bytes(b"not a picture either")
    code, _, err = run_cli(["segment", str(folder / "b.png"), str(folder / "d.png"), "--box", "0,0,9,9",
                            "-o", str(tmp_path / "newdir"), *FAKE], capsys)
    assert code == 2 and "2 of 2 inputs failed" in err
    assert not (tmp_path / "newdir").exists()


def _dicom_copies(folder: Path, count: int) -> list[Path]:
    """``count`` copies of pydicom's CT_small.dcm in ``folder``, each its own series."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number in range(1, count + 1):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SeriesNumber = generate_uid(), generate_uid(), number
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"ct{number}.dcm")
        written.append(folder / f"ct{number}.dcm")
    return written


@pytest.mark.usefixtures("fake_segmenter")
def test_dicom_files_beside_pictures_are_inputs_too(folder: Path, tmp_path: Path, capsys) -> None:
    _dicom_copies(folder, 1)
    (folder / "junk.dcm").write_bytes(b"not DICOM")
    assert [i.path.name for i in expand_paths([folder])] == ["a.png", "b.png", "c.png", "ct1.dcm", "junk.dcm"]
    code, _, err = run_cli(["segment", str(folder), "--box", "0,0,79,59", "-o", str(tmp_path / "out"), *FAKE], capsys)
    assert code == 2 and "2 of 5 inputs failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png", "ct1.nii.gz"]


def test_a_dicom_series_beside_pictures_is_one_input(folder: Path) -> None:
    from medfm.io import load
    from medfm.io.synthetic import write_dicom_series

    write_dicom_series(np.zeros((24, 20, 4), np.int16), folder, series_number=1)
    inputs = expand_paths([folder])
    assert [i.path.name for i in inputs] == ["images", "a.png", "b.png", "c.png"]
    assert load(inputs[0].path).shape[:3] == (24, 20, 4)


def test_each_series_of_a_folder_is_an_input(tmp_path: Path, capsys) -> None:
    from medfm.io.synthetic import write_dicom_series
    from medfm.train.pretrain_data import pretraining_inputs

    files = _dicom_copies(tmp_path / "flat", 3)
    assert [i.path for i in expand_paths([tmp_path / "flat"])] == files
    assert len(pretraining_inputs(tmp_path / "flat")) == 3
    for number in (1, 2):
        write_dicom_series(np.zeros((24, 20, 4), np.int16), tmp_path / "study" / f"s{number}", series_number=number)
    assert [i.path for i in expand_paths([tmp_path / "study"])] == [tmp_path / "study" / "s1", tmp_path / "study" / "s2"]
    code, _, err = run_cli(["segment", str(tmp_path / "flat"), "--point", "5,5", "-o", str(tmp_path / "seg.nii.gz")], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (f"medfm: error: {tmp_path / 'flat'}: holds 3 images (pictures or "
                                                          "DICOM series); give one, or -o a folder to segment each")


def test_series_sharing_one_folder_are_refused_in_one_line(tmp_path: Path) -> None:
    from medfm.io.synthetic import write_dicom_series

    for number in (1, 2):
        for path in write_dicom_series(np.zeros((24, 20, 4), np.int16), tmp_path / f"s{number}", series_number=number):
            path.rename((tmp_path / "study").mkdir(exist_ok=True) or tmp_path / "study" / f"s{number}-{path.name}")
    with pytest.raises(MedfmError, match=r"^\S*study: series [12] \(synthetic phantom\) shares the folder with other DICOM series; .*medfm convert"):
        expand_paths([tmp_path / "study"])
