"""Local vision-language checkpoints: tiny random models of each real architecture, saved and loaded back offline."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from tinyvlms import BUILDERS, tiny_model

from medfm.errors import MedfmError
from medfm.models.language import LanguageModel
from medfm.models.registry import create_language_model

PICTURE = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _saved(family: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    model, processor = tiny_model(family)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, folder


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_a_saved_checkpoint_loads_offline_with_the_same_logits(family: str, tmp_path: Path) -> None:
    model, folder = _saved(family, tmp_path / f"tiny-{family}")
    loaded = create_language_model(folder)
    assert isinstance(loaded, LanguageModel)
    assert (loaded.info.family, loaded.info.name) == (family, f"tiny-{family}")
    assert len(loaded.info.weights_sha256) == 64
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    inputs = loaded.inputs([PICTURE], "is there a mass?")
    with torch.inference_mode():
        expected, got = model(**inputs).logits, loaded.model(**inputs).logits
    assert got.shape == expected.shape and got.shape[1] == inputs["input_ids"].shape[1]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # another seed's model gives other logits: the comparison can fail
    other, _ = tiny_model(family, seed=1)
    with torch.inference_mode():
        assert not torch.allclose(other(**inputs).logits, expected)


@pytest.mark.parametrize("family", ["gemma3", "qwen2_vl"])
def test_generation_is_greedy_and_streams_the_same_text(family: str, tmp_path: Path) -> None:
    _, folder = _saved(family, tmp_path / family)
    loaded = create_language_model(folder)
    text = loaded.generate([PICTURE, PICTURE[::-1]], "describe", max_new_tokens=6)
    pieces = list(loaded.stream([PICTURE, PICTURE[::-1]], "describe", max_new_tokens=6))
    assert isinstance(text, str) and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces).strip() == text
    assert loaded.generate([PICTURE, PICTURE[::-1]], "describe", max_new_tokens=6) == text


def test_the_chat_template_is_used_when_the_checkpoint_has_one(tmp_path: Path) -> None:
    model, processor = tiny_model("llava")
    processor.chat_template = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
                               "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} ASSISTANT:")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = create_language_model(tmp_path)
    assert loaded.prompt_text(2, "which side?") == "USER: <image><image>which side? ASSISTANT:"
    assert create_language_model(_saved("llava", tmp_path / "plain")[1]).prompt_text(2, "which side?") == "<image><image>\nwhich side?"


def test_a_folder_of_another_family_is_refused_in_one_line(tmp_path: Path) -> None:
    _, folder = _saved("paligemma", tmp_path / "pali")
    with pytest.raises(MedfmError, match=r"a 'paligemma' checkpoint, not the 'qwen2_vl' model asked for") as caught:
        create_language_model(folder, family="qwen2_vl")
    assert "\n" not in str(caught.value)
    text_only = tmp_path / "text-only"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(MedfmError, match=r"a 'llama' checkpoint, not an image-text model medfm can run; families: gemma3"):
        create_language_model(text_only)


def test_folders_without_config_or_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MedfmError, match="no config.json"):
        create_language_model(tmp_path)
    with pytest.raises(MedfmError, match="not a model folder"):
        create_language_model(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    with pytest.raises(MedfmError, match=r"no \*\.safetensors weights"):
        create_language_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MedfmError, match="cannot read as a model config"):
        create_language_model(tmp_path)


def test_requests_no_model_can_answer_are_refused(tmp_path: Path) -> None:
    loaded = create_language_model(_saved("paligemma", tmp_path)[1])
    with pytest.raises(MedfmError, match=r"takes at most 1 image\(s\) per prompt; got 2"):
        loaded.generate([PICTURE, PICTURE], "caption")
    with pytest.raises(MedfmError, match="needs at least one image"):
        loaded.generate([], "caption")
    with pytest.raises(MedfmError, match="the prompt is empty"):
        loaded.generate([PICTURE], "  ")
    with pytest.raises(MedfmError, match=r"\(rows, columns, 3\) uint8"):
        loaded.generate([PICTURE[..., 0]], "caption")
    with pytest.raises(MedfmError, match="characters long"):
        loaded.generate([PICTURE], "x" * 9000)
