"""Report drafting, closed questions and text metrics, with the fake encoder and generated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import FakeEncoder, fake_models  # noqa: F401  (the fixture)

from medfm.errors import MedfmError
from medfm.eval.evaluate_text import evaluate_answers, evaluate_reports
from medfm.eval.text_metrics import answer_correct, bleu4, mentioned_terms, meteor, open_answer_recall, rouge_l, term_f1
from medfm.index import open_index
from medfm.io import Image, save
from medfm.tasks.ask import CANNOT_TELL, MAX_QUESTION_CHARS, ask, parse_question
from medfm.tasks.report import Context, compose, cut_by_ratio, draft_report, sentences
from medfm.tasks.search import build_index

PATIENT_FOLDER = "Doe^Jane"
BRIGHT_CAPTION = "Large mass in the liver. Small pleural effusion on 03/04/2011."
DARK_CAPTION = "Normal brain without hemorrhage. Ventricles are normal."


def _png(path: Path, level: int, seed: int) -> Path:
    pixels = (level + np.random.default_rng(seed).integers(0, 40, (32, 32))).astype(np.uint8)
    return save(Image(pixels), path)


@pytest.fixture
def captioned(tmp_path: Path) -> dict:
    """Eight indexed PNGs in a folder named like a patient: bright ones captioned about the liver, dark about the brain."""
    folder = tmp_path / PATIENT_FOLDER
    folder.mkdir()
    metadata = {}
    for i in range(8):
        path = _png(folder / f"case{i}.png", 190 if i % 2 == 0 else 15, i)
        metadata[str(path)] = {"caption": BRIGHT_CAPTION if i % 2 == 0 else DARK_CAPTION}
    report = build_index([], FakeEncoder(), tmp_path / "index", metadata=metadata)
    assert report.added == 8
    return {"index": tmp_path / "index", "bright": _png(tmp_path / "bright.png", 200, 99),
            "dark": _png(tmp_path / "dark.png", 10, 98), "root": tmp_path}


def test_index_stores_manifest_captions(captioned: dict) -> None:
    with open_index(captioned["index"]) as store:
        captions = {metadata["caption"] for _, metadata in store.records()}
    assert captions == {BRIGHT_CAPTION, DARK_CAPTION}


def test_ratio_cut_keeps_contexts_close_to_the_best() -> None:
    contexts = [Context(1, 0.5, "a b"), Context(2, 0.9, "c d"), Context(3, 0.8, "e f")]
    assert [c.id for c in cut_by_ratio(contexts, 0.85)] == [2, 3]
    assert [c.id for c in cut_by_ratio(contexts, 1.0)] == [2]
    assert [c.id for c in cut_by_ratio([Context(1, -0.2, "a b"), Context(2, -0.3, "c d")], 0.5)] == [1]
    with pytest.raises(MedfmError, match="ratio"):
        cut_by_ratio(contexts, 1.5)


def test_compose_prefers_what_the_cases_agree_on() -> None:
    agreed = "Mass in the right kidney."
    contexts = [Context(1, 0.9, "Odd artefact at the edge of the film. " + agreed),
                Context(2, 0.8, agreed + " Cyst nearby."), Context(3, 0.8, "There is a mass in the right kidney.")]
    drafted = compose(contexts, max_sentences=1)
    assert [s.text for s in drafted] == [agreed]
    assert drafted[0].source in (1, 2) and drafted[0].support > 0
    # a near-repeat of a chosen sentence is skipped
    assert len({s.text.lower() for s in compose(contexts, max_sentences=3)}) == 3
    assert sentences("One finding here.\n2. Another finding there") == ["One finding here.", "Another finding there."]


def test_draft_report_links_sentences_and_hides_identifiers(captioned: dict) -> None:
    with open_index(captioned["index"]) as store:
        result = draft_report(captioned["bright"], FakeEncoder(), store, k=4, ratio=0.5)
        indexed = dict(store.records())
    assert result["sentences"], result
    for sentence in result["sentences"]:
        assert indexed[sentence["source"]]["caption"] == BRIGHT_CAPTION
        assert sentence["text"].rstrip(".").replace("[redacted]", "") in BRIGHT_CAPTION
    assert "liver" in result["draft"] and "brain" not in result["draft"]
    text = json.dumps({**result, "provenance": result["provenance"].to_dict()})
    assert PATIENT_FOLDER not in text and "03/04/2011" not in text
    assert result["provenance"].kind == "report"
    assert {f"index-item:{c['id']}" for c in result["contexts"]} <= set(result["provenance"].inputs)
    assert result["route"]["modality"]["source"] == "image"  # a PNG records no modality


def test_a_study_that_records_its_modality_is_routed_by_it(captioned: dict) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    study = captioned["index"].parent / "mr.dcm"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality = "MR"
    ds.save_as(study)
    with open_index(captioned["index"]) as store:
        result = draft_report(study, FakeEncoder(), store, k=4, ratio=0.5)
    assert result["route"]["modality"] | {"similarity": None} == {"key": "mri", "label": "MRI", "probability": 1.0,
                                                                  "similarity": None, "abstained": False,
                                                                  "source": "DICOM header"}


def test_draft_report_refuses_an_index_without_captions_or_of_another_model(tmp_path: Path, captioned: dict) -> None:
    build_index([captioned["bright"]], FakeEncoder(), tmp_path / "bare")
    with open_index(tmp_path / "bare") as store, pytest.raises(MedfmError, match="caption"):
        draft_report(captioned["bright"], FakeEncoder(), store)
    with open_index(captioned["index"]) as store, pytest.raises(MedfmError):
        draft_report(captioned["bright"], FakeEncoder("other-clip", seed=1), store)


def test_parse_question_label_sets() -> None:
    assert parse_question("What imaging modality is this?").kind == "modality"
    assert parse_question("Which body part is shown?").kind == "region"
    yes_no = parse_question("Is this a CT?")
    assert (yes_no.kind, yes_no.expected) == ("modality", "CT")
    presence = parse_question("Is there a pleural effusion?")
    assert presence.labels == ("pleural effusion", "no pleural effusion")
    assert parse_question("Is it bright, grey or dark?").labels == ("bright", "grey", "dark")
    assert parse_question("anything", choices=["x", "y"]).labels == ("x", "y")
    for bad, message in (("   ", "empty"), ("x" * (MAX_QUESTION_CHARS + 1), "characters"), ("Tell me a story", "cannot parse")):
        with pytest.raises(MedfmError, match=message):
            parse_question(bad)


def test_ask_answers_aggregates_and_abstains(captioned: dict) -> None:
    encoder = FakeEncoder()
    assert ask([captioned["bright"]], "Is it bright or dark?", encoder)["answer"] == "bright"
    assert ask([captioned["dark"]], "Is it bright or dark?", encoder)["answer"] == "dark"
    several = ask([captioned["bright"], captioned["bright"], captioned["dark"]], "Is it bright or dark?", encoder)
    assert several["answer"] == "bright" and [i["prediction"] for i in several["per_image"]] == ["bright", "bright", "dark"]
    assert ask([captioned["bright"]], "Is it bright or dark?", encoder, abstain_below=1.01)["answer"] == CANNOT_TELL
    # thresholds by axis: a body-region question reads its own, every other kind the default
    by_axis = {"default": -1.0, "region": 1.01}
    region = ask([captioned["bright"]], "Which body region is shown?", encoder, abstain_below=by_axis)
    modality = ask([captioned["bright"]], "What imaging modality is this?", encoder, abstain_below=by_axis)
    assert region["answer"] == CANNOT_TELL and modality["answer"] != CANNOT_TELL
    assert region["provenance"].parameters["abstain_below"] == 1.01 and modality["provenance"].parameters["abstain_below"] == -1.0
    with open_index(captioned["index"]) as store:
        result = ask([captioned["dark"]], "Is it bright or dark?", encoder, index=store, k=2)
    assert [hit["caption"] for hit in result["evidence"]] == [DARK_CAPTION, DARK_CAPTION]
    assert "path" not in result["evidence"][0] and result["provenance"].kind == "report"
    with pytest.raises(MedfmError, match="at least one image"):
        ask([], "Is it bright or dark?", encoder)


def test_a_modality_the_dicom_header_records_answers_a_modality_question(tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    encoder = FakeEncoder()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    files = {}
    for code in ("CT", "MR", "OT"):
        ds.Modality = code
        files[code] = tmp_path / f"{code}.dcm"
        ds.save_as(files[code])
    pixels = ask([files["OT"]], "What imaging modality is this?", encoder)  # nothing recorded: the pixels answer
    assert "image_prediction" not in pixels and pixels["method"] == "zero-shot closed question"
    for code, label in (("CT", "CT"), ("MR", "MRI")):
        result = ask([files[code]], "What imaging modality is this?", encoder)
        assert result["answer"] == label and result["confidence"] == 1.0 and result["method"] == "recorded modality (DICOM header)"
        assert result["image_prediction"] == pixels["prediction"]  # the pixels' reading stays beside the record
    assert ask([files["CT"]], "Is this an MRI?", encoder)["answer"] == "no"
    assert ask([files["MR"]], "Is this an MRI?", encoder)["answer"] == "yes"
    assert "image_prediction" not in ask([files["CT"], files["MR"]], "What imaging modality is this?", encoder)  # they disagree
    assert "image_prediction" not in ask([files["CT"]], "Which body region is shown?", encoder)


def test_text_metrics() -> None:
    assert bleu4(["the liver mass is large today"], ["the liver mass is large today"]) == pytest.approx(1.0)
    assert bleu4(["nothing alike"], ["the liver mass is large today"]) < 0.1
    assert rouge_l("mass in the liver", "mass in the liver") == pytest.approx(1.0)
    assert mentioned_terms("Small pleural effusions and a liver mass") == {"pleural effusion", "liver", "mass"}
    assert term_f1("liver mass", "liver cyst") == pytest.approx(0.5)
    assert term_f1("no words to match", "none here either") == 1.0
    assert answer_correct("The CT.", "ct") == 1.0 and answer_correct("MRI", "CT") == 0.0
    assert open_answer_recall("A large mass in the left lobe", "left lobe masses") == 1.0
    assert open_answer_recall("right lobe", "left lobe mass") == pytest.approx(1 / 3)


def test_meteor_matches_its_hand_computed_value() -> None:
    # identical: P = R = 1, one chunk of 4 matches → 1 − 0.5·(1/4)³
    assert meteor("Small left pleural effusion.", "small left pleural effusion") == pytest.approx(1 - 0.5 / 64)
    # "seen" exact and "effusions"~"effusion" by stem: P = 2/3, R = 1/2, Fmean = PR/(0.9P + 0.1R) = 0.5128...;
    # two chunks of two matches → penalty 0.5·1³
    fmean = (2 / 3 * 1 / 2) / (0.9 * 2 / 3 + 0.1 * 1 / 2)
    assert meteor("effusions are seen", "an effusion is seen") == pytest.approx(fmean * 0.5)
    assert meteor("fluid", "effusion") == 0.0  # no WordNet synonym stage offline


def test_evaluate_files(tmp_path: Path) -> None:
    (tmp_path / "gold.csv").write_text("id,text\na,Liver mass.\nb,Brain hemorrhage.\n")
    (tmp_path / "pred.jsonl").write_text('{"id": "a", "text": "Liver mass."}\n{"id": "b", "text": "Normal lungs."}\n')
    result = evaluate_reports(tmp_path / "pred.jsonl", tmp_path / "gold.csv", n_boot=50)
    assert result["n"] == 2 and result["metrics"]["term_f1"]["value"] == pytest.approx(0.5)
    assert [c["rouge_l"] for c in result["cases"]][0] == pytest.approx(1.0)
    assert result["cases"][0]["meteor"] == pytest.approx(1 - 0.5 / 8) and result["cases"][1]["meteor"] == 0.0
    assert result["metrics"]["meteor"]["value"] == pytest.approx((1 - 0.5 / 8) / 2)
    (tmp_path / "gold_vqa.csv").write_text("id,answer\n1,CT\n2,MRI\n3,yes\n")
    (tmp_path / "pred_vqa.csv").write_text("id,answer\n1,ct\n2,CT\n3,Yes.\n")
    assert evaluate_answers(tmp_path / "pred_vqa.csv", tmp_path / "gold_vqa.csv", n_boot=50)["metrics"]["accuracy"]["value"] == pytest.approx(2 / 3)
    (tmp_path / "gold_mixed.csv").write_text("id,answer,type\n1,CT,closed\n2,left lobe mass,open\n3,yes,\n")
    (tmp_path / "pred_mixed.csv").write_text("id,answer\n1,ct\n2,a mass in the right lobe\n3,no\n")
    mixed = evaluate_answers(tmp_path / "pred_mixed.csv", tmp_path / "gold_mixed.csv", n_boot=50)
    assert mixed["metrics"]["accuracy"]["value"] == pytest.approx(1 / 2)  # questions 1 and 3 (type left empty: closed)
    assert mixed["metrics"]["open_recall"]["value"] == pytest.approx(2 / 3)
    assert mixed["metrics"]["overall"]["value"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert [c["type"] for c in mixed["cases"]] == ["closed", "open", "closed"]
    (tmp_path / "gold_bad.csv").write_text("id,answer,type\n1,CT,multiple\n2,MRI,\n3,yes,\n")
    with pytest.raises(MedfmError, match="gold_bad.csv: question type 'multiple' is not one of closed, open"):
        evaluate_answers(tmp_path / "pred_vqa.csv", tmp_path / "gold_bad.csv")
    (tmp_path / "short.csv").write_text("id,answer\n1,ct\n")
    with pytest.raises(MedfmError, match="no prediction"):
        evaluate_answers(tmp_path / "short.csv", tmp_path / "gold_vqa.csv")


@pytest.mark.usefixtures("fake_models")
def test_ask_with_a_prompt_set_of_templates_and_phrasings(captioned: dict, capsys: pytest.CaptureFixture) -> None:
    # the fake text tower knows "bright" and "dark": "pale" says nothing of brightness until phrased as "bright"
    prompts = captioned["root"] / "prompts.json"
    prompts.write_text(json.dumps({"templates": ["a {} picture"], "phrasings": {"pale": ["bright"], "grey": ["dim"]}}))
    (captioned["root"] / "plain.txt").write_text("a {} picture\n")
    answers = {}
    for path in (prompts, captioned["root"] / "plain.txt"):
        code, out, err = run_cli(["ask", str(captioned["bright"]), "Is it pale or dark?", "--model", "fake-clip",
                                  "--abstain-threshold", "0.1", "--templates", str(path), "--json"], capsys)
        assert code == 0, err
        answers[path.suffix] = json.loads(out)
    phrased, plain = answers[".json"], answers[".txt"]
    assert phrased["answer"] == "pale" and phrased["probabilities"]["pale"] > plain["probabilities"]["pale"]
    assert phrased["provenance"]["parameters"]["phrasings"] == {"pale": ["bright"]}
    assert phrased["provenance"]["parameters"]["templates"] == ["a {} picture"]
    code, _, err = run_cli(["ask", str(captioned["bright"]), "Is it pale or dark?", "--model", str(captioned["root"]),
                            "--templates", str(prompts)], capsys)
    assert code == 2 and err.count("\n") == 1 and "--templates" in err


@pytest.mark.usefixtures("fake_models")
def test_cli(captioned: dict, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["report", str(captioned["dark"]), "--index", str(captioned["index"]), "--abstain-threshold", "0.1",
                              "--ratio", "0.5", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert "brain" in result["draft"].lower() and PATIENT_FOLDER not in out and result["provenance"]["kind"] == "report"
    code, out, err = run_cli(["ask", str(captioned["bright"]), "Is it bright or dark?", "--model", "fake-clip",
                              "--abstain-threshold", "0.1", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["answer"] == "bright"
    code, out, err = run_cli(["ask", "Is it bright or dark?", "--model", "fake-clip", "--abstain-threshold", "0.1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "at least one image" in err
    (captioned["root"] / "gold.csv").write_text("id,answer\n1,bright\n")
    code, out, err = run_cli(["evaluate", "vqa", str(captioned["root"] / "gold.csv"), str(captioned["root"] / "gold.csv"),
                              "--n-boot", "20", "--json"], capsys)
    assert code == 0 and json.loads(out)["metrics"]["accuracy"]["value"] == 1.0
