"""benchmarks/generator_heldout.py split: whole cases on each side, the low-label and the rare-class training sets."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("generator_heldout",
                                               Path(__file__).parent.parent / "benchmarks" / "generator_heldout.py")
generator_heldout = importlib.util.module_from_spec(_spec)
sys.modules["generator_heldout"] = generator_heldout
_spec.loader.exec_module(generator_heldout)


@pytest.fixture
def medpix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A MedPix-shaped manifest: 60 cases of 3 images each, 2 CT and 1 MR (no image file is read by the split)."""
    root = tmp_path / "data" / "medpix2_image_text_train"
    root.mkdir(parents=True)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "case_id", "modality", "mode"])
        writer.writerows([[f"images/{case}_{n}.png", f"MPX{case}", "MR" if n == 2 else "CT", "L"]
                          for case in range(60) for n in range(3)])
    monkeypatch.setenv("MEDFM_SHARED_DATA", str(tmp_path / "data"))
    return root


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_rare_class_keeps_whole_cases_of_that_class_and_everything_else(medpix: Path, tmp_path: Path) -> None:
    full = generator_heldout.split("medpix", tmp_path / "full")
    rare = generator_heldout.split("medpix", tmp_path / "rare", rare=("MR", 5))
    assert rare["heldout"] == full["heldout"] and rare["train"]["CT"] == full["train"]["CT"]
    assert rare["train"]["MR"] == 5 < full["train"]["MR"]  # one MR image per case: exactly five cases
    assert rows(tmp_path / "rare" / "heldout.csv") == rows(tmp_path / "full" / "heldout.csv")
    kept_mr = [r for r in rows(tmp_path / "rare" / "train.csv") if r["label"] == "MR"]
    held_cases = {r["case_id"] for r in rows(tmp_path / "rare" / "heldout.csv")}
    assert not {r["case_id"] for r in kept_mr} & held_cases
    # the manifest `evaluate synthetic --task cls` takes: both sides, labelled and split
    listed = rows(tmp_path / "rare" / "classification.csv")
    assert Counter((r["split"], r["label"]) for r in listed) == {
        ("train", "CT"): full["train"]["CT"], ("train", "MR"): 5,
        ("test", "CT"): full["heldout"]["CT"], ("test", "MR"): full["heldout"]["MR"]}
    assert all(Path(r["path"]).parent == medpix / "images" for r in listed)


def test_the_low_label_set_is_whole_cases_in_a_seeded_order(medpix: Path, tmp_path: Path) -> None:
    low = generator_heldout.split("medpix", tmp_path / "low", train_images=10)
    again = generator_heldout.split("medpix", tmp_path / "again", train_images=10)
    assert sum(low["train"].values()) == 12  # four whole cases of three images reach ten
    assert rows(tmp_path / "low" / "train.csv") == rows(tmp_path / "again" / "train.csv")
    assert all(count == 3 for count in Counter(r["case_id"] for r in rows(tmp_path / "low" / "train.csv")).values())


def test_a_rare_class_absent_from_training_is_refused(medpix: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no training image of class 'US'"):
        generator_heldout.split("medpix", tmp_path / "out", rare=("US", 3))
    assert not (tmp_path / "out").exists()  # refused before anything is written
    assert generator_heldout.rare_class("MR=40") == ("MR", 40)
    for text in ("MR", "MR=0", "=4", "MR=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected CLASS=N"):
            generator_heldout.rare_class(text)
