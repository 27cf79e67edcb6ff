"""Few-shot heads, probe files with operating points, and `medfm classify` / `medfm fit-probe`."""

import csv
import json
import warnings

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture, used by every test below)

from medfm.errors import MedfmError
from medfm.io import Image, save
from medfm.models import EncoderInfo
from medfm.models.probe import KNNClassifier, LinearProbe, Probe, load_probe

pytestmark = pytest.mark.usefixtures("fake_models")


def blobs(n, seed, shift=1.5):
    """Two overlapping Gaussian classes in 8-d: ``(n, 8)`` rows and labels "normal"/"polyp"."""
    rng = np.random.default_rng(seed)
    labels = np.array(["normal", "polyp"])[rng.integers(0, 2, n)]
    x = rng.standard_normal((n, 8)) + shift * (labels == "polyp")[:, None] * np.eye(8)[0]
    return x, labels


@pytest.mark.parametrize("head", [LinearProbe(), KNNClassifier(k=15)])
def test_heads_learn_and_refuse_use_before_fit(head):
    with pytest.raises(MedfmError, match="not fitted yet"):
        type(head)().predict_proba(np.ones((1, 8)))
    x, y = blobs(400, 0)
    assert head.fit(x, y) is head and head.classes_ == ["normal", "polyp"]
    test_x, test_y = blobs(400, 1)
    proba = head.predict_proba(test_x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.mean(np.array(head.classes_)[proba.argmax(axis=1)] == test_y) > 0.7


def test_linear_probe_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(200, 2)
    reference = LogisticRegression().fit(x, y).predict_proba(x)
    np.testing.assert_allclose(LinearProbe().fit(x, y).predict_proba(x), reference, atol=1e-6)
    three = np.where(np.arange(200) % 3 == 0, "third", y)
    multi = LogisticRegression().fit(x, three).predict_proba(x)
    np.testing.assert_allclose(LinearProbe().fit(x, three).predict_proba(x), multi, atol=1e-6)


def test_balanced_class_weights_keep_a_rare_class_in_view(tmp_path, capsys):
    rng = np.random.default_rng(5)
    labels = np.array(["normal"] * 380 + ["polyp"] * 20)
    x = rng.standard_normal((400, 8)) + 1.5 * (labels == "polyp")[:, None] * np.eye(8)[0]
    test_labels = np.array(["normal"] * 200 + ["polyp"] * 200)
    test_x = rng.standard_normal((400, 8)) + 1.5 * (test_labels == "polyp")[:, None] * np.eye(8)[0]

    def rare_recall(head: LinearProbe) -> float:
        proba = head.fit(x, labels).predict_proba(test_x)
        predicted = np.array(head.classes_)[proba.argmax(axis=1)]
        return float(np.mean(predicted[test_labels == "polyp"] == "polyp"))

    plain, balanced = rare_recall(LinearProbe()), rare_recall(LinearProbe(class_weight="balanced"))
    assert plain < 0.2 and balanced > 0.6  # unweighted, the rare class is almost never answered
    train = write_set(tmp_path / "train", 8, 0)
    code, out, err = run_cli(["fit-probe", str(train), "--model", "fake-clip", "--label-column", "diagnosis", "--balanced",
                              "-o", str(tmp_path / "probe.json")], capsys)
    assert code == 0, err
    stored = json.loads((tmp_path / "probe.json").read_text())
    assert stored["training"]["balanced"] is True
    code, _, err = run_cli(["fit-probe", str(train), "--model", "fake-clip", "--label-column", "diagnosis", "--balanced",
                            "--knn", "3", "-o", str(tmp_path / "knn.json")], capsys)
    assert code == 2 and "balanced class weights are for the logistic-regression head" in err and err.count("\n") == 1


@pytest.mark.parametrize("target,value", [("sensitivity", 0.9), ("specificity", 0.8), ("youden", None)])
def test_operating_point_is_chosen_on_calibration_and_applied(tmp_path, target, value):
    x, y = blobs(300, 3)
    probe = Probe(LinearProbe().fit(x, y), {"name": "model-a", "embed_dim": 8, "weights_sha256": "a" * 64})
    cal_x, cal_y = blobs(300, 4)
    point = probe.calibrate(cal_x, cal_y, target, value).operating_point
    matrix = point["confusion"]
    assert sum(matrix.values()) == 300
    sensitivity = matrix["tp"] / (matrix["tp"] + matrix["fn"])
    specificity = matrix["tn"] / (matrix["tn"] + matrix["fp"])
    assert (sensitivity, specificity) == pytest.approx((point["sensitivity"], point["specificity"]))
    if target == "sensitivity":
        assert sensitivity >= 0.9
    if target == "specificity":
        assert specificity >= 0.8
    reloaded = load_probe(probe.save(tmp_path / "probe.json"))
    proba, predicted = reloaded.predict(cal_x)
    called = proba[:, 1] >= point["threshold"]
    assert predicted == ["polyp" if c else "normal" for c in called]
    assert np.sum(called & (cal_y == "polyp")) == matrix["tp"]


def test_probe_file_refusals(tmp_path):
    probe = Probe(LinearProbe().fit(*blobs(50, 5)), {"name": "model-a", "embed_dim": 8, "weights_sha256": "a" * 64})
    with pytest.raises(MedfmError, match="fitted on model 'model-a'.*not 'model-b'"):
        probe.check_model(EncoderInfo("model-b", 8, "c" * 64))
    with pytest.raises(MedfmError, match="positive class 'x'"):
        probe.calibrate(*blobs(50, 6), positive="x")
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(MedfmError, match="not a readable probe file"):
        load_probe(tmp_path / "bad.json")
    with pytest.raises(MedfmError, match="probe file not found"):
        load_probe(tmp_path / "none.json")


# --- command line, with the fake encoder and generated images ---------------------------

def write_set(folder, count, seed):
    """PNGs whose class is visible to the fake encoder: 'polyp' images are brighter. Returns a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        label = "polyp" if i % 2 else "normal"
        base = (110 if label == "polyp" else 70) + rng.integers(-35, 35)
        save(Image((base + rng.integers(0, 50, (24, 24))).astype(np.uint8)), folder / f"{i:03d}.png")
        rows.append({"path": f"{i:03d}.png", "diagnosis": label})
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "diagnosis"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def test_fit_probe_with_operating_point_then_classify(tmp_path, capsys):
    train, calibration = write_set(tmp_path / "train", 40, 0), write_set(tmp_path / "cal", 40, 1)
    probe = tmp_path / "probe.json"
    code, out, err = run_cli(["fit-probe", str(train), "--model", "fake-clip", "--label-column", "diagnosis", "-o", str(probe),
                              "--calibration", str(calibration), "--target-sensitivity", "0.9", "--positive", "polyp"], capsys)
    assert code == 0, err
    assert "confusion on calibration: TP" in out
    stored = json.loads(probe.read_text())
    assert stored["model"]["name"] == "fake-clip" and stored["operating_point"]["sensitivity"] >= 0.9
    assert stored["training"]["counts"] == {"normal": 20, "polyp": 20}

    images = [str(tmp_path / "cal" / f"{i:03d}.png") for i in range(6)]
    code, out, err = run_cli(["classify", *images, "--probe", str(probe), "--json"], capsys)
    assert code == 0, err
    results = json.loads(out)
    assert [r["path"] for r in results] == images
    for result in results:
        assert set(result["probabilities"]) == {"normal", "polyp"}
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        called = result["probabilities"]["polyp"] >= stored["operating_point"]["threshold"]
        assert result["prediction"] == ("polyp" if called else "normal")

    code, _, err = run_cli(["classify", images[0], "--probe", str(probe), "--model", "other-clip"], capsys)
    assert code == 2 and "fitted on model 'fake-clip'" in err


def test_knn_probe_from_an_index(tmp_path, capsys):
    train = write_set(tmp_path / "train", 30, 0)
    index = str(tmp_path / "ix")
    assert run_cli(["index", "build", *map(str, sorted((tmp_path / "train").glob("*.png"))), "--model", "fake-clip",
                    "--index", index, "--no-progress"], capsys)[0] == 0
    probe = tmp_path / "knn.json"
    code, out, err = run_cli(["fit-probe", str(train), "--index", index, "--label-column", "diagnosis", "--knn", "5",
                              "-o", str(probe), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["classes"] == ["normal", "polyp"] and json.loads(probe.read_text())["method"] == "knn"
    code, _, err = run_cli(["fit-probe", str(write_set(tmp_path / "new", 4, 3)), "--index", index,
                            "--label-column", "diagnosis", "-o", str(probe)], capsys)
    assert code == 2 and "4 of 4 manifest images are not in index" in err
    code, _, err = run_cli(["fit-probe", str(train), "--index", index, "--label-column", "grade", "-o", str(probe)], capsys)
    assert code == 2 and "no column 'grade'" in err


@pytest.mark.parametrize("k", ["0", "-1"])
def test_fit_probe_refuses_a_knn_k_below_one_rather_than_fitting_logistic_regression(k, tmp_path, capsys):
    train = write_set(tmp_path / "train", 8, 0)
    code, _, err = run_cli(["fit-probe", str(train), "--model", "fake-clip", "--label-column", "diagnosis",
                            "--knn", k, "-o", str(tmp_path / "p.json")], capsys)
    assert code == 2 and err == f"medfm: error: k must be at least 1; got {k}\n"
    assert not (tmp_path / "p.json").exists()


def test_classify_with_a_probe_refuses_zero_shot_templates(tmp_path, capsys):
    train = write_set(tmp_path / "train", 20, 0)
    probe = tmp_path / "probe.json"
    assert run_cli(["fit-probe", str(train), "--model", "fake-clip", "--label-column", "diagnosis", "-o", str(probe)],
                   capsys)[0] == 0
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of {}\n")
    code, out, err = run_cli(["classify", str(tmp_path / "train" / "000.png"), "--probe", str(probe),
                              "--templates", str(templates)], capsys)
    assert code == 2 and out == ""
    assert err == "medfm: error: prompt templates are for zero-shot classification; a probe classifies the embeddings without prompts\n"


def test_zero_shot_with_templates_and_evidence(tmp_path, capsys):
    write_set(tmp_path / "set", 10, 0)
    bright = save(Image(np.full((24, 24), 230, np.uint8)), tmp_path / "bright.png")
    dark = save(Image(np.full((24, 24), 10, np.uint8)), tmp_path / "dark.png")
    templates = tmp_path / "templates.txt"
    templates.write_text("# prompts\na {} picture\n{} tissue\n")
    index = str(tmp_path / "ix")
    run_cli(["index", "build", *map(str, sorted((tmp_path / "set").glob("*.png"))), "--model", "fake-clip", "--index", index, "--no-progress"], capsys)
    code, out, err = run_cli(["classify", str(bright), str(dark), "--labels", "bright,dark", "--templates", str(templates),
                              "--model", "fake-clip", "--index", index, "-k", "3", "--json"], capsys)
    assert code == 0, err
    first, second = json.loads(out)
    assert first["prediction"] == "bright" and second["prediction"] == "dark"
    assert first["probabilities"]["bright"] > 0.9 and first["templates"] == ["a {} picture", "{} tissue"]
    assert len(first["evidence"]) == 3 and first["evidence"][0]["score"] >= first["evidence"][-1]["score"]
    code, out, _ = run_cli(["classify", str(bright), "--labels", "bright,dark", "--model", "fake-clip"], capsys)
    assert code == 0 and out.startswith(f"{bright}: bright")


def test_zero_shot_with_a_prompt_set_of_templates_and_phrasings(tmp_path, capsys):
    # the fake text tower knows the words "bright" and "dark": "pale" says nothing of brightness until phrased as "bright"
    bright = save(Image(np.full((24, 24), 230, np.uint8)), tmp_path / "bright.png")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"templates": ["a {} picture"], "phrasings": {"pale": ["bright"], "grey": ["dim"]}}))
    plain = tmp_path / "templates.txt"
    plain.write_text("a {} picture\n")
    results = {}
    for name, path in (("phrased", prompts), ("plain", plain)):
        code, out, err = run_cli(["classify", str(bright), "--labels", "pale,dark", "--templates", str(path),
                                  "--model", "fake-clip", "--json"], capsys)
        assert code == 0, err
        results[name] = json.loads(out)[0]
    phrased, unphrased = results["phrased"], results["plain"]
    assert set(phrased["probabilities"]) == {"pale", "dark"} and phrased["prediction"] == "pale"
    assert phrased["probabilities"]["pale"] > 0.9 > unphrased["probabilities"]["pale"]
    # the labels given are reported with the phrasings used ("grey" is not among them)
    assert phrased["phrasings"] == {"pale": ["bright"]} and "phrasings" not in unphrased
    assert phrased["templates"] == unphrased["templates"] == ["a {} picture"]


@pytest.mark.parametrize(("content", "message"), [
    ('{"phrasings": {"pale": ["bright"]}}', "'templates' must be a non-empty list of texts"),
    ('{"templates": [], "phrasings": {}}', "'templates' must be a non-empty list of texts"),
    ('{"templates": ["{}"], "phrasings": ["bright"]}', "phrasings must be a JSON object {label: [texts]}"),
    ('{"templates": ["{}"], "phrasings": {"pale": [""]}}', "the phrasings of 'pale' must be a non-empty list"),
    ('["{}"]', "the templates file must hold a JSON object"),
])
def test_bad_prompt_set_files_are_one_line_errors(content, message, tmp_path, capsys):
    image = save(Image(np.zeros((8, 8), np.uint8)), tmp_path / "a.png")
    (tmp_path / "prompts.json").write_text(content)
    code, _, err = run_cli(["classify", str(image), "--labels", "pale,dark", "--templates", str(tmp_path / "prompts.json"),
                            "--model", "fake-clip"], capsys)
    assert code == 2 and err.startswith(f"medfm: error: {tmp_path / 'prompts.json'}: ") and message in err, err
    assert err.count("\n") == 1


def test_classify_bad_input_is_one_line_errors(tmp_path, capsys):
    image = save(Image(np.zeros((8, 8), np.uint8)), tmp_path / "a.png")
    two_channels = save(Image(np.zeros((8, 8, 1, 1, 2), np.float32)), tmp_path / "two.npz")
    cases = [
        (["--labels", "a,b", "--model", "nope"], "unknown model 'nope'"),
        (["--labels-file", str(tmp_path / "labels.txt"), "--model", "fake-clip"], "labels file not found"),
        (["--labels", "a,b", "--templates", str(tmp_path / "t.txt"), "--model", "fake-clip"], "templates file not found"),
        (["--labels", "only", "--model", "fake-clip"], "at least two distinct labels"),
        (["--probe", str(tmp_path / "p.json"), "--model", "fake-clip"], "probe file not found"),
    ]
    for options, message in cases:
        code, _, err = run_cli(["classify", str(image), *options], capsys)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (options, err)
    code, _, err = run_cli(["classify", str(two_channels), "--labels", "a,b", "--model", "fake-clip"], capsys)
    assert code == 2 and "two.npz" in err and "C = 1, 3 or 4" in err


def test_cross_validation_tells_a_useful_probe_from_guessing():
    from medfm.train.probe import cross_validate

    x, y = blobs(120, 2, shift=4.0)
    useful = cross_validate(LinearProbe, x, list(y))
    assert useful["folds"] == 5 and useful["beats_baseline"] and useful["accuracy"]["value"] > 0.9
    assert useful["accuracy"]["low"] <= useful["accuracy"]["value"] <= useful["accuracy"]["high"]
    # three classes, one common: labels unrelated to the embeddings reach no more than the majority answer
    rng = np.random.default_rng(3)
    labels = list(rng.choice(["common", "atypical", "melanoma"], 150, p=[0.5, 0.3, 0.2]))
    guessing = cross_validate(LinearProbe, rng.standard_normal((150, 8)), labels)
    assert not guessing["beats_baseline"] and guessing["majority_baseline"]["class"] == "common"
    assert guessing["accuracy"]["low"] < guessing["majority_baseline"]["accuracy"]
    assert cross_validate(LinearProbe, x[:3], ["a", "b", "b"])["skipped"] == "a class has fewer than 2 images"


def test_fit_probe_reports_cross_validation_and_warns_when_it_does_not_beat_the_baseline(tmp_path, capsys):
    train = write_set(tmp_path / "train", 40, 0)
    code, out, err = run_cli(["fit-probe", str(train), "--model", "fake-clip", "--label-column", "diagnosis",
                              "-o", str(tmp_path / "probe.json")], capsys)
    assert code == 0, err
    assert "cross-validated (5 folds): accuracy" in out and "majority-class baseline 0.500" in out and "warning" not in err
    stored = json.loads((tmp_path / "probe.json").read_text())["training"]["cross_validation"]
    assert stored["beats_baseline"] and stored["majority_baseline"]["accuracy"] == 0.5

    rows = list(csv.DictReader(open(train)))
    for row, label in zip(rows, np.random.default_rng(0).permutation(["normal"] * 30 + ["polyp"] * 10)):
        row["diagnosis"] = label  # labels that the images do not show
    shuffled = tmp_path / "train" / "shuffled.csv"
    with open(shuffled, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, out, err = run_cli(["fit-probe", str(shuffled), "--model", "fake-clip", "--label-column", "diagnosis",
                              "-o", str(tmp_path / "guess.json")], capsys)
    assert code == 0 and "medfm: warning: the probe does not beat always answering 'normal' (accuracy 0.750)" in err


@pytest.mark.parametrize(("options", "message"), [
    ({"target_sensitivity": 0.9}, "a target sensitivity (0.9) is reached on a calibration manifest; give one"),
    ({"target_specificity": 0.8}, "a target specificity (0.8) is reached on a calibration manifest; give one"),
    ({"target_sensitivity": 0.9, "target_specificity": 0.8, "calibration": "cal.csv"},
     "give a target sensitivity or a target specificity, not both"),
    ({"encoder": None}, "fitting a probe needs a model or an index to take embeddings from"),
])
def test_fit_probe_refuses_what_it_used_to_ignore_before_reading_anything(tmp_path, options, message):
    from medfm.models import create_encoder
    from medfm.train.probe import fit_probe

    # the manifest does not exist: the rule is checked first, in the library, not in the CLI
    with pytest.raises(MedfmError) as caught:
        fit_probe(tmp_path / "missing.csv", "diagnosis", **{"encoder": create_encoder("fake-clip"), **options})
    assert str(caught.value) == message


def test_fit_probe_cli_reports_the_library_rule(tmp_path, capsys):
    train = write_set(tmp_path / "train", 8, 0)
    code, _, err = run_cli(["fit-probe", str(train), "--model", "fake-clip", "--label-column", "diagnosis",
                            "-o", str(tmp_path / "p.json"), "--target-specificity", "0.8"], capsys)
    assert code == 2 and "a target specificity (0.8) is reached on a calibration manifest" in err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(("labels", "reason"), [
    ([f"caption number {i}" for i in range(24)], "'caption number 0' has 1 (and 23 other classes)"),
    (["normal"] * 5 + ["polyp"], "'polyp' has 1"),
], ids=["every-label-unique", "one-rare-class"])
def test_fit_probe_refuses_a_class_seen_once(labels, reason, tmp_path, capsys):
    write_set(tmp_path / "train", len(labels), 0)
    manifest = tmp_path / "train" / "unique.csv"
    manifest.write_text("path,caption\n" + "".join(f"{i:03d}.png,{label}\n" for i, label in enumerate(labels)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(["fit-probe", str(manifest), "--model", "fake-clip", "--label-column", "caption",
                                  "-o", str(tmp_path / "p.json")], capsys)
    assert (code, out) == (2, "") and err.splitlines() == [
        f"medfm: error: {manifest}: each class of 'caption' needs at least 2 rows; {reason}"]
    assert [str(warning.message) for warning in caught] == [] and not (tmp_path / "p.json").exists()


def test_classify_without_labels_or_probe_says_one_is_needed(tmp_path, capsys):
    image = save(Image(np.zeros((8, 8), np.uint8)), tmp_path / "a.png")
    code, _, err = run_cli(["classify", str(image), "--model", "fake-clip"], capsys)
    assert code == 2 and err.splitlines() == [
        "medfm: error: classify needs --labels (or --labels-file) for zero-shot classification, or a --probe; give one"]
    from medfm.models import create_encoder
    from medfm.tasks.classify import classify

    with pytest.raises(MedfmError, match="needs labels .* or a fitted probe; neither was given"):
        classify([image], create_encoder("fake-clip"))


def test_classify_summary_into_a_missing_folder_is_refused_unless_mkdir(tmp_path, capsys):
    write_set(tmp_path / "set", 2, 0)
    summary = tmp_path / "typo1" / "typo2" / "s.json"
    args = ["classify", str(tmp_path / "set"), "--labels", "bright,dark", "--model", "fake-clip", "--summary", str(summary)]
    code, out, err = run_cli(args, capsys)
    assert (code, out) == (2, "") and err.splitlines() == [
        f"medfm: error: {summary.parent}: folder does not exist; create it first or pass --mkdir"]
    assert not (tmp_path / "typo1").exists()
    code, _, err = run_cli([*args, "--mkdir"], capsys)
    assert code == 0, err
    assert json.loads(summary.read_text())["succeeded"] == 2


def test_classify_folder_and_manifest_with_a_bad_file_in_the_middle(tmp_path, capsys):
    write_set(tmp_path / "set", 4, 0)
    (tmp_path / "set" / "001.png").write_bytes(b"broken")
    summary = tmp_path / "summary.json"
    code, out, err = run_cli(["classify", str(tmp_path / "set"), "--labels", "bright,dark", "--model", "fake-clip",
                              "--json", "--summary", str(summary)], capsys)
    assert code == 2
    assert [r["path"] for r in json.loads(out)] == [str(tmp_path / "set" / f"{i:03d}.png") for i in (0, 2, 3)]
    assert err.splitlines() == [f"medfm: failed: {tmp_path / 'set' / '001.png'}: cannot read as png: "
                                "not an image file Pillow can identify",
                                "medfm: error: 1 of 4 inputs failed"]
    saved = json.loads(summary.read_text())
    assert (saved["inputs"], saved["succeeded"], saved["failed"]) == (4, 3, 1)
    code, out, err = run_cli(["classify", "--manifest", str(tmp_path / "set" / "manifest.csv"), "--labels", "bright,dark",
                              "--model", "fake-clip"], capsys)
    assert code == 2 and len(out.splitlines()) == 3 and err.count("medfm: failed:") == 1
