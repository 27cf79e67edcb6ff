"""medfm-captioner: its training on a tiny generated cache, its model folder through the registry, greedy
decoding without repeated trigrams, and `medfm report --model FOLDER`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from PIL import Image as PILImage

from medfm.errors import MedfmError
from medfm.models.language.captioner import MedfmCaptioner, repeated_ngram_ends
from medfm.models.registry import create_language_model, sha256_of
from medfm.train.captioner import train_captioner
from medfm.train.clip_data import Sample

CAPTIONS = {"bright": "a bright square in the middle", "dark": "a dark field with no structure"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A captioner trained on a cache of bright and dark pictures whose captions tell them apart."""
    folder = tmp_path_factory.mktemp("captioner")
    rng = np.random.default_rng(0)
    samples, pixels = [], []
    for n in range(48):
        kind = "bright" if n % 2 else "dark"
        picture = rng.integers(0, 40, (3, 128, 128)).astype(np.uint8)
        if kind == "bright":
            picture[:, 32:96, 32:96] = 230
        pixels.append(picture)
        split = "val" if n >= 40 else "train"
        samples.append(Sample("medpix2_image_text_train", f"{n}.png", f"case{n}", "CT", "head", kind, [f"ct of the head {kind}"],
                              caption=CAPTIONS[kind], split=split))
    cache = folder / "cache.pt"
    torch.save({"pixels": torch.from_numpy(np.stack(pixels)), "samples": json.dumps([asdict(s) for s in samples]),
                "texts": [], "text_features": torch.zeros(0, 384), "captions": "anatomy"}, cache)
    summary = train_captioner(folder / "data", cache, folder / "model", epochs=25, batch_size=8, learning_rate=2e-3)
    assert summary["train_images"] == 40 and summary["val_captions"] == 8
    return folder / "model"


def test_without_validation_captions_the_last_epoch_is_kept_and_the_config_is_strict_json(trained: Path, tmp_path: Path) -> None:
    cache = torch.load(trained.parent / "cache.pt")
    samples = [{**s, "caption": None if s["split"] == "val" else s["caption"]} for s in json.loads(cache["samples"])]
    torch.save({**cache, "samples": json.dumps(samples)}, tmp_path / "cache.pt")
    summary = train_captioner(tmp_path / "data", tmp_path / "cache.pt", tmp_path / "model", epochs=2, batch_size=8)
    assert summary["val_captions"] == 0 and summary["kept_epoch"] == 2 and summary["val_caption_loss"] is None
    config = json.loads((tmp_path / "model" / "config.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert [epoch["val_loss"] for epoch in config["training"]["history"]] == [None, None]


def test_the_model_folder_loads_through_the_registry_and_captions_each_kind(trained: Path, tmp_path: Path, capsys) -> None:
    config = json.loads((trained / "config.json").read_text())
    assert config["kind"] == "language" and config["weights"]["dtype"] == "float16"
    model = create_language_model(trained)
    assert isinstance(model, MedfmCaptioner) and model.info.weights_sha256 == sha256_of(trained / "weights.safetensors")
    dark = np.random.default_rng(1).integers(0, 40, (128, 128, 3)).astype(np.uint8)  # new pictures of each kind
    bright = dark.copy()
    bright[32:96, 32:96] = 230
    assert model.generate([bright], "Describe the image.") == CAPTIONS["bright"]
    assert model.generate([dark], "Describe the image.") == CAPTIONS["dark"]
    assert "".join(model.stream([bright], "Describe.")).strip() == CAPTIONS["bright"]
    with pytest.raises(MedfmError, match="needs at least one image"):
        model.generate([], "Describe.")

    PILImage.fromarray(bright).save(tmp_path / "study.png")
    code, out, err = run_cli(["report", str(tmp_path / "study.png"), "--model", str(trained), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["draft"] == CAPTIONS["bright"]


def test_an_existing_output_is_refused(trained: Path) -> None:
    with pytest.raises(MedfmError, match="already exists"):
        train_captioner(trained.parent / "data", trained.parent / "cache.pt", trained, epochs=1)


def test_repeated_ngram_ends() -> None:
    assert repeated_ngram_ends([1, 2, 3, 1, 2], 3) == {3}
    assert repeated_ngram_ends([1, 2, 3, 4], 3) == set()
    assert repeated_ngram_ends([5], 3) == set()
    assert repeated_ngram_ends([7, 7, 7], 2) == {7}


def test_the_shipped_captioner_loads_by_name_and_its_card_reports_its_benchmark() -> None:
    cards = Path(__file__).resolve().parents[1] / "medfm" / "models" / "cards"
    card, results = (cards / "medfm-captioner.md").read_text(), json.loads((cards / "medfm-captioner.results.json").read_text())
    model = create_language_model("medfm-captioner")
    assert results["weights_sha256"] == model.info.weights_sha256 and results["weights_sha256"][:8] in card
    assert results["command"] in card
    captioner, nearest, draft = (results["vs_nearest"]["captioner_rouge_l"], results["vs_nearest"]["nearest_rouge_l"],
                                 results["vs_draft"]["draft_rouge_l"])
    row = next(line for line in card.splitlines() if line.startswith("| ROUGE-L |"))
    assert row == ("| ROUGE-L | " + " | ".join(f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]"
                                               for e in (captioner, nearest, draft)) + " |")
    text = model.generate([np.full((96, 96, 3), 128, np.uint8)], "Describe the image.")
    assert text and text == text.lower()


def test_a_question_to_the_captioner_is_refused_in_one_line(trained: Path, tmp_path: Path, capsys) -> None:
    PILImage.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "x.png")
    code, out, err = run_cli(["ask", str(tmp_path / "x.png"), "is there a mass?", "--model", str(trained)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("medfm: error: model describes images and does not read questions") and err.count("\n") == 1, err


def test_retrieved_cases_for_a_model_that_ignores_them_are_refused(trained: Path, tmp_path: Path) -> None:
    from medfm.tasks.vlm import draft_report_with_model

    with pytest.raises(MedfmError, match="writes from the image alone and would not read the retrieved cases"):
        draft_report_with_model(tmp_path / "x.png", create_language_model(trained), encoder=object(), index=object())
