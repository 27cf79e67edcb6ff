"""The model hub: every config listed with its kind, modalities and organs; cards shown."""

import json

import pytest

from clitools import run_cli
from medfm.errors import MedfmError
from medfm.models.hub import list_models, model_card
from medfm.models.registry import all_configs, list_encoders, list_segmenters


def test_lists_every_config_once_with_its_kind() -> None:
    entries = list_models()
    assert sorted(entry.name for entry in entries) == sorted(all_configs())
    kinds = {entry.name: entry.kind for entry in entries}
    assert {name for name, kind in kinds.items() if kind == "encoder"} == set(list_encoders())
    assert {name for name, kind in kinds.items() if kind == "segmenter"} == set(list_segmenters())


def test_filters_by_kind_modality_and_organ() -> None:
    endoscopy_segmenters = {entry.name for entry in list_models("segmenter", modality="Endoscopy")}
    assert "medfm-interactive" in endoscopy_segmenters  # declared, matched without regard to case
    assert "sam-vit-b" in endoscopy_segmenters  # a general model serves any modality
    assert "medfm-interactive" not in {entry.name for entry in list_models("segmenter", modality="CT")}
    assert "medfm-interactive" not in {entry.name for entry in list_models(organ="liver")}
    assert all(entry.kind == "encoder" for entry in list_models("encoder"))


def test_unknown_kind_or_model_is_one_line() -> None:
    with pytest.raises(MedfmError, match="unknown model kind 'painter'; choose one of: .*encoder"):
        list_models("painter")
    with pytest.raises(MedfmError, match="unknown model 'nope'"):
        model_card("nope")


def test_card_is_the_shipped_card_or_the_config_in_words() -> None:
    assert model_card("medfm-interactive").startswith("# medfm-interactive\n")
    described = model_card("sam-vit-b")
    assert "kind: segmenter" in described and "--checkpoint" in described


def test_cli_list_json_and_show(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["models", "list", "--kind", "encoder", "--json"], capsys)
    assert code == 0
    listed = json.loads(out)
    assert {entry["name"] for entry in listed} == set(list_encoders())
    shipped = next(entry for entry in listed if entry["name"] == "medfm-clip-small")
    assert shipped["ships_weights"] and shipped["card"] == "medfm-clip-small.md"
    code, out, _ = run_cli(["models", "show", "medfm-clip-small"], capsys)
    assert code == 0 and out.startswith("# medfm-clip-small")
    code, _, err = run_cli(["models", "list", "--kind", "painter"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_modalities_are_found_by_code_or_word():
    """The configs name modalities by DICOM-style code (US, MR); a user types what `ask` answers (ultrasound, MRI)."""
    for code, word in (("US", "ultrasound"), ("MR", "MRI"), ("XR", "X-ray")):
        assert [e.name for e in list_models(modality=code)] == [e.name for e in list_models(modality=word)]
    shipped = {e.name for e in list_models(modality="ultrasound") if e.ships_weights}
    assert {"medfm-grounding-small", "medfm-interactive", "medfm-gen-fetal-us-64", "medfm-clip-small"} <= shipped
    assert "medfm-grounding-small" in {e.name for e in list_models(organ="fetal head")}
