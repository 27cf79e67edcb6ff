"""``medfm evaluate retrieval|zeroshot``: hand-checked measures on tiny embeddings, and the CLI on generated images."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture)
from PIL import Image as PILImage

from medfm.eval.retrieval import leave_one_out_retrieval, recall_at_k, summarise_by_class, zero_shot_summary


def unit(rows):
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_leave_one_out_precision_and_average_precision_by_hand():
    # a0's neighbours by cosine: a1 (0.99), b0 (0.8), b1 (0.0) → P@1 = 1, AP = 1
    # b0's neighbours: a1 (0.88), a0 (0.8), b1 (0.6) (b1 is the only relevant, ranked third) → P@1 = 0, AP = 1/3
    embeddings = unit([[1, 0], [0.99, 0.14], [0.8, 0.6], [0, 1]])
    labels = ["a", "a", "b", "b"]
    measures = leave_one_out_retrieval(embeddings, labels, ks=(1, 2))
    assert measures["precision@1"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert measures["precision@2"][2] == 0.0
    np.testing.assert_allclose(measures["average_precision"], [1.0, 1.0, 1 / 3, 1.0])
    summary = summarise_by_class(measures, labels, n_boot=50)
    assert summary["overall"]["mAP"]["value"] == pytest.approx((3 + 1 / 3) / 4)
    assert summary["by_class"]["b"]["mAP"]["value"] == pytest.approx(2 / 3)
    assert summary["by_class"]["a"]["n"] == 2


def test_a_querys_own_group_is_not_its_gallery():
    embeddings = unit([[1, 0], [1, 0.01], [0.9, 0.4], [0, 1]])
    labels = ["a", "a", "b", "a"]
    # rows 0 and 1 are one patient: without groups row 0 finds row 1 first; with groups it must look further
    assert leave_one_out_retrieval(embeddings, labels, ks=(1,))["precision@1"][0] == 1.0
    grouped = leave_one_out_retrieval(embeddings, labels, ks=(1,), groups=["p", "p", "q", "r"])
    assert grouped["precision@1"][0] == 0.0


def test_recall_at_k_counts_a_query_found_among_its_relevant_images():
    images = unit([[1, 0], [0, 1], [1, 1]])
    texts = unit([[1, 0.1], [0.1, 1]])
    assert recall_at_k(texts, images, [{1}, {1}], k=1) == 0.5
    assert recall_at_k(texts, images, [{1}, {1}], k=3) == 1.0


def test_zero_shot_summary_accuracy_and_macro_auc():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])
    labels = np.array([0, 1, 1, 0])
    result = zero_shot_summary(probs, labels, ["x", "y", "z"], n_boot=50)
    assert result["accuracy"]["value"] == 0.5
    # class 0 scores: positives 0.9, 0.3 vs negatives 0.2, 0.6 → 3 of 4 pairs; class 1 likewise
    assert result["macro_auc"]["value"] == pytest.approx(0.75)
    assert set(result["by_class"]) == {"x", "y"}  # z is offered but never true: no AUC


def _manifest(tmp_path, shades):
    rows = []
    for index, (shade, label) in enumerate(shades):
        noise = np.random.default_rng(index).integers(0, 20, (24, 24))
        PILImage.fromarray(np.clip(shade + noise, 0, 255).astype(np.uint8)).save(tmp_path / f"im{index}.png")
        rows.append({"path": f"im{index}.png", "label": label, "caption": f"a {label} picture"})
    with open(tmp_path / "m.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / "m.csv"


@pytest.mark.usefixtures("fake_models")
def test_cli_retrieval_and_zeroshot_separate_bright_from_dark(tmp_path, capsys):
    manifest = _manifest(tmp_path, [(230, "bright"), (220, "bright"), (240, "bright"), (20, "dark"), (30, "dark"), (10, "dark")])
    code, out, err = run_cli(["evaluate", "retrieval", str(manifest), "--model", "fake-clip", "--caption-column", "caption",
                              "--n-boot", "50", "--json", "--report", str(tmp_path / "r.html")], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["image_to_image"]["overall"]["precision@1"]["value"] == 1.0
    assert result["text_to_image"]["recall@1"]["value"] == 1.0
    assert "Image → image" in (tmp_path / "r.html").read_text()
    code, out, err = run_cli(["evaluate", "zeroshot", str(manifest), "--model", "fake-clip", "--n-boot", "50", "--json",
                              "--template", "a {} image"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["accuracy"]["value"] == 1.0 and result["macro_auc"]["value"] == 1.0


@pytest.mark.usefixtures("fake_models")
def test_cli_refuses_a_single_image(tmp_path, capsys):
    manifest = _manifest(tmp_path, [(230, "bright")])
    code, _, err = run_cli(["evaluate", "retrieval", str(manifest), "--model", "fake-clip"], capsys)
    assert code == 2
    assert "m.csv: 1 image(s); an evaluation needs at least 2" in err and len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("fake_models")
def test_cli_zeroshot_refuses_a_single_label(tmp_path, capsys):
    manifest = _manifest(tmp_path, [(230, "bright"), (220, "bright"), (240, "bright")])
    code, out, err = run_cli(["evaluate", "zeroshot", str(manifest), "--model", "fake-clip", "--n-boot", "10"], capsys)
    assert code == 2 and out == ""
    assert err == (f"medfm: error: {manifest}: zero-shot evaluation needs at least two distinct labels in column "
                   "'label'; got ['bright']\n")


@pytest.mark.usefixtures("fake_models")
def test_cli_retrieval_refuses_a_cutoff_past_the_candidates_and_keeps_the_defaults_within_them(tmp_path, capsys):
    manifest = _manifest(tmp_path, [(230, "bright"), (220, "bright"), (240, "bright"), (20, "dark"), (30, "dark"), (10, "dark")])
    code, out, err = run_cli(["evaluate", "retrieval", str(manifest), "--model", "fake-clip", "--ks", "1,5,100"], capsys)
    assert code == 2 and out == ""
    assert err == ("medfm: error: cut-off k=100 (--ks) is more than the 5 candidates a query has (6 images, less its "
                   "own group); give cut-offs up to 5\n")
    code, out, err = run_cli(["evaluate", "retrieval", str(manifest), "--model", "fake-clip", "--n-boot", "10", "--json"], capsys)
    assert code == 0, err
    assert list(json.loads(out)["image_to_image"]["overall"]) == ["precision@1", "precision@5", "mAP"]


@pytest.mark.usefixtures("fake_models")
def test_cli_retrieval_says_why_a_class_of_one_image_has_no_map(tmp_path, capsys):
    manifest = _manifest(tmp_path, [(230, "bright"), (220, "bright"), (20, "dark"), (30, "dark"), (128, "grey")])
    code, out, err = run_cli(["evaluate", "retrieval", str(manifest), "--model", "fake-clip", "--n-boot", "10", "--ks", "1"],
                             capsys)
    assert code == 0, err
    assert re.search(r"^  grey\s+n=1\s+mAP -  \(no other image of this class to find\)$", out, re.M)
    assert "mAP leaves out 1 image(s) with no other image of their class to find" in out and "nan" not in out
    code, out, _ = run_cli(["evaluate", "retrieval", str(manifest), "--model", "fake-clip", "--n-boot", "10", "--ks", "1",
                            "--json"], capsys)
    result = json.loads(out)["image_to_image"]
    assert result["queries_without_relevant"] == 1 and result["by_class"]["grey"]["queries_without_relevant"] == 1
