"""``medfm segment``: PNG, NIfTI and DICOM SEG outputs with provenance; one-line refusals, no partial output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image as PILImage

import medfm
from clitools import run_cli
from fakesegmenter import fake_segmenter  # noqa: F401  (the fixture)
from medfm.io.synthetic import write_dicom_series
from medfm.models.segmenters.sam import build_sam_model

FAKE = ["--model", "fake-threshold"]


@pytest.fixture
def png(tmp_path: Path) -> Path:
    pixels = np.zeros((60, 80), np.uint8)  # (rows, columns)
    pixels[20:40, 10:50] = 200
    PILImage.fromarray(pixels).save(tmp_path / "in.png")
    return tmp_path / "in.png"


@pytest.mark.usefixtures("fake_segmenter")
def test_png_in_png_out_same_size_white_structure_and_provenance(png: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(["segment", str(png), "--box", "5,15,60,45", "-o", str(tmp_path / "out.png"), *FAKE, "--json"], capsys)
    assert code == 0, err
    written = np.asarray(PILImage.open(tmp_path / "out.png"))
    assert written.shape == (60, 80) and set(np.unique(written)) == {0, 255}
    assert (written[20:40, 10:50] == 255).all() and written.sum() == 20 * 40 * 255
    summary = json.loads(out)
    record = summary["provenance"]
    assert record["model"] == "fake-threshold" and record["weights_sha256"] == "0" * 64 and record["kind"] == "segmentation"
    assert summary["structures"][0]["voxels"] == 800 and summary["structures"][0]["area_mm2"] is None  # a photo: no mm
    assert record["prompts"][0]["boxes"] == [[5, 15, 60, 45]] and set(summary["timing_s"]) == {"load", "segment", "write"}
    assert medfm.load(tmp_path / "out.png").provenance.to_dict() == record


@pytest.mark.usefixtures("fake_segmenter")
def test_several_labels_from_a_prompts_file_keep_their_values(png: Path, tmp_path: Path, capsys) -> None:
    prompts = [{"boxes": [[5, 15, 29, 45]], "label": 2, "label_name": "left"}, {"points": [[40, 30]], "point_labels": [1], "label": 7}]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    code, out, err = run_cli(["segment", str(png), "--prompts", str(tmp_path / "prompts.json"), "-o", str(tmp_path / "out.png"), *FAKE], capsys)
    assert code == 0, err
    written = np.asarray(PILImage.open(tmp_path / "out.png"))
    assert set(np.unique(written)) == {0, 2, 7} and (written[20:40, 10:30] == 2).all()
    assert "label 2 (left): 400 voxels" in out
    (tmp_path / "one.json").write_text(json.dumps(prompts[0]))  # one prompt object, not a list of them
    code, out, err = run_cli(["segment", str(png), "--prompts", str(tmp_path / "one.json"), "-o", str(tmp_path / "one.png"), *FAKE], capsys)
    assert code == 2 and err.count("\n") == 1 and "one.json: not a JSON list of prompts (a list of prompt objects" in err, err


@pytest.mark.usefixtures("fake_segmenter")
def test_volume_with_propagation_to_nifti(tmp_path: Path, capsys) -> None:
    grid = np.mgrid[:32, :32, :20]
    ball = sum((g - c) ** 2 for g, c in zip(grid, (16, 16, 10))) <= 36
    medfm.save(medfm.Image(ball.astype(np.float32), np.diag([0.7, 0.7, 1.5, 1])), tmp_path / "ball.nii.gz")
    code, out, err = run_cli(["segment", str(tmp_path / "ball.nii.gz"), "--point", "16,16,10", "--propagate",
                              "-o", str(tmp_path / "seg.nii.gz"), *FAKE, "--json"], capsys)
    assert code == 0, err
    labels = medfm.load(tmp_path / "seg.nii.gz")
    sizeable = ball & (ball.sum(axis=(0, 1)) >= 10)  # the single-voxel poles are below propagation's min_area
    assert np.allclose(labels.affine, np.diag([0.7, 0.7, 1.5, 1]), atol=1e-6)
    assert np.array_equal(labels.array[..., 0, 0] > 0, sizeable)
    summary = json.loads(out)
    assert summary["structures"][0]["volume_mm3"] == pytest.approx(sizeable.sum() * 0.7 * 0.7 * 1.5)
    assert summary["propagated"] and labels.provenance.to_dict() == summary["provenance"]


@pytest.mark.usefixtures("fake_segmenter")
def test_propagation_rule_from_the_command_line(tmp_path: Path, capsys) -> None:
    grid = np.mgrid[:32, :32, :20]
    ball = sum((g - c) ** 2 for g, c in zip(grid, (16, 16, 10))) <= 36
    medfm.save(medfm.Image(ball.astype(np.float32)), tmp_path / "ball.nii.gz")
    args = ["segment", str(tmp_path / "ball.nii.gz"), "--point", "16,16,10", "--propagate", "-o", str(tmp_path / "seg.nii.gz"), *FAKE]
    code, out, err = run_cli([*args, "--rule", "min_area=30", "--json"], capsys)
    assert code == 0, err
    planes = json.loads(out)["structures"][0]["planes"]
    assert planes == int(((ball.sum(axis=(0, 1))) >= 30).sum())  # fewer planes than the default min_area of 10 reaches
    assert medfm.load(tmp_path / "seg.nii.gz").provenance.parameters["rule"]["min_area"] == 30
    for bad, message in ((["--rule", "min_score=2", "--rule", "speed=3"], "no parameter 'speed'"),
                         (["--rule", "min_score"], "--rule takes KEY=VALUE"),
                         (["--rule", "min_score=high"], "--rule takes NAME=NUMBER")):
        code, out, err = run_cli([*args, *bad], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli([a for a in args if a != "--propagate"] + ["--rule", "min_area=30"], capsys)
    assert code == 2 and "give --propagate too" in err


@pytest.mark.usefixtures("fake_segmenter")
@pytest.mark.parametrize("layout", [{}, {"enhanced": True, "row_direction": (0, 1, 0), "column_direction": (0, 0, -1)}],
                         ids=["axial-single-frame", "sagittal-enhanced"])
def test_dicom_input_writes_a_seg_matching_every_source_frame(layout: dict, tmp_path: Path, capsys) -> None:
    stored = np.zeros((40, 32, 10), np.int16)  # (columns, rows, slices) as DICOM stores them
    stored[5:15, 3:9, 2:7] = 100  # near the top rows: medfm's grid has them elsewhere (rows flipped, reoriented)
    files = write_dicom_series(stored, tmp_path / "ct", slice_order="shuffled", **layout)
    inside = np.argwhere(medfm.load(tmp_path / "ct").array[..., 0, 0] > 50)
    i, j, k = inside[len(inside) // 2]
    code, out, err = run_cli(["segment", str(tmp_path / "ct"), "--point", f"{i},{j},{k}", "--propagate",
                              "-o", str(tmp_path / "seg.dcm"), *FAKE], capsys)
    assert code == 0, err
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "fake-threshold"
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "0" * 64
    source_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    for file in files:
        ds = pydicom.dcmread(file)
        if "NumberOfFrames" in ds:
            got = seg.get_pixels_by_source_frame(ds.SOPInstanceUID, list(range(1, ds.NumberOfFrames + 1)),
                                                 assert_missing_frames_are_empty=True)[..., 0]
        else:
            got = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], assert_missing_frames_are_empty=True)[0, :, :, 0]
        assert np.array_equal(got > 0, ds.pixel_array > 50)
    assert medfm.load(tmp_path / "seg.dcm").provenance.weights_sha256 == "0" * 64
    if shutil.which("dciodvfy"):  # dicom3tools' validator, where installed
        report = subprocess.run(["dciodvfy", str(tmp_path / "seg.dcm")], capture_output=True, text=True).stderr
        assert "Error" not in report, report


def test_tiny_sam_checkpoint_from_the_command_line(png: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    architecture = {"encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 2, "encoder_global_attn_indexes": [0], "image_size": 256}
    torch.save(build_sam_model(architecture).state_dict(), tmp_path / "tiny.pth")
    (tmp_path / "tiny-sam.json").write_text(json.dumps({"family": "sam", "kind": "segmenter", "architecture": architecture}))
    code, out, err = run_cli(["segment", str(png), "--point", "30,30", "--model", str(tmp_path / "tiny-sam.json"),
                              "--checkpoint", str(tmp_path / "tiny.pth"), "-o", str(tmp_path / "out.nii.gz"), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["provenance"]["model"] == "tiny-sam" and len(summary["provenance"]["weights_sha256"]) == 64
    assert medfm.load(tmp_path / "out.nii.gz").shape[:2] == (80, 60)
    code, _, err = run_cli(["segment", str(png), "--point", "30,30", "--model", "sam-vit-b", "--checkpoint", str(tmp_path / "tiny.pth"),
                            "-o", str(tmp_path / "bad.png")], capsys)
    assert code == 2 and "not a checkpoint of sam-vit-b" in err and err.count("\n") == 1
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.usefixtures("fake_segmenter")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--point", "80,10"], "point (80, 10) is outside the 80x60 plane"),
        ([], "no prompt given"),
        (["--box", "10,10,10,30"], "zero-area box"),
        (["--box", "10,10,30"], "--box takes x0,y0,x1,y1[,z]"),
        (["--point", "5,5:maybe"], "the suffix must be :pos or :neg"),
        (["--scribble", "SMALL"], "scribble mask has shape (40, 30, 1, 1) (I, J, K, T); the image is (80, 60, 1, 1)"),
        (["--point", "5,5", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--point", "5,5", "-o", "OUT.dcm"], "DICOM SEG output needs a DICOM input"),
        (["--point", "5,5", "-o", "OUT.jpg"], "a segmentation is written as .png, .nii, .nii.gz, .dcm"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args: list[str], message: str, png: Path, tmp_path: Path, capsys) -> None:
    PILImage.fromarray(np.full((30, 40), 255, np.uint8)).save(tmp_path / "small.png")
    args = [str(tmp_path / "small.png") if a == "SMALL" else a.replace("OUT", str(tmp_path / "out")) for a in args]
    output = [] if "-o" in args else ["-o", str(tmp_path / "out.png")]
    model = [] if "--model" in args else FAKE
    code, out, err = run_cli(["segment", str(png), *args, *output, *model], capsys)
    assert code == 2 and err.startswith("medfm: error: ") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "small.png"]
