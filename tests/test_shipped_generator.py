"""The shipped generators (fetal-head ultrasound images; image–mask pairs; MedPix CT/MR by class): they load by name,
sample marked synthetic images (and masks), and their cards report what their held-out evaluations wrote for the
shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from PIL import Image as PILImage

from medfm.models.registry import create_generator, list_generators, sha256_of

NAME, PAIRS, BY_CLASS = "medfm-gen-fetal-us-64", "medfm-gen-fetal-us-pairs-64", "medfm-gen-medpix-ct-mr-64"
CARDS = Path(__file__).resolve().parents[1] / "medfm" / "models" / "cards"


def test_the_shipped_generator_samples_marked_synthetic_images_by_name(tmp_path: Path, capsys) -> None:
    assert NAME in list_generators()
    generator = create_generator(NAME)
    assert (generator.condition, generator.size, generator.channels) == ("none", 64, 1)
    code, _, err = run_cli(["generate", NAME, "-n", "2", "--steps", "4", "--seed", "3", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    written = sorted(tmp_path.glob("*.png"))
    assert len(written) == 2
    with PILImage.open(written[0]) as image:
        assert image.size == (64, 64) and "synthetic" in image.info["Description"].lower()
        pixels = np.asarray(image)
    assert pixels.std() > 5  # an image, not a flat field


def test_the_shipped_pair_generator_samples_fetal_heads_with_their_masks(tmp_path: Path, capsys) -> None:
    from medfm.io import load
    from medfm.train.seg_data import read_cases

    generator = create_generator(PAIRS)
    assert (generator.condition, generator.size, generator.channels, generator.mask_labels) == ("none", 64, 1, [255])
    code, _, err = run_cli(["generate", PAIRS, "-n", "2", "--steps", "8", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    cases = read_cases(tmp_path / "manifest.csv")
    for case in cases:
        mask = load(case.masks[0])
        assert mask.provenance.synthetic
        head = np.asarray(mask.array) > 0
        assert 0.05 < head.mean() < 0.8  # a head, neither nothing nor everything


def test_the_class_conditional_generator_samples_the_class_asked_for(tmp_path: Path, capsys) -> None:
    generator = create_generator(BY_CLASS)
    assert (generator.condition, generator.classes, generator.size) == ("class", ["CT", "MR"], 64)
    code, _, err = run_cli(["generate", BY_CLASS, "--class", "MR", "-n", "2", "--steps", "4", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    written = sorted(tmp_path.glob("*.png"))
    assert len(written) == 2
    with PILImage.open(written[0]) as image:
        assert "synthetic" in image.info["Description"].lower()
        assert json.loads(image.info["medfm-provenance"])["parameters"]["class"] == "MR"
    code, _, err = run_cli(["generate", BY_CLASS, "--class", "PET", "-n", "1", "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and "PET" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", [NAME, PAIRS, BY_CLASS])
def test_the_card_reports_the_held_out_evaluation_of_the_shipped_weights(name: str) -> None:
    card = (CARDS / f"{name}.md").read_text()
    results = json.loads((CARDS / f"{name}.results.json").read_text())
    config = list_generators()[name]
    assert results["weights_sha256"] == config["weights"]["sha256"] == sha256_of(
        Path(__file__).resolve().parents[1] / "medfm" / "models" / "weights" / config["weights"]["file"])
    assert f"--results medfm/models/cards/{name}.results.json" in card
    intervals = results["frd_intervals"]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in card.splitlines() if line.startswith("| FRD")}
    for label, key in (("FRD(generated, held-out)", "generated"), ("FRD(held-out + noise, held-out)", "noisy"),
                       ("FRD(real training images, held-out)", "real_train"),
                       ("FRD difference, generated − noisy", "generated_minus_noisy")):
        estimate = intervals[key]
        assert rows[label] == f"{estimate['value']:.2f} [{estimate['low']:.2f}, {estimate['high']:.2f}]", label
    assert f"**{results['near_copy']['pixels']['generated_above_heldout_p99']} of {results['heldout_images']}** flagged" in card
    assert f"{results['near_copy']['generated_above_heldout_p99']} of {results['heldout_images']} above" in card


def test_the_pair_card_reports_its_segmentation_evaluation() -> None:
    card = (CARDS / f"{PAIRS}.md").read_text()
    results = json.loads((CARDS / f"{PAIRS}.synthetic-seg.json").read_text())
    assert results["generator"]["weights_sha256"] == list_generators()[PAIRS]["weights"]["sha256"]
    assert f"--results medfm/models/cards/{PAIRS}.synthetic-seg.json" in card
    segmenter = results["segmenter"]
    rows = {line.split("|")[1].strip(): line.split("|")[3:5] for line in card.splitlines()
            if line.startswith(("| real only", "| real + synthetic", "| difference"))}
    for label, key in (("real only", "real_only"), ("real + synthetic", "real_plus_synthetic"), ("difference", "difference")):
        dice, hd95 = segmenter[key]["dice"], segmenter[key]["hd95"]
        assert rows[label][0].strip() == f"{dice['value']:.4f} [{dice['low']:.4f}, {dice['high']:.4f}]", label
        assert rows[label][1].strip() == f"{hd95['value']:.2f} [{hd95['low']:.2f}, {hd95['high']:.2f}]", label
