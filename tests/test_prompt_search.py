"""``medfm optimize-prompts``: random search over zero-shot templates, chosen on validation, measured on test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture)

from medfm.errors import MedfmError
from medfm.io import Image, save
from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.tasks.classify import read_templates
from medfm.train.prompt_search import TemplateSearch, optimize_prompts, split_rows, write_templates

GOOD = "a scan of the {}"


class TemplateSensitiveEncoder(Encoder):
    """Images: their brightness. Texts: the class direction only when worded as a scan, else noise."""

    def __init__(self) -> None:
        self.info = EncoderInfo("template-sensitive", 8, "1" * 64, has_text=True)

    def encode_planes(self, planes):
        rows = []
        for plane in planes:
            level = float(np.asarray(plane, np.float32).mean()) / 255
            rows.append(np.r_[level, 1 - level, np.zeros(6)])
        rows = np.asarray(rows, np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def encode_text(self, texts):
        rows = []
        for text in texts:
            if "scan of" in text:
                rows.append(np.r_[float("bright" in text), float("dark" in text), np.zeros(6)])
            else:
                seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
                rows.append(np.random.default_rng(seed).standard_normal(8))
        rows = np.asarray(rows, np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _embeddings(levels: list[int]) -> np.ndarray:
    return TemplateSensitiveEncoder().encode_planes([np.full((4, 4), level, np.uint8) for level in levels])


def test_the_search_finds_the_template_that_names_the_classes_well() -> None:
    levels = [220, 30, 200, 40, 190, 20, 230, 50]
    labels = ["bright" if level > 128 else "dark" for level in levels]
    search = TemplateSearch(baseline=("{}",), budget=64, seed=0).fit(_embeddings(levels), labels, TemplateSensitiveEncoder())
    assert GOOD in search.templates_ and search.accuracy_ == 1.0
    assert search.baseline_accuracy_ < 1.0 and search.tried_ == 65
    assert search.predict(_embeddings([250, 5])) == ["bright", "dark"]
    with pytest.raises(MedfmError, match="not fitted"):
        TemplateSearch().predict(_embeddings([250]))
    with pytest.raises(MedfmError, match="at least two distinct labels"):
        TemplateSearch().fit(_embeddings([250]), ["bright"], TemplateSensitiveEncoder())
    assert search.best_gain_[1] > 0
    # a baseline that is already the best is kept
    kept = TemplateSearch(baseline=(GOOD,), budget=16).fit(_embeddings(levels), labels, TemplateSensitiveEncoder())
    assert kept.templates_ == [GOOD]
    # so is a baseline that a candidate beats by one image of eight, within noise
    noisy = TemplateSearch(baseline=(GOOD,), budget=16).fit(_embeddings([*levels[:7], 60]), [*labels[:7], "bright"],
                                                             TemplateSensitiveEncoder())
    assert noisy.templates_ == [GOOD] and noisy.best_gain_[1] <= 0


def test_split_rows_by_column_or_stratified_halves() -> None:
    validation, test = split_rows(["a", "b", "a"], ["val", "test", "train"], seed=0)
    assert validation.tolist() == [0] and test.tolist() == [1]
    validation, test = split_rows(["a"] * 5 + ["b"] * 4, None, seed=0)
    assert len(validation) == 5 and len(test) == 4 and not set(validation) & set(test)


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    rows = ["path,label,split"]
    for n in range(16):
        level = 200 + n if n % 2 else 30 + n
        save(Image(np.full((8, 8), level, np.uint8)), tmp_path / f"image{n}.png")
        rows.append(f"image{n}.png,{'bright' if n % 2 else 'dark'},{'val' if n < 8 else 'test'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "labels.csv"


def test_optimize_prompts_measures_the_held_out_gain_and_writes_a_templates_file(labelled: Path, tmp_path: Path) -> None:
    result = optimize_prompts(labelled, "label", TemplateSensitiveEncoder(), split_column="split", baseline=("{}",),
                              budget=32, cache=False)
    assert result["validation"]["n"] == 8 and result["test"]["n"] == 8
    assert result["test"]["chosen"][0] == 1.0
    assert result["test"]["gain"][0] == pytest.approx(1.0 - result["test"]["baseline"][0])
    assert result["provenance"].parameters["method"] == "template random search"
    path = write_templates(result, tmp_path / "templates.txt")
    assert read_templates(path) == result["templates"]
    with pytest.raises(MedfmError, match="needs validation and test rows"):
        optimize_prompts(labelled, "label", TemplateSensitiveEncoder(), split_column="label", cache=False)
    with pytest.raises(MedfmError, match="no column 'diagnosis'"):
        optimize_prompts(labelled, "diagnosis", TemplateSensitiveEncoder(), cache=False)


@pytest.mark.usefixtures("fake_models")
def test_cli(labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["optimize-prompts", str(labelled), "--label-column", "label", "--split-column", "split",
                              "--model", "fake-clip", "--budget", "8", "-o", str(tmp_path / "chosen.txt"), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert read_templates(tmp_path / "chosen.txt") == result["templates"]
    code, out, err = run_cli(["classify", str(labelled.parent / "image1.png"), "--labels", "bright,dark", "--model", "fake-clip",
                              "--templates", str(tmp_path / "chosen.txt"), "--json"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["optimize-prompts", str(labelled), "--label-column", "label", "--model", "fake-clip",
                              "-o", str(tmp_path / "missing" / "chosen.txt")], capsys)
    assert code == 2 and err.count("\n") == 1
