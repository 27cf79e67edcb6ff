"""Segmentation from words: the saliency map, its box, the CLI (shipped encoder and segmenter, generated images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from fakeencoder import FakeEncoder

from medfm.errors import MedfmError
from medfm.eval.seg_metrics import dice
from medfm.io import Image, load, save
from medfm.models import create_encoder
from medfm.models.preprocess import prepare_plane
from medfm.tasks.text_segment import saliency_box, text_saliency


def _disc_picture(rows: int = 90, columns: int = 120) -> np.ndarray:
    y, x = np.mgrid[:rows, :columns]
    picture = np.full((rows, columns, 3), 40, np.uint8)
    picture[(y - 30) ** 2 + (x - 80) ** 2 < 15**2] = (220, 120, 110)
    return picture


def test_the_box_surrounds_the_region_of_the_maximum() -> None:
    saliency = np.zeros((50, 60), np.float32)
    saliency[10:20, 30:45] = 0.8
    saliency[12, 40] = 1.0
    saliency[35:45, 5:10] = 0.6  # a second, weaker region is left out
    assert saliency_box(saliency, 0.3) == (30, 10, 44, 19)
    assert saliency_box(saliency, 0.5) == (30, 10, 44, 19)
    assert saliency_box(saliency, 0.9) == (40, 12, 40, 12)
    with pytest.raises(MedfmError, match=r"threshold must be in \[0, 1\)"):
        saliency_box(saliency, 1.0)


def test_the_activation_map_is_the_similarity_split_over_the_image() -> None:
    torch.set_num_threads(1)
    encoder = create_encoder("medfm-clip-small")
    plane = _disc_picture()
    text = encoder.encode_text(["an endoscopy image of a colon polyp"])[0]
    similarity = encoder.similarity_map(plane, text)
    assert similarity.shape == (7, 7)
    model = encoder.model
    pixels = prepare_plane(plane, encoder.MAP_SIZE)[None]
    with torch.inference_mode():
        unnormalised = model.image_projection(model.image_tower((pixels - model.pixel_mean) / model.pixel_std))[0].numpy()
    assert similarity.mean() == pytest.approx(float(unnormalised @ text), rel=1e-4)
    saliency = text_saliency(plane, "polyp", encoder)
    assert saliency.shape == plane.shape[:2] and saliency.min() == 0 and saliency.max() == 1
    with pytest.raises(MedfmError, match="gives no similarity map"):
        text_saliency(plane, "polyp", FakeEncoder())
    with pytest.raises(MedfmError, match="the text prompt is empty"):
        text_saliency(plane, "  ", encoder)


def _skin_lesion_picture(rows: int = 90, columns: int = 120) -> np.ndarray:
    """A brown disc (radius 22 about (60, 45)) on beige skin, with noise: the shipped grounding head calls it a skin lesion."""
    y, x = np.mgrid[:rows, :columns]
    picture = np.empty((rows, columns, 3))
    picture[:] = (225, 180, 160)
    picture[(y - 45) ** 2 + (x - 60) ** 2 < 22**2] = (110, 70, 50)
    return (picture + np.random.default_rng(0).normal(0, 8, picture.shape)).clip(0, 255).astype(np.uint8)


def test_cli_segments_from_words_and_saves_the_saliency(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = save(Image(_skin_lesion_picture().transpose(1, 0, 2)[:, :, None, None, :]), tmp_path / "picture.png")
    code, out, err = run_cli(["segment", str(source), "--text", "skin lesion", "-o", str(tmp_path / "mask.png"),
                              "--saliency", str(tmp_path / "saliency.png"), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    x0, y0, x1, y1 = result["box"]  # the shipped grounding head's box is on the lesion (x 38–82, y 23–67)...
    assert 38 <= x0 < x1 <= 82 and 23 <= y0 < y1 <= 67, result["box"]
    labels = load(tmp_path / "mask.png")
    y, x = np.mgrid[:90, :120]  # ... and the mask segmented from it is the lesion
    assert dice(labels.frame() > 0, (y - 45) ** 2 + (x - 60) ** 2 < 22**2) > 0.9
    record = labels.provenance.parameters["text_prompt"]
    assert record["text"] == "skin lesion" and record["grounder"] == "medfm-grounding-small"
    assert labels.provenance.prompts[0]["label_name"] == "skin lesion"
    assert int((labels.array > 0).sum()) == result["pixels"] > 0
    assert load(tmp_path / "saliency.png").shape[:2] == (120, 90)
    # words for what the picture does not show: found nowhere, refused in one line, nothing written
    code, out, err = run_cli(["segment", str(source), "--text", "polyp", "-o", str(tmp_path / "polyp.png")], capsys)
    assert code == 2 and err.count("\n") == 1 and "picture.png: 'polyp' not found: the saliency peaks at" in err, err
    assert not (tmp_path / "polyp.png").exists()
    for args, message in ((["--text", " "], "the text prompt is empty"),
                          (["--text", "polyp", "--box", "1,1,5,5"], "cannot be combined with --box"),
                          (["--saliency", str(tmp_path / "s.png")], "give --text too")):
        code, out, err = run_cli(["segment", str(source), "-o", str(tmp_path / "other.png"), *args], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "other.png").exists()
    # a folder: its one picture is segmented; a folder of several is refused naming the count
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "p.png").write_bytes(source.read_bytes())
    code, out, err = run_cli(["segment", str(tmp_path / "one"), "--text", "skin lesion", "-o", str(tmp_path / "one.png")], capsys)
    assert code == 0 and (tmp_path / "one.png").exists(), err
    (tmp_path / "one" / "q.png").write_bytes(source.read_bytes())
    code, out, err = run_cli(["segment", str(tmp_path / "one"), "--text", "skin lesion", "-o", str(tmp_path / "two.png")], capsys)
    assert code == 2 and err.count("\n") == 1 and "one: --text segments one image; this folder holds 2" in err, err
    volume = save(Image(np.zeros((20, 20, 3), np.int16)), tmp_path / "volume.nii.gz")
    code, out, err = run_cli(["segment", str(volume), "--text", "polyp", "-o", str(tmp_path / "v.nii.gz")], capsys)
    assert code == 2 and "text prompts segment one 2D plane" in err
