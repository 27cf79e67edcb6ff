"""A model folder given where another kind is needed is refused naming what the folder really is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfm.errors import MedfmError

ROUTER = {"family": "medfm_router", "kind": "router", "weights": {"file": "weights.safetensors"}}
PRETRAINED = {"family": "medfm_backbone", "kind": "encoder", "arch": "vit-tiny", "weights": {"file": "encoder.safetensors"}}


def _folder(tmp_path: Path, name: str, config: dict) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_image_only_encoder_is_named_where_an_image_text_model_is_needed(tmp_path: Path) -> None:
    from medfm.models.language.transformers_backend import checkpoint_family

    folder = _folder(tmp_path, "enc", PRETRAINED)
    with pytest.raises(MedfmError) as caught:
        checkpoint_family(folder)
    assert str(caught.value).startswith(f"{folder}: an image-only encoder (`medfm pretrain` vit-tiny), not an image-text "
                                        "model medfm can run; families: ")


def test_a_router_is_not_read_as_a_train_seg_model(tmp_path: Path) -> None:
    from medfm.models.automatic.segmenter import load_auto_segmenter

    folder = _folder(tmp_path, "router", ROUTER)
    with pytest.raises(MedfmError) as caught:
        load_auto_segmenter(folder)
    assert str(caught.value) == (f"{folder}: not a model folder written by `medfm train seg`; its config.json is for a "
                                 "domain router (`medfm train router`)")


def test_the_wrong_kind_of_model_folder_is_named_with_its_article(tmp_path: Path) -> None:
    from medfm.models.registry import read_model_folder_config

    folder = _folder(tmp_path, "router", ROUTER)
    with pytest.raises(MedfmError) as caught:
        read_model_folder_config(folder, "encoder")
    assert str(caught.value) == f"{folder}: holds a domain router (`medfm train router`), not an image encoder"
