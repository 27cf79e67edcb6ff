"""The shipped fetal-head ultrasound generator: it loads by name, samples marked synthetic images, and its card
reports what its held-out evaluation wrote for the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from clitools import run_cli
from PIL import Image as PILImage

from medfm.models.registry import create_generator, list_generators, sha256_of

NAME = "medfm-gen-fetal-us-64"
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


def test_the_card_reports_the_held_out_evaluation_of_the_shipped_weights() -> None:
    card = (CARDS / f"{NAME}.md").read_text()
    results = json.loads((CARDS / f"{NAME}.results.json").read_text())
    config = list_generators()[NAME]
    assert results["weights_sha256"] == config["weights"]["sha256"] == sha256_of(
        Path(__file__).resolve().parents[1] / "medfm" / "models" / "weights" / config["weights"]["file"])
    assert f"--results medfm/models/cards/{NAME}.results.json" in card
    intervals = results["frd_intervals"]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in card.splitlines() if line.startswith("| FRD")}
    for label, key in (("FRD(generated, held-out)", "generated"), ("FRD(held-out + noise, held-out)", "noisy"),
                       ("FRD(real training images, held-out)", "real_train"),
                       ("FRD difference, generated − noisy", "generated_minus_noisy")):
        estimate = intervals[key]
        assert rows[label] == f"{estimate['value']:.2f} [{estimate['low']:.2f}, {estimate['high']:.2f}]", label
    assert f"**{results['near_copy']['pixels']['generated_above_heldout_p99']} of {results['heldout_images']}** flagged" in card
    assert f"{results['near_copy']['generated_above_heldout_p99']} of {results['heldout_images']} above" in card
