"""``medfm optimize-prompts --vlm``: bootstrapped few-shot demonstrations and random-searched instructions for a
local vision-language model, chosen on validation rows, measured on test rows, loaded by ``ask --prompts``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from tinyvlms import tiny_model

from medfm.errors import MedfmError
from medfm.io import Image, save
from medfm.models.language import LanguageModel, LanguageModelInfo
from medfm.tasks.vlm import PromptSet, ask_model, read_prompt_set
from medfm.train.vlm_prompts import optimize_vlm_prompts, write_prompt_set


class TerseWhenShown(LanguageModel):
    """Sees whether the picture is bright; answers "yes"/"no" only when the prompt holds a demonstration,
    otherwise in a sentence that exact matching counts wrong. Keeps every prompt it was given."""

    def __init__(self, sha: str = "a" * 64) -> None:
        self.info = LanguageModelInfo("terse", "gemma3", sha, 4)
        self.prompts: list[str] = []

    def stream(self, images: Sequence[np.ndarray], prompt: str, *, max_new_tokens: int = 8) -> Iterator[str]:
        self.prompts.append(prompt)
        answer = "yes" if np.mean(images[0]) > 128 else "no"
        yield answer if "\nAnswer: " in prompt else f"I believe the answer is {answer}."


@pytest.fixture
def questions(tmp_path: Path) -> Path:
    """Bright and dark pictures asked "Is there a bright region?": 4 train, 6 val, 6 test rows; row n's dark
    picture has grey value 30 + n, so that a model can tell the rows apart."""
    rows = ["path,question,answer,split"]
    for n, split in enumerate(["train"] * 4 + ["val"] * 6 + ["test"] * 6):
        bright = n % 2 == 0
        save(Image(np.full((16, 16), 220 if bright else 30 + n, np.uint8)), tmp_path / f"q{n}.png")
        rows.append(f"q{n}.png,Is there a bright region?,{'yes' if bright else 'no'},{split}")
    (tmp_path / "vqa.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "vqa.csv"


def test_demonstrations_are_chosen_when_they_help_and_measured_on_test(questions: Path, tmp_path: Path) -> None:
    model = TerseWhenShown()
    result = optimize_vlm_prompts(questions, model, budget=6, seed=0)
    chosen = result["prompt_set"]
    assert chosen["demonstrations"] and not result["validation"]["kept_baseline"]
    # the bare question never matches, so no train row was answered right: every train row was a candidate
    assert result["bootstrapped"] == {"tried": 4, "answered_right": 0, "pool": "every train row (none answered right)"}
    assert all(d["question"] == "Is there a bright region?" and d["answer"] in ("yes", "no") for d in chosen["demonstrations"])
    assert (result["validation"]["chosen"], result["validation"]["baseline"]) == (1.0, 0.0)
    assert result["test"]["n"] == 6 and result["test"]["chosen"][0] == 1.0 and result["test"]["baseline"][0] == 0.0
    path = write_prompt_set(result, tmp_path / "prompts.json")
    prompts = read_prompt_set(path, model)
    answer = ask_model([questions.parent / "q0.png"], "Is there a bright region?", model, prompts=prompts)
    assert answer["answer"] == "yes" and answer["provenance"].parameters["demonstrations"] == len(chosen["demonstrations"])
    assert model.prompts[-1] == prompts.render("Is there a bright region?")
    assert model.prompts[-1].endswith("Question: Is there a bright region?\nAnswer:")


def test_a_gain_within_validation_noise_keeps_the_bare_question(questions: Path) -> None:
    class SlightlyBetterWhenShown(TerseWhenShown):
        """Says "yes" to everything, except that a demonstration makes it right about row 5's dark picture
        alone: one validation row in six, a best gain whose interval still reaches 0."""

        def stream(self, images, prompt, *, max_new_tokens=8):
            self.prompts.append(prompt)
            yield "no" if "\nAnswer: " in prompt and round(float(np.mean(images[0]))) == 35 else "yes"

    result = optimize_vlm_prompts(questions, SlightlyBetterWhenShown(), budget=5, seed=1)
    assert result["validation"]["best_gain"][0] == pytest.approx(1 / 6, abs=1e-4) and result["validation"]["best_gain"][1] <= 0
    assert result["validation"]["kept_baseline"] and result["prompt_set"] == {"instruction": "", "demonstrations": []}
    assert result["bootstrapped"]["answered_right"] == 2  # the bright train rows: their demonstrations form the pool
    assert result["test"]["gain"][0] == 0.0


def test_the_bare_prompt_set_asks_the_question_alone() -> None:
    assert PromptSet().render("What is shown?") == "What is shown?"
    assert PromptSet("Answer briefly.", (("Is it a CT?", "yes"),)).render("What is shown?") == \
        "Answer briefly.\n\nQuestion: Is it a CT?\nAnswer: yes\n\nQuestion: What is shown?\nAnswer:"


def test_bad_manifests_and_files_are_refused_in_one_line(questions: Path, tmp_path: Path) -> None:
    text = questions.read_text().replace(",train", ",val")
    (tmp_path / "no_train.csv").write_text(text)
    with pytest.raises(MedfmError, match=r"no_train.csv: the search needs train \(demonstrations\), val and test rows in 'split'; "
                                         r"got 0 train, 10 val, 6 test"):
        optimize_vlm_prompts(tmp_path / "no_train.csv", TerseWhenShown())
    result = optimize_vlm_prompts(questions, TerseWhenShown(), budget=2)
    path = write_prompt_set(result, tmp_path / "prompts.json")
    with pytest.raises(MedfmError, match=r"prompts.json: chosen for 'terse' \(weights sha256 aaaaaaaaaaaa…\), not for 'terse'"):
        read_prompt_set(path, TerseWhenShown(sha="b" * 64))
    (tmp_path / "other.json").write_text(json.dumps({"templates": ["a {}"]}))
    with pytest.raises(MedfmError, match=r"other.json: not a prompt set of medfm optimize-prompts --vlm"):
        read_prompt_set(tmp_path / "other.json", TerseWhenShown())


def test_cli_chooses_prompts_for_a_local_model_and_ask_uses_them(questions: Path, tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    model, processor = tiny_model("gemma3")
    folder = tmp_path / "tiny-medgemma"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    code, out, err = run_cli(["optimize-prompts", str(questions), "--vlm", str(folder), "--budget", "2", "-o",
                              str(tmp_path / "prompts.json"), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["test"]["n"] == 6 and result["validation"]["tried"] >= 1
    saved = json.loads((tmp_path / "prompts.json").read_text())
    assert saved["model"] == "tiny-medgemma" and saved["instruction"] == result["prompt_set"]["instruction"]
    code, out, err = run_cli(["ask", str(questions.parent / "q0.png"), "Is there a bright region?", "--model", str(folder),
                              "--prompts", str(tmp_path / "prompts.json"), "--max-new-tokens", "3", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["provenance"]["model"] == "tiny-medgemma"
    for args, message in ((["optimize-prompts", str(questions), "-o", str(tmp_path / "p.json")], "give --label-column"),
                          (["optimize-prompts", str(questions), "--vlm", str(folder), "--templates", "t.txt", "-o",
                            str(tmp_path / "p.json")], "--templates apply to zero-shot templates, not to --vlm"),
                          (["ask", str(questions.parent / "q0.png"), "Is it?", "--prompts", str(tmp_path / "prompts.json")],
                           "--prompts applies to a language model")):
        code, out, err = run_cli(args, capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err
