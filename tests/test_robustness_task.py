"""``medfm evaluate robustness``: a segmenter or a probe run over the corruption suite."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture)
from fakesegmenter import ThresholdSegmenter, fake_segmenter  # noqa: F401  (the fixture)

import medfm
from medfm.eval.protocols.robustness import classifier_robustness, segmenter_robustness
from medfm.models import create_encoder
from medfm.train.probe import fit_probe


def _disk(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2


@pytest.fixture
def seg_manifest(tmp_path: Path) -> Path:
    """Four grey PNGs with a bright disk on a dark background, their masks, a manifest."""
    rows = []
    for n in range(4):
        mask = _disk((48, 64), (20 + n, 30 + 2 * n), 10 + n)
        pixels = np.where(mask, 200, 40).astype(np.uint8)
        for name, plane in ((f"img{n}.png", pixels), (f"mask{n}.png", mask.astype(np.uint8) * 255)):
            medfm.save(medfm.Image(plane.T), tmp_path / name)
        rows.append({"image": f"img{n}.png", "mask": f"mask{n}.png"})
    return _write_manifest(tmp_path / "seg.csv", rows)


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_label_valued_and_zero_one_masks_give_the_whole_structure(seg_manifest: Path):
    # the robustness reader kept only the labels above half the maximum: here the inner disk
    for n in range(4):
        mask = np.asarray(medfm.load(seg_manifest.parent / f"mask{n}.png").array[:, :, 0, 0, 0]) > 0
        inner = _disk((48, 64), (20 + n, 30 + 2 * n), 4).T
        medfm.save(medfm.Image((mask.astype(np.uint8) + inner).astype(np.uint8)), seg_manifest.parent / f"mask{n}.png")
    result = segmenter_robustness(seg_manifest, ThresholdSegmenter(threshold=170), corruptions=("gamma",), severities=(1,))
    assert result.as_dict()["clean"]["mean"] > 0.97


def test_segmenter_is_box_prompted_and_degrades_with_noise(seg_manifest: Path):
    result = segmenter_robustness(seg_manifest, ThresholdSegmenter(threshold=170), corruptions=("gaussian_noise", "gamma"), severities=(1, 5))
    summary = result.as_dict()
    assert summary["metric"] == "dice" and summary["n_cases"] == 4
    assert summary["clean"]["mean"] > 0.97  # the threshold inside the reference's box recovers the disk
    noise = summary["corruptions"]["gaussian_noise"]["mean"]
    assert noise[1] < noise[0] <= summary["clean"]["mean"]
    assert len(summary["corruptions"]["gamma"]["params"][0]) == 4  # what was applied to each case is kept


def test_classifier_accuracy_under_corruption(tmp_path: Path, fake_models):
    rows = []
    for n in range(6):
        bright = n % 2 == 0
        plane = np.full((32, 32), 220 if bright else 30, np.uint8)
        plane[8:24, 8:24] = 128
        medfm.save(medfm.Image(plane), tmp_path / f"c{n}.png")
        rows.append({"path": f"c{n}.png", "image": f"c{n}.png", "label": "bright" if bright else "dark"})
    manifest = _write_manifest(tmp_path / "cls.csv", rows)
    encoder = create_encoder("fake-clip")
    probe = fit_probe(manifest, "label", encoder=encoder)
    result = classifier_robustness(manifest, probe, encoder, label_column="label", corruptions=("contrast",), severities=(1, 5))
    summary = result.as_dict()
    assert summary["metric"] == "accuracy" and summary["clean"]["mean"] == 1.0
    assert all(0.0 <= m <= 1.0 for m in summary["corruptions"]["contrast"]["mean"])


def test_cli_json_and_report(seg_manifest: Path, tmp_path: Path, capsys, fake_segmenter):
    report = tmp_path / "robustness.html"
    code, out, err = run_cli(["evaluate", "robustness", str(seg_manifest), "--segmenter", "fake-threshold",
                              "--corruptions", "gaussian_blur", "--severities", "1,3", "--json", "--report", str(report)], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert list(result["corruptions"]) == ["gaussian_blur"] and result["severities"] == [1, 3]
    assert report.read_text().startswith("<!DOCTYPE html>") and "data:image/png;base64" in report.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a segmenter (--segmenter NAME) or a classifier (--probe FILE), not both"),
        (["--segmenter", "fake-threshold", "--severities", "1,x"], "--severities must be integers"),
        (["--segmenter", "fake-threshold", "--corruptions", "rain"], "unknown corruption 'rain'"),
    ],
)
def test_bad_requests_are_one_line(args, message, seg_manifest: Path, capsys, fake_segmenter):
    code, out, err = run_cli(["evaluate", "robustness", str(seg_manifest), *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
