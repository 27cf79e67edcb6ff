"""``medfm fuse-labels``: STAPLE and majority vote against cases worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from clitools import run_cli
from medfm.io.formats import load
from medfm.tasks.label_fusion import fuse_labels


def write(folder: Path, name: str, mask: np.ndarray) -> Path:
    path = folder / name
    PILImage.fromarray(mask.astype(np.uint8)).save(path)
    return path


@pytest.fixture
def annotators(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    """Two annotators draw the truth (a 10x10 square, 100 px, in a 40x40 image); the third misses its top half
    (sensitivity 50/100) and adds a 5x4 blob outside it (specificity 1 - 20/1500)."""
    truth = np.zeros((40, 40), np.uint8)
    truth[10:20, 10:20] = 255
    third = truth.copy()
    third[10:15, 10:20] = 0
    third[30:35, 30:34] = 255
    return [write(tmp_path, "a.png", truth), write(tmp_path, "b.png", truth), write(tmp_path, "c.png", third)], truth


def test_binary_staple_recovers_the_truth_and_each_annotators_rates(annotators):
    paths, truth = annotators
    fused, report = fuse_labels(paths, "staple")
    assert np.array_equal(fused.frame() > 0, truth > 0)
    rates = report["annotators"]
    assert [r["sensitivity"] for r in rates] == pytest.approx([1.0, 1.0, 0.5], abs=1e-3)
    assert [r["specificity"] for r in rates] == pytest.approx([1.0, 1.0, 1 - 20 / 1500], abs=1e-3)
    assert fused.provenance.model == "label-fusion-staple" and len(fused.provenance.inputs) == 3


def test_majority_vote_rates_are_against_the_fused_mask(annotators):
    paths, truth = annotators
    fused, report = fuse_labels(paths, "majority")
    assert np.array_equal(fused.frame() > 0, truth > 0)
    assert report["annotators"][2]["sensitivity"] == pytest.approx(0.5)
    assert report["annotators"][2]["specificity"] == pytest.approx(1 - 20 / 1500)


def test_multi_label_staple_gives_rates_per_label(tmp_path):
    truth = np.zeros((30, 30), np.uint8)
    truth[2:12, 2:12] = 1  # 100 px
    truth[15:25, 15:25] = 2  # 100 px
    third = truth.copy()
    third[2:7, 2:12] = 0  # misses half of label 1
    paths = [write(tmp_path, f"{n}.png", m) for n, m in (("a", truth), ("b", truth), ("c", third))]
    fused, report = fuse_labels(paths, "staple")
    assert np.array_equal(fused.frame(), truth)
    third_rates = report["annotators"][2]
    assert third_rates["sensitivity"] == pytest.approx({"1": 0.5, "2": 1.0}, abs=1e-3)
    assert third_rates["specificity"]["1"] == pytest.approx(1.0, abs=1e-3)
    assert third_rates["specificity"]["2"] == pytest.approx(1.0, abs=1e-3)


def test_cli_writes_the_fused_mask_and_prints_the_rates(annotators, tmp_path, capsys):
    paths, truth = annotators
    code, stdout, stderr = run_cli(["fuse-labels", *map(str, paths), "-o", str(tmp_path / "fused.png")], capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["method"] == "staple" and report["annotators"][2]["sensitivity"] == pytest.approx(0.5, abs=1e-3)
    assert np.array_equal(load(tmp_path / "fused.png").frame() > 0, truth > 0)


def test_masks_of_different_shapes_are_refused_naming_the_file(annotators, tmp_path, capsys):
    paths, _ = annotators
    odd = write(tmp_path, "odd.png", np.zeros((20, 40)))
    code, _, stderr = run_cli(["fuse-labels", str(paths[0]), str(odd), "-o", str(tmp_path / "f.png")], capsys)
    assert code == 2 and "odd.png: shape (40, 20, 1) differs" in stderr
    assert not (tmp_path / "f.png").exists()
    code, _, stderr = run_cli(["fuse-labels", str(paths[0]), "-o", str(tmp_path / "f.png")], capsys)
    assert code == 2 and "at least 2 masks" in stderr
    code, _, stderr = run_cli(["fuse-labels", *map(str, paths), "--method", "vote", "-o", str(tmp_path / "f.png")], capsys)
    assert code == 2 and "--method must be one of staple, majority; got 'vote'" in stderr


def test_colour_and_jpeg_masks_are_read_as_masks_are_everywhere(annotators, tmp_path):
    """A JPEG mask (edges carry values in between) and an RGB one fuse as their PNG originals do."""
    paths, truth = annotators
    jpeg, rgb = tmp_path / "a.jpg", tmp_path / "b_rgb.png"
    PILImage.open(paths[0]).save(jpeg, quality=75)
    PILImage.open(paths[1]).convert("RGB").save(rgb)
    assert len(np.unique(np.asarray(PILImage.open(jpeg)))) > 2  # the halo the rule must keep out
    fused, report = fuse_labels([jpeg, rgb, paths[2]], "staple")
    reference, expected = fuse_labels(paths, "staple")
    assert np.array_equal(fused.frame() > 0, reference.frame() > 0) and report["binary"]
    assert [r["sensitivity"] for r in report["annotators"]] == pytest.approx([r["sensitivity"] for r in expected["annotators"]], abs=1e-3)
