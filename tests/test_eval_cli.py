"""``medfm evaluate seg|cls`` end to end: pairing, what is skipped and why, JSON, HTML reports."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from sklearn.metrics import average_precision_score, roc_auc_score

import medfm
from medfm.eval.pairing import case_name, pair_files
from medfm.eval.seg_metrics import score_label_maps, score_masks

SPACING = (0.8, 0.8, 2.5)
AFFINE = np.diag([*SPACING, 1.0])
SHAPE = (32, 32, 10)


def ball(radius_mm, shift=0):
    grid = np.indices(SHAPE, dtype=float)
    centre = (16 + shift, 16, 5)
    return (sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, SPACING)) <= radius_mm**2).astype(np.uint8)


def save(mask, path, affine=AFFINE):
    medfm.save(medfm.Image(mask, affine), path)


def assert_self_contained_html(path: Path, n_figures: int) -> str:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)) >= n_figures
    # nothing fetched from elsewhere: no scripts, no URLs
    assert "<script" not in text and "http" not in text and "src=\"/" not in text
    assert not list(path.parent.glob(".medfm-tmp-*"))
    return text


@pytest.fixture
def seg_folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    masks = {}
    for i, (name, suffix) in enumerate([("case1", ".nrrd"), ("case2", ".mha"), ("case3.v2", ".nii")]):
        masks[name] = (ball(7 - i, shift=i), ball(7))
        save(masks[name][0], pred / f"{name}{suffix}")
        save(masks[name][1], ref / f"{name}.nii.gz")
    masks["missed"] = (np.zeros(SHAPE, np.uint8), ball(5))
    save(masks["missed"][0], pred / "missed.nii.gz")
    save(masks["missed"][1], ref / "missed.nii.gz")
    # every way a case can fail to be evaluated
    save(ball(6), pred / "no_ref.nii.gz")
    save(ball(6), ref / "no_pred.nii.gz")
    save(ball(6)[:, :, :8], pred / "shape.nii.gz")
    save(ball(6), ref / "shape.nii.gz")
    moved = AFFINE.copy()
    moved[0, 3] = 0.01
    save(ball(6), pred / "moved.nii.gz", moved)
    save(ball(6), ref / "moved.nii.gz")
    save(ball(6) + ball(3), pred / "labels.nii.gz")  # labels 1 and 2: a label map
    save(ball(6), ref / "labels.nii.gz")
    save(ball(6), pred / "twice.nii.gz")
    save(ball(6), pred / "twice.nrrd")
    save(ball(6), ref / "twice.nii.gz")
    (pred / "broken.nii.gz").write_bytes(b"not an image")
    save(ball(6), ref / "broken.nii.gz")
    return pred, ref, masks


def test_case_names_drop_only_registered_image_suffixes(tmp_path):
    assert case_name(Path("case1.nii.gz")) == "case1"
    assert case_name(Path("case1.PNG")) == "case1"
    assert case_name(Path("case3.v2.nii")) == "case3.v2"
    assert case_name(Path("notes.txt")) == "notes.txt"
    (tmp_path / "series1").mkdir()
    assert case_name(tmp_path / "series1") == "series1"


def test_seg_json_scores_every_pair_and_lists_every_skipped_case(seg_folders, capsys, tmp_path):
    pred, ref, masks = seg_folders
    code, out, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref), "--tolerance-mm", "1.5",
                              "--n-boot", "200", "--json", "--report", str(tmp_path / "seg.html")], capsys)
    # the scores are printed, but a set scored without some of its cases fails
    assert code == 2 and err.splitlines()[-1] == "medfm: error: 7 of 11 cases skipped (listed above); the scores are over the other 4"
    result = json.loads(out)  # strict JSON: no NaN
    cases = {c["name"]: c for c in result["cases"]}
    assert sorted(cases) == ["case1", "case2", "case3.v2", "missed"]
    for name, (p, r) in masks.items():
        expected = score_masks(p, r, SPACING, tolerance_mm=1.5).as_dict()
        for metric in ("dice", "iou", "hd95", "assd", "nsd", "volume_difference"):
            got = cases[name][metric]
            assert (got is None and np.isnan(expected[metric])) or got == pytest.approx(expected[metric]), (name, metric)
    assert cases["missed"]["dice"] == 0.0 and cases["missed"]["hd95"] is None
    skipped = {s["name"]: s["reason"] for s in result["skipped"]}
    assert set(skipped) == {"no_ref", "no_pred", "shape", "moved", "labels", "twice", "broken"}
    assert "no reference with this name" in skipped["no_ref"]
    assert "no prediction with this name" in skipped["no_pred"]
    assert "shape (32, 32, 8) differs from the reference's (32, 32, 10)" in skipped["shape"]
    assert "geometry differs" in skipped["moved"] and "0.01 mm apart" in skipped["moved"]
    assert "not a binary mask (values [0, 1, 2])" in skipped["labels"]
    assert "several prediction files" in skipped["twice"]
    assert "broken.nii.gz" in skipped["broken"]
    for name in skipped:
        assert f"medfm: skipped {name}: " in err
    dice = [cases[n]["dice"] for n in sorted(cases)]
    summary = result["summary"]["dice"]
    assert summary["mean"] == pytest.approx(np.mean(dice)) and summary["median"] == pytest.approx(np.median(dice))
    assert summary["low"] <= summary["mean"] <= summary["high"]
    hd95 = result["summary"]["hd95"]
    assert hd95["n"] == 3 and hd95["n_undefined"] == 1
    assert hd95["mean"] == pytest.approx(np.mean([cases[n]["hd95"] for n in ("case1", "case2", "case3.v2")]))
    text = assert_self_contained_html(tmp_path / "seg.html", n_figures=4)
    assert "missed" in text and "several prediction files" in text


def test_seg_text_output_and_nothing_to_evaluate(tmp_path, capsys):
    pred, ref = tmp_path / "p", tmp_path / "r"
    pred.mkdir()
    ref.mkdir()
    save(ball(6), pred / "a.nii.gz")
    save(ball(6), ref / "b.nii.gz")
    code, out, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref)], capsys)
    assert code == 2
    assert "medfm: error: no case could be evaluated: a: a.nii.gz: no reference with this name" in err
    assert "Traceback" not in err
    save(ball(6), ref / "a.nii.gz")
    code, out, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref)], capsys)
    assert code == 2  # a reference without its prediction: scored, printed, and failed
    assert re.search(r"^a\s+1\s+1\s+0\s+0\s+1", out, re.M)
    assert "medfm: skipped b: b.nii.gz: no prediction" in err and "1 of 2 cases skipped" in err
    (ref / "b.nii.gz").unlink()
    code, out, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref)], capsys)
    assert code == 0 and err == ""
    code, _, err = run_cli(["evaluate", "seg", "--pred", str(tmp_path / "nope"), "--ref", str(ref)], capsys)
    assert code == 2 and "prediction folder does not exist" in err


def test_seg_png_masks_are_scored_in_2d_and_255_counts_as_foreground(tmp_path, capsys):
    pred, ref = tmp_path / "p", tmp_path / "r"
    pred.mkdir()
    ref.mkdir()
    r = np.zeros((40, 30), np.uint8)
    r[5:25, 5:20] = 255
    p = np.roll(r, 3, axis=0)
    medfm.save(medfm.Image(p), pred / "x.png")
    medfm.save(medfm.Image(r), ref / "x.png")
    code, out, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref), "--json"], capsys)
    assert code == 0, err
    case = json.loads(out)["cases"][0]
    expected = score_masks(p > 0, r > 0, (1.0, 1.0)).as_dict()
    assert case["dice"] == pytest.approx(2 * 17 * 15 / 600)
    assert case["hd95"] == pytest.approx(expected["hd95"]) and case["nsd"] == pytest.approx(expected["nsd"])


def test_seg_jpeg_and_rgb_masks_are_read_like_every_other_mask_and_distances_are_in_pixels(tmp_path, capsys):
    from PIL import Image as PILImage

    from medfm.io.label_maps import read_mask

    pred, ref = tmp_path / "p", tmp_path / "r"
    pred.mkdir()
    ref.mkdir()
    r = np.zeros((40, 30), np.uint8)  # (rows, columns)
    r[5:25, 5:20] = 255
    PILImage.fromarray(r).save(ref / "x.png")
    PILImage.fromarray(np.roll(r, 3, axis=0)).save(pred / "x.jpg", quality=70)  # halos of in-between values
    colour = np.zeros((40, 30, 3), np.uint8)
    colour[5:25, 5:20] = (255, 0, 0)  # a red structure on black
    PILImage.fromarray(colour).save(pred / "y.png")
    PILImage.fromarray(r).save(ref / "y.png")
    code, out, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    cases = {c["name"]: c for c in result["cases"]}
    expected = score_masks(read_mask(pred / "x.jpg")[:, :, 0], r.T > 0, (1.0, 1.0)).as_dict()
    assert cases["x"]["dice"] == pytest.approx(expected["dice"]) and cases["x"]["dice"] > 0.8
    assert cases["y"]["dice"] == 1.0 and cases["y"]["hd95"] == 0.0
    assert result["settings"]["distance_unit"] == "pixels" and cases["x"]["distance_unit"] == "pixels"
    code, out, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref)], capsys)
    assert code == 0 and "hd95 (px)" in out and "no known spacing" in err


def test_seg_volumes_keep_mm_and_mixing_units_is_refused(seg_folders, tmp_path, capsys):
    pred, ref, _ = seg_folders
    code, out, _ = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref), "--n-boot", "10", "--json"], capsys)
    assert code == 2 and json.loads(out)["settings"]["distance_unit"] == "mm"  # the fixture's skipped cases fail it
    r = np.zeros((32, 32), np.uint8)
    r[4:9, 4:9] = 255
    medfm.save(medfm.Image(r), pred / "photo.png")
    medfm.save(medfm.Image(r), ref / "photo.png")
    code, _, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref), "--n-boot", "10"], capsys)
    assert code == 2 and "photo have no known spacing" in err and "evaluate them separately" in err


def test_seg_refuses_the_same_folder_as_predictions_and_references(tmp_path, capsys):
    (tmp_path / "masks").mkdir()
    medfm.save(medfm.Image(np.ones((4, 4), np.uint8)), tmp_path / "masks" / "a.png")
    code, _, err = run_cli(["evaluate", "seg", "--pred", str(tmp_path / "masks"), "--ref", str(tmp_path / "masks" / ".." / "masks")], capsys)
    assert code == 2 and err.splitlines() == [
        f"medfm: error: {tmp_path / 'masks'}: the predictions and the references are the same folder; every case would be scored against itself"]


def test_seg_label_maps_score_each_label(tmp_path, capsys):
    pred, ref = tmp_path / "p", tmp_path / "r"
    pred.mkdir()
    ref.mkdir()
    r = ball(7).astype(np.int16) + ball(3)  # 1 outer shell, 2 core
    p = np.roll(r, 1, axis=1)
    save(p, pred / "c.nii.gz")
    save(r, ref / "c.nii.gz")
    save(r * 2, pred / "d.nii.gz")  # label 4: not among the labels
    save(r, ref / "d.nii.gz")
    code, out, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref), "--labels", "1,2", "--json"], capsys)
    assert code == 2 and "1 of 2 cases skipped" in err  # d
    result = json.loads(out)
    expected = score_label_maps(p, r, SPACING, [1, 2])
    case = result["cases"][0]
    assert case["labels"]["2"]["dice"] == pytest.approx(expected[2].dice)
    assert case["dice"] == pytest.approx((expected[1].dice + expected[2].dice) / 2)
    assert result["summary_by_label"]["1"]["hd95"]["mean"] == pytest.approx(expected[1].hd95)
    assert "label values [4] that are not among the labels [1, 2]" in result["skipped"][0]["reason"]
    code, _, err = run_cli(["evaluate", "seg", "--pred", str(pred), "--ref", str(ref), "--labels", "1,x"], capsys)
    assert code == 2 and "--labels must be integers" in err


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def cls_files(tmp_path):
    rng = np.random.default_rng(4)
    n = 240
    labels = rng.integers(0, 2, n)
    sex = rng.choice(["F", "M"], n)
    site = rng.choice(["a", "b", "c"], n)
    scores = 1 / (1 + np.exp(-(1.4 * labels + 0.4 * (sex == "F") + rng.normal(0, 1, n))))
    ids = [f"img{i:03d}" for i in range(n)]
    write_csv(tmp_path / "scores.csv", ["id", "prob"], [[i, s] for i, s in zip(ids, scores)] + [["orphan", 0.5]])
    write_csv(tmp_path / "labels.csv", ["id", "label", "sex", "site", "patient"],
              [[i, y, s, t, f"p{k // 2}"] for k, (i, y, s, t) in enumerate(zip(ids, labels, sex, site))] + [["lonely", 1, "F", "a", "px"]])
    return tmp_path, scores, labels, sex


def test_cls_binary_json_matches_scikit_learn_and_reports_unmatched_ids(cls_files, capsys):
    folder, scores, labels, sex = cls_files
    code, out, err = run_cli(["evaluate", "cls", "--scores", str(folder / "scores.csv"), "--labels", str(folder / "labels.csv"),
                              "--groups", "sex,site", "--patient-column", "patient", "--n-boot", "200", "--json",
                              "--report", str(folder / "cls.html")], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == len(scores) and result["n_positive"] == int(labels.sum())
    assert result["unmatched"] == {"scores_only": ["orphan"], "labels_only": ["lonely"]}
    assert "orphan" in err and "lonely" in err
    assert result["bootstrap"]["resampling"] == "patients (patient)"
    auc = result["metrics"]["auc"]
    assert auc["value"] == pytest.approx(roc_auc_score(labels, scores))
    assert auc["low"] < auc["value"] < auc["high"]
    assert result["metrics"]["auprc"]["value"] == pytest.approx(average_precision_score(labels, scores))
    point = result["operating_point"]
    assert point["chosen_by"] == "youden on these rows"
    called = scores >= point["threshold"]
    assert point["sensitivity"]["value"] == pytest.approx(called[labels == 1].mean())
    assert 0 <= result["calibration"]["ece"]["value"] <= 1
    female = result["subgroups"]["sex"]["groups"]["F"]
    assert female["n"] == int((sex == "F").sum())
    assert female["auc"]["value"] == pytest.approx(roc_auc_score(labels[sex == "F"], scores[sex == "F"]))
    assert set(result["subgroups"]["site"]["groups"]) == {"a", "b", "c"}
    assert result["subgroups"]["sex"]["equalised_odds_difference"]["value"] >= 0
    assert_self_contained_html(folder / "cls.html", n_figures=4)  # ROC, reliability, two forest plots


def test_cls_text_output_and_given_threshold(cls_files, capsys):
    folder, scores, labels, _ = cls_files
    code, out, _ = run_cli(["evaluate", "cls", "--scores", str(folder / "scores.csv"), "--labels", str(folder / "labels.csv"),
                            "--threshold", "0.5", "--n-boot", "50"], capsys)
    assert code == 0
    assert "threshold 0.5 (given)" in out and re.search(r"^  auc\s+0\.\d+ \[0\.\d+, 0\.\d+\]$", out, re.M)


def test_cls_multiclass_macro_auc_matches_scikit_learn(tmp_path, capsys):
    rng = np.random.default_rng(2)
    n, classes = 300, ["cat", "dog", "eel"]
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3)) + np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    write_csv(tmp_path / "s.csv", ["id", *classes], [[i, *p] for i, p in enumerate(probs)])
    write_csv(tmp_path / "l.csv", ["id", "label"], [[i, classes[k]] for i, k in enumerate(y)])
    code, out, err = run_cli(["evaluate", "cls", "--scores", str(tmp_path / "s.csv"), "--labels", str(tmp_path / "l.csv"),
                              "--n-boot", "50", "--json", "--report", str(tmp_path / "r.html")], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["task"] == "multiclass"
    assert result["metrics"]["macro_auc"]["value"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert result["metrics"]["auprc/dog"]["value"] == pytest.approx(average_precision_score(y == 1, probs[:, 1]))
    assert_self_contained_html(tmp_path / "r.html", n_figures=1)


@pytest.mark.parametrize(
    ("scores_rows", "labels_rows", "args", "message"),
    [
        ([["a", "0.3"]], [["a", "1"]], ["--groups", "age"], "no metadata column 'age'; columns are label"),
        ([["a", "high"]], [["a", "1"]], [], "id 'a', column 'p': 'high' is not a number"),
        ([["a", "0.3"]], [["b", "1"]], [], "no id is in both"),
        ([["a", "0.3"], ["a", "0.4"]], [["a", "1"]], [], "id 'a' appears more than once"),
        ([["a", "0.3"], ["b", "0.4"]], [["a", "1"], ["b", "1"]], [], "hold only one class"),
        ([["a", "0.3"], ["b", "0.4"]], [["a", "2"], ["b", "1"]], [], "binary labels must be 0 or 1"),
    ],
)
def test_cls_bad_input_is_one_line(tmp_path, capsys, scores_rows, labels_rows, args, message):
    write_csv(tmp_path / "s.csv", ["id", "p"], scores_rows)
    write_csv(tmp_path / "l.csv", ["id", "label"], labels_rows)
    code, _, err = run_cli(["evaluate", "cls", "--scores", str(tmp_path / "s.csv"), "--labels", str(tmp_path / "l.csv"), *args], capsys)
    assert code == 2
    assert err.startswith("medfm: error: ") and message in err and err.count("\n") == 1


def test_pairing_sorts_pairs_and_reports_both_sides(tmp_path):
    pred, ref = tmp_path / "p", tmp_path / "r"
    pred.mkdir()
    ref.mkdir()
    for name in ("b.nii.gz", "a.png", "only_pred.nrrd"):
        (pred / name).write_bytes(b"x")
    for name in ("a.nii.gz", "b.mha", "only_ref.png"):
        (ref / name).write_bytes(b"x")
    pairs, skipped = pair_files(pred, ref)
    assert [(p.name, p.pred.name, p.ref.name) for p in pairs] == [("a", "a.png", "a.nii.gz"), ("b", "b.nii.gz", "b.mha")]
    assert [s.name for s in skipped] == ["only_pred", "only_ref"]


def test_cls_multilabel_when_the_labels_file_has_a_column_per_score_column(tmp_path, capsys):
    rng = np.random.default_rng(6)
    n = 200
    y = rng.integers(0, 2, (n, 2))
    s = y * 0.9 + rng.normal(0, 1, (n, 2))
    write_csv(tmp_path / "s.csv", ["id", "effusion", "nodule"], [[i, *row] for i, row in enumerate(s)])
    write_csv(tmp_path / "l.csv", ["id", "effusion", "nodule"], [[i, *row] for i, row in enumerate(y)])
    code, out, err = run_cli(["evaluate", "cls", "--scores", str(tmp_path / "s.csv"), "--labels", str(tmp_path / "l.csv"),
                              "--n-boot", "50", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["task"] == "multilabel"
    assert result["metrics"]["macro_auc"]["value"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    assert result["metrics"]["auc/nodule"]["value"] == pytest.approx(roc_auc_score(y[:, 1], s[:, 1]))
