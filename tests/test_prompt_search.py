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
    assert read_templates(path) == (result["templates"], {})
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
    assert read_templates(tmp_path / "chosen.txt") == (result["templates"], {})
    code, out, err = run_cli(["classify", str(labelled.parent / "image1.png"), "--labels", "bright,dark", "--model", "fake-clip",
                              "--templates", str(tmp_path / "chosen.txt"), "--json"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["optimize-prompts", str(labelled), "--label-column", "label", "--model", "fake-clip",
                              "-o", str(tmp_path / "missing" / "chosen.txt")], capsys)
    assert code == 2 and err.count("\n") == 1


class PhrasingSensitiveEncoder(TemplateSensitiveEncoder):
    """Texts, whatever the template: the bright direction for the word "bright", the dark one for "dark",
    else one fixed direction no image has (every other label text is alike, and unlike every image)."""

    def encode_text(self, texts):
        return np.array([[float("bright" in text.split()), float("dark" in text.split()),
                          float(not {"bright", "dark"} & set(text.split())), 0, 0, 0, 0, 0] for text in texts], np.float32)


def test_the_search_finds_the_phrasings_that_name_the_classes() -> None:
    levels = [220, 30, 200, 40, 190, 20, 230, 50]
    labels = ["L1" if level > 128 else "L2" for level in levels]
    search = TemplateSearch(baseline=("{}",), bank=("{}",), phrasings={"L1": ["bright"], "L2": ["dark"]}, budget=64)
    search.fit(_embeddings(levels), labels, PhrasingSensitiveEncoder())
    # as themselves the two labels are one text: every image ties and goes to the first label, half of them right;
    # each label with its phrasing alone (or beside itself) is a class direction: all right, the fewest texts kept
    assert search.baseline_accuracy_ == 0.5 and search.accuracy_ == 1.0 and search.best_gain_[1] > 0
    assert search.templates_ == ["{}"] and search.phrasings_ == {"L1": ["bright"], "L2": ["dark"]}
    assert search.predict(_embeddings([250, 5])) == ["L1", "L2"]
    assert search.predict(_embeddings([250, 5]), ["{}"]) == ["L1", "L1"]  # the labels as themselves
    with pytest.raises(MedfmError, match=r"phrasings for labels \['L3'\]"):
        TemplateSearch(phrasings={"L3": ["x"]}).fit(_embeddings(levels), labels, PhrasingSensitiveEncoder())


def test_the_noise_guard_keeps_the_baseline_against_a_phrasing_that_wins_one_image() -> None:
    # "dark" beside "umbra" (the direction no image has) moves the border from brightness 0.5 to 1/(1+sqrt(2)) = 0.41:
    # the image of level 115 (0.45), labelled bright, comes right; one image of eight is within noise
    levels = [220, 30, 200, 40, 190, 20, 230, 115]
    labels = ["bright" if level > 100 else "dark" for level in levels]
    search = TemplateSearch(baseline=("{}",), bank=("{}",), phrasings={"dark": ["umbra"]}, budget=16)
    search.fit(_embeddings(levels), labels, PhrasingSensitiveEncoder())
    assert search.best_gain_[0] == 0.125 and search.best_gain_[1] <= 0
    assert search.kept_baseline_ and search.phrasings_ == {} and search.accuracy_ == search.baseline_accuracy_ == 0.875


@pytest.fixture
def coded(labelled: Path) -> Path:
    """The labelled images under opaque labels: L1 for bright, L2 for dark."""
    text = labelled.read_text().replace(",bright,", ",L1,").replace(",dark,", ",L2,")
    (labelled.parent / "coded.csv").write_text(text)
    return labelled.parent / "coded.csv"


def test_optimize_prompts_with_phrasings_writes_a_json_prompt_set_that_classify_reads(coded: Path, tmp_path: Path) -> None:
    from medfm.tasks.classify import classify

    result = optimize_prompts(coded, "label", PhrasingSensitiveEncoder(), split_column="split", baseline=("{}",),
                              phrasings={"L1": ["bright"], "L2": ["dark"]}, budget=32, cache=False)
    chosen = result["phrasings"]
    assert "bright" in chosen["L1"] and "dark" in chosen["L2"] and not result["validation"]["kept_baseline"]
    assert result["test"]["chosen"][0] == 1.0 and result["test"]["baseline"][0] == 0.5
    assert result["provenance"].parameters["phrasings"] == {"L1": ("bright",), "L2": ("dark",)}  # frozen
    with pytest.raises(MedfmError, match="cannot hold"):
        write_templates(result, tmp_path / "chosen.txt")
    assert not (tmp_path / "chosen.txt").exists()
    path = write_templates(result, tmp_path / "chosen.json")
    assert read_templates(path) == (result["templates"], chosen)
    templates, phrasings = read_templates(path)
    image = [str(coded.parent / "image1.png")]  # a bright one
    phrased = classify(image, PhrasingSensitiveEncoder(), labels=["L1", "L2"], templates=templates, phrasings=phrasings)[0]
    plain = classify(image, PhrasingSensitiveEncoder(), labels=["L1", "L2"], templates=templates)[0]
    # as themselves the labels are one text (even odds); phrased, the bright image is L1's
    assert plain["probabilities"] == {"L1": 0.5, "L2": 0.5} and "phrasings" not in plain
    assert phrased["prediction"] == "L1" and phrased["probabilities"]["L1"] > 0.99
    assert phrased["phrasings"] == chosen == {label: list(texts) for label, texts in phrased["provenance"].parameters["phrasings"].items()}
    # a baseline with phrasings in use is measured with them: nothing beats it, so the search keeps it
    again = optimize_prompts(coded, "label", PhrasingSensitiveEncoder(), split_column="split", baseline=templates,
                             baseline_phrasings=phrasings, budget=8, cache=False)
    assert again["validation"]["kept_baseline"] and again["phrasings"] == chosen and again["test"]["baseline"][0] == 1.0


@pytest.mark.usefixtures("fake_models")
def test_cli_with_phrasings(labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    phrasings = tmp_path / "phrasings.json"
    phrasings.write_text(json.dumps({"bright": ["light", "a bright one"], "dark": ["shadow"]}))
    options = ["optimize-prompts", str(labelled), "--label-column", "label", "--split-column", "split", "--model", "fake-clip",
               "--budget", "8", "--phrasings", str(phrasings)]
    code, out, err = run_cli([*options, "-o", str(tmp_path / "chosen.json"), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert read_templates(tmp_path / "chosen.json") == (result["templates"], result["phrasings"])
    saved = json.loads((tmp_path / "chosen.json").read_text())
    assert saved["model"] == "fake-clip" and saved["test"] == result["test"]
    code, out, err = run_cli(["classify", str(labelled.parent / "image1.png"), "--labels", "bright,dark", "--model", "fake-clip",
                              "--templates", str(tmp_path / "chosen.json"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0].get("phrasings", {}) == result["phrasings"]
    # a text file cannot hold phrasings: refused before the search
    code, _, err = run_cli([*options, "-o", str(tmp_path / "chosen.txt")], capsys)
    assert code == 2 and "need a .json prompts file" in err and err.count("\n") == 1 and not (tmp_path / "chosen.txt").exists()


@pytest.mark.usefixtures("fake_models")
@pytest.mark.parametrize(("content", "message"), [
    ("not json", "cannot read the phrasings file"),
    ('["bright", "light"]', "the phrasings file must hold a JSON object"),
    ('{"bright": "light"}', "the phrasings of 'bright' must be a non-empty list of non-empty texts"),
    ('{"bright": []}', "the phrasings of 'bright' must be a non-empty list of non-empty texts"),
    ('{"dark": ["shadow", " "]}', "the phrasings of 'dark' must be a non-empty list of non-empty texts"),
    ('{"bright": ["light"], "grey": ["dim"]}', "phrasings for labels ['grey'] that are not among the labels ['bright', 'dark']"),
])
def test_bad_phrasings_files_are_one_line_errors(content: str, message: str, labelled: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.json").write_text(content)
    code, _, err = run_cli(["optimize-prompts", str(labelled), "--label-column", "label", "--phrasings", str(tmp_path / "bad.json"),
                            "--model", "fake-clip", "-o", str(tmp_path / "chosen.json")], capsys)
    assert code == 2 and err.startswith(f"medfm: error: {tmp_path / 'bad.json'}: ") and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "chosen.json").exists()
