"""Text grounding heads: the head and its loading, `medfm train grounding` on generated pictures, and their use by
`segment --text` (shipped encoder and segmenter)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from fakesegmenter import ThresholdSegmenter
from grounders import constant_grounder_folder

from medfm.errors import MedfmError
from medfm.io import Image, load, save
from medfm.models.grounding import ground_with
from medfm.models.registry import create_encoder, create_grounder, create_segmenter, grounder_for
from medfm.tasks.text_segment import text_box, text_saliency
from medfm.train.grounding import read_manifest


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _picture(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy grey picture with a bright disc and a dark square apart: ``(picture, disc mask, square mask)``."""
    y, x = np.mgrid[:size, :size]
    picture = rng.normal(120, 12, (size, size)).clip(0, 255)
    left = rng.random() < 0.5
    cx, cy = (rng.integers(14, 22) if left else rng.integers(42, 50)), rng.integers(14, 50)
    disc = (y - cy) ** 2 + (x - cx) ** 2 < 10**2
    sx, sy = (rng.integers(36, 44) if left else rng.integers(6, 14)), rng.integers(6, 44)
    square = (y >= sy) & (y < sy + 16) & (x >= sx) & (x < sx + 16)
    picture[disc], picture[square] = 230, 20
    return picture.astype(np.uint8), disc, square


def _manifest(folder: Path, pictures: int = 40, validation: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = ["image,mask,text,split"]
    for n in range(pictures + validation):
        picture, disc, square = _picture(rng)
        split = "val" if n >= pictures else "train"
        image = save(Image(picture.T), folder / f"p{n}.png")
        save(Image(disc.T.astype(np.uint8)), folder / f"p{n}-disc.png")
        save(Image(square.T.astype(np.uint8)), folder / f"p{n}-square.png")
        rows += [f"{image.name},p{n}-disc.png,disc|bright disc,{split}", f"{image.name},p{n}-square.png,square,{split}"]
    for n in range(4):  # pictures showing neither
        save(Image(rng.normal(120, 12, (64, 64)).clip(0, 255).astype(np.uint8)), folder / f"empty{n}.png")
        rows.append(f"empty{n}.png,,,train")
    (folder / "grounding.csv").write_text("\n".join(rows) + "\n")
    return folder / "grounding.csv"


def test_training_learns_where_each_phrase_is_and_the_folder_serves_segment_text(tmp_path: Path, capsys) -> None:
    manifest = _manifest(tmp_path)
    model = tmp_path / "grounder"
    code, out, err = run_cli(["train", "grounding", str(manifest), "-o", str(model), "--epochs", "6",
                              "--steps-per-epoch", "20", "--batch-size", "8"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["train_pictures"] == 44 and summary["train_masks"] == 80 and summary["validated_on"] == "val"
    assert summary["val_dice"] > 0.5, summary
    config = json.loads((model / "config.json").read_text())
    assert config["kind"] == "grounder" and config["phrases"] == [["disc", "bright disc"], ["square"]]
    grounder = create_grounder(model)
    encoder = grounder.encoder
    # the words decide the place: on new pictures the disc's map covers the disc, the square's the square
    rng = np.random.default_rng(7)
    hits = []
    for _ in range(6):
        picture, disc, square = _picture(rng)
        for words, mask, other in (("disc", disc, square), ("square", square, disc)):
            saliency = text_saliency(picture, words, encoder, grounder)
            hits.append(saliency[mask].mean() > saliency[other].mean() + 0.2)
    assert np.mean(hits) >= 0.75, hits
    code, _, err = run_cli(["train", "grounding", str(manifest), "-o", str(model)], capsys)
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    code, _, err = run_cli(["train", "grounding", str(manifest), "-o", str(tmp_path / "other"), "--encoder", "timm-resnet18"], capsys)
    assert code == 2 and "an image-text encoder; 'timm-resnet18' has no text tower" in err and err.count("\n") == 1, err
    assert not (tmp_path / "other").exists() and not (tmp_path / ".other.partial").exists()


def test_a_constant_head_finds_everything_or_nothing(tmp_path: Path) -> None:
    plane = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    everywhere = create_grounder(constant_grounder_folder(tmp_path / "everywhere", 6.0))
    encoder = everywhere.encoder
    saliency = text_saliency(plane, "polyp", encoder, everywhere)
    assert saliency.shape == (50, 70) and saliency.min() > 0.99
    assert text_box(plane, "polyp", encoder, everywhere)[0] == (0, 0, 69, 49)
    nowhere = create_grounder(constant_grounder_folder(tmp_path / "nowhere", -6.0))
    with pytest.raises(MedfmError, match=r"^'polyp' not found: the saliency peaks at 0\.00, under the threshold 0\.5$"):
        text_box(plane, "  polyp ", nowhere.encoder, nowhere)
    with pytest.raises(MedfmError, match=r"a text embedding for 'medfm-clip-small' is \(256,\); got \(3,\)"):
        everywhere.saliency(plane, np.zeros(3))


def test_a_head_over_other_weights_or_a_damaged_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MedfmError, match=r"trained over medfm-clip-small weights 000000000000…, but 069b80870764… are in use"):
        create_grounder(constant_grounder_folder(tmp_path / "other", 6.0, encoder_sha256="0" * 64))
    with pytest.raises(MedfmError, match=r"trained over medfm-interactive weights 000000000000…, but 7725edb98d8c… are in use"):
        create_grounder(constant_grounder_folder(tmp_path / "other-segmenter", 6.0, segmenter_sha256="0" * 64))
    config = json.loads((constant_grounder_folder(tmp_path / "fake", 6.0) / "config.json").read_text())
    with pytest.raises(MedfmError, match=r"^fake: grounding heads read a medfm_interactive segmenter's image encoder; "
                                         r"'fake-threshold' is not one$"):
        ground_with(config, None, create_encoder("medfm-clip-small"), ThresholdSegmenter())
    damaged = constant_grounder_folder(tmp_path / "damaged", 6.0)
    (damaged / "weights.safetensors").write_bytes(b"x" * 10)
    with pytest.raises(MedfmError, match="does not match the sha256 in its config.json"):
        create_grounder(damaged)
    with pytest.raises(MedfmError, match=r"upscaler: holds a super-resolution model, not a text grounding head \(`medfm train grounding`\)$"):
        create_grounder(_other_kind(tmp_path))


def _other_kind(tmp_path: Path) -> Path:
    folder = tmp_path / "upscaler"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": "upscaler", "weights": {"file": "w.safetensors"}}))
    return folder


def test_the_shipped_head_reads_the_shipped_encoder_itself_and_the_shipped_segmenters_features() -> None:
    encoder = create_encoder("medfm-clip-small")
    grounder = grounder_for(encoder)
    assert grounder is not None and grounder.encoder is encoder and grounder.info.weights_sha256
    assert grounder.segmenter.info == create_segmenter("medfm-interactive").info and grounder.size == 128
    plane = np.zeros((40, 40), np.uint8)
    saliency = text_saliency(plane, "polyp", encoder, grounder)
    assert saliency.shape == (40, 40) and 0 <= saliency.min() <= saliency.max() <= 1


@pytest.mark.parametrize(("rows", "message"), [
    ("image,mask,text\n", "needs the columns image, mask, text, split; split missing"),
    ("image,mask,text,split\na.png,a-mask.png,,train\n", "line 2 has a mask but no text"),
    ("image,mask,text,split\na.png,,polyp,train\n", "line 2 has text but no mask"),
    ("image,mask,text,split\na.png,,,train\n", "no train row names a mask"),
])
def test_a_bad_manifest_is_refused_in_one_line(tmp_path: Path, rows: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(rows)
    with pytest.raises(MedfmError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_cli_segment_text_uses_the_grounder_and_writes_nothing_when_the_words_are_absent(tmp_path: Path, capsys,
                                                                                       monkeypatch) -> None:
    from medfm.models import registry

    picture = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    source = save(Image(picture.transpose(1, 0, 2)[:, :, None, None, :]), tmp_path / "picture.png")
    everywhere = constant_grounder_folder(tmp_path / "everywhere", 6.0)
    loaded = []
    create_segmenter_once = registry.create_segmenter
    monkeypatch.setattr(registry, "create_segmenter", lambda *a, **k: loaded.append(a[0]) or create_segmenter_once(*a, **k))
    code, out, err = run_cli(["segment", str(source), "--text", "polyp", "--grounder", str(everywhere),
                              "-o", str(tmp_path / "mask.png"), "--json"], capsys)
    assert code == 0, err
    assert loaded == ["medfm-interactive"]  # the head's segmenter segments too: loaded once
    assert json.loads(out)["box"] == [0, 0, 79, 59]
    record = load(tmp_path / "mask.png").provenance.parameters["text_prompt"]
    assert record["method"] == "grounding head → box" and record["grounder"] == "everywhere"
    assert record["grounder_weights_sha256"] == json.loads((everywhere / "config.json").read_text())["weights"]["sha256"]
    nowhere = constant_grounder_folder(tmp_path / "nowhere", -6.0)
    code, out, err = run_cli(["segment", str(source), "--text", "polyp", "--grounder", str(nowhere),
                              "-o", str(tmp_path / "none.png")], capsys)
    assert code == 2 and err.count("\n") == 1 and "picture.png: 'polyp' not found: the saliency peaks at 0.00" in err, err
    assert not (tmp_path / "none.png").exists()
    code, out, err = run_cli(["segment", str(source), "--grounder", str(everywhere), "-o", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "give --text too" in err
    # an adapter asked for is used: the segmenter is built with it, not taken from the head
    adapter = registry.WEIGHTS_DIR / "medfm-interactive-kvasir-dd-adapter.safetensors"
    adapted = []
    monkeypatch.setattr(registry, "create_segmenter", lambda *a, **k: adapted.append(a) or create_segmenter_once(*a, **k))
    code, out, err = run_cli(["segment", str(source), "--text", "polyp", "--grounder", str(everywhere), "--adapter",
                              str(adapter), "-o", str(tmp_path / "adapted.png")], capsys)
    assert code == 0, err
    assert adapted == [("medfm-interactive",), ("medfm-interactive", None, adapter)]  # the head's own, then the adapted one
