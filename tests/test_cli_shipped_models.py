"""What users run, end to end: ``index build``, ``search``, ``classify``, ``fit-probe`` and ``segment``
through the real ``medfm`` entry point with the shipped default models (medfm-clip-small,
medfm-interactive) on phantoms the test generates. No fakes: these check the models' behaviour."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from clitools import run_cli
from PIL import Image as PILImage

from medfm.eval.seg_metrics import dice
from medfm.io.synthetic import phantom, write_disc_phantoms
from medfm.models.registry import list_segmenters

SHIPPED_INTERACTIVE_SHA256 = list_segmenters()["medfm-interactive"]["weights"]["sha256"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CPU
    yield
    torch.set_num_threads(threads)


def _write_plane(plane: np.ndarray, path: Path) -> Path:
    """A one-slice NIfTI of ``(I, J)`` ``plane`` with 1 mm voxels."""
    nib.save(nib.Nifti1Image(plane[:, :, None], np.eye(4)), path)
    return path


@pytest.fixture(scope="module")
def head_scans(tmp_path_factory) -> dict[str, Path]:
    """The same head phantom as a CT (HU) and as a T1-like MR, one axial plane each."""
    folder = tmp_path_factory.mktemp("heads")
    return {modality: _write_plane(phantom((96, 96), seed=1, modality=modality), folder / f"head_{modality.lower()}.nii.gz")
            for modality in ("CT", "MR")}


def test_text_search_over_a_built_index_ranks_the_ct_first(head_scans, tmp_path: Path, capsys) -> None:
    index = tmp_path / "index"
    code, out, err = run_cli(["index", "build", "--model", "medfm-clip-small", "--index", str(index), "--no-progress",
                              str(head_scans["MR"]), str(head_scans["CT"])], capsys)
    assert code == 0, err
    assert "2 added, 0 already indexed, 0 bad" in out
    for query, expected in (("CT", "CT"), ("MRI", "MR")):
        code, out, err = run_cli(["search", "--index", str(index), "--text", query, "-k", "2", "--json"], capsys)
        assert code == 0, err
        hits = json.loads(out)
        assert Path(hits[0]["path"]).name == head_scans[expected].name, (query, hits)
        assert hits[0]["score"] > hits[1]["score"]


def test_zero_shot_classify_tells_ct_from_mr(head_scans, capsys) -> None:
    code, out, err = run_cli(["classify", str(head_scans["CT"]), str(head_scans["MR"]), "--labels", "CT scan,MR scan", "--json"], capsys)
    assert code == 0, err
    results = {Path(result["path"]).name: result for result in json.loads(out)}
    ct, mr = results[head_scans["CT"].name], results[head_scans["MR"].name]
    assert ct["prediction"] == "CT scan" and ct["probabilities"]["CT scan"] > 0.8
    assert mr["prediction"] == "MR scan" and mr["probabilities"]["MR scan"] > 0.8
    assert sum(ct["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def _manifest(path: Path, rows: list[tuple[Path, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "kind"])
        writer.writerows((str(image), label) for image, label in rows)
    return path


def test_probe_fitted_on_two_classes_sorts_held_out_images(tmp_path: Path, capsys) -> None:
    """Head phantoms against disc phantoms: fitted on 6 of each, then classify 4 unseen of each with the probe."""
    discs, _ = write_disc_phantoms(tmp_path / "discs", 10, size=96, seed=3)
    heads = tmp_path / "heads"
    heads.mkdir()
    rows = [(_write_plane(phantom((96, 96), seed=seed), heads / f"head{seed}.nii.gz"), "head") for seed in range(10)]
    rows = [pair for pairs in zip(rows, [(path, "disc") for path in sorted(discs.iterdir())]) for pair in pairs]
    train, held_out = rows[:12], rows[12:]
    code, out, err = run_cli(["fit-probe", str(_manifest(tmp_path / "train.csv", train)), "--label-column", "kind",
                              "--model", "medfm-clip-small", "-o", str(tmp_path / "probe.json"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["classes"] == ["disc", "head"]
    code, out, err = run_cli(["classify", *(str(path) for path, _ in held_out), "--probe", str(tmp_path / "probe.json"), "--json"], capsys)
    assert code == 0, err
    predictions = {Path(result["path"]).name: result["prediction"] for result in json.loads(out)}
    correct = [predictions[path.name] == label for path, label in held_out]
    assert len(correct) == 8 and sum(correct) >= 7, predictions  # chance is 4 of 8


def test_segment_a_disc_from_its_box(tmp_path: Path, capsys) -> None:
    images, masks = write_disc_phantoms(tmp_path, 3, size=128, seed=5)
    for name in ("case000.png", "case001.png", "case002.png"):
        truth = np.asarray(PILImage.open(masks / name)) > 0
        rows, columns = np.nonzero(truth)
        box = f"{columns.min()},{rows.min()},{columns.max()},{rows.max()}"
        code, out, err = run_cli(["segment", str(images / name), "--box", box, "-o", str(tmp_path / f"out_{name}"), "--json"], capsys)
        assert code == 0, err
        record = json.loads(out)["provenance"]
        assert record["model"] == "medfm-interactive" and record["weights_sha256"] == SHIPPED_INTERACTIVE_SHA256
        written = np.asarray(PILImage.open(tmp_path / f"out_{name}"))
        assert written.shape == truth.shape
        assert dice(written > 0, truth) > 0.8, name


def test_evaluate_clip_on_a_split_manifest_writes_what_it_prints(head_scans, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    (data / "phantoms").mkdir(parents=True)
    for modality in ("CT", "MR"):
        (data / "phantoms" / head_scans[modality].name).write_bytes(head_scans[modality].read_bytes())
    manifest = tmp_path / "split_manifest.csv"
    manifest.write_text("dataset,path,frame,group,split,modality,region,label,caption\n"
                        f"phantoms,{head_scans['CT'].name},,g1,test,ct,head,ct,an axial CT of the head\n"
                        f"phantoms,{head_scans['MR'].name},,g2,test,mri,head,mri,an axial MRI of the brain\n"
                        f"phantoms,{head_scans['MR'].name},,g3,train,mri,head,mri,\n")
    code, out, err = run_cli(["evaluate", "clip", str(manifest), "--data", str(data), "--results", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert report["model"] == "medfm-clip-small" and report["per_dataset"] == {
        "phantoms": {"n": 2, "modality_accuracy": 1.0, "region_accuracy": report["region_accuracy"]}}
    assert report["modality_accuracy"] == 1.0 and report["medpix_queries"] == 2 and report["medpix_images"] == 2
    assert report["text_to_image_recall@10"] == 1.0 and report["images_per_second_1_thread_batch_32"] > 0
