"""Generators measured against real images (issue 14): improved precision/recall, the near-copy check and the
paired classifier comparison as pure functions; `medfm models rank` and `medfm evaluate synthetic` with tiny
generators and the fake encoder; their bad input."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from fakeencoder import FakeEncoder, fake_models  # noqa: F401  (the fixture)
from PIL import Image as PILImage
from test_generators import SIZE, TINY, write_classes

from medfm.errors import MedfmError
from medfm.eval.synthetic import class_measures, compare_classifiers, compare_segmenters, near_copies, precision_recall
from medfm.train.generator import train_generator
from medfm.train.generator_eval import rank_generators
from medfm.train.synthetic_eval import evaluate_synthetic

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


@pytest.fixture(scope="module")
def generators(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny class generators of the bright/dark discs, one trained a little longer than the other."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("generators")
    data = write_classes(root / "data")
    for name, steps in (("A", 4), ("B", 12)):
        train_generator(data, root / name, size=SIZE, network=TINY, max_steps=steps, batch_size=4)
    return root / "A", root / "B"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    data = write_classes(folder / "classes", per_class=4)
    for path in sorted(data.rglob("*.png")):
        path.rename(folder / f"{path.parent.name}_{path.name}")
    return folder


def test_precision_recall_follow_the_manifolds() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 4))
    same = precision_recall(real, real)
    assert (same["precision"], same["recall"], same["f1"]) == (1.0, 1.0, 1.0)
    far = precision_recall(real, real + 100.0)
    assert (far["precision"], far["recall"], far["f1"]) == (0.0, 0.0, 0.0)
    collapsed = precision_recall(real, np.repeat(real[:1], 10, axis=0) + rng.normal(scale=1e-3, size=(10, 4)))
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.2  # realistic but without variety
    with pytest.raises(MedfmError, match="more than 3 images in each set"):
        precision_recall(real, real[:3])


def test_near_copies_are_flagged_against_the_heldout_bar() -> None:
    rng = np.random.default_rng(1)
    training, heldout = np.abs(rng.normal(size=(30, 8))), np.abs(rng.normal(size=(30, 8)))
    novel = -np.abs(rng.normal(size=(5, 8)))  # pointing away from every real row
    synthetic = np.concatenate([training[:2] * 1.0001, novel])
    check = near_copies(synthetic, training, heldout)
    assert [s["near_copy"] for s in check["samples"]] == [True, True] + [False] * 5
    assert [s["nearest_training"] for s in check["samples"][:2]] == [0, 1]
    assert check["n_near_copies"] == 2 and check["samples"][0]["cosine"] > check["threshold"]


def test_classifier_comparison_is_paired() -> None:
    labels = np.array([0, 1] * 20)
    perfect = np.eye(2)[labels]
    backwards = np.eye(2)[1 - labels]
    same = compare_classifiers(labels, perfect, perfect, ["a", "b"], n_boot=50)
    assert same["difference"]["accuracy"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    better = compare_classifiers(labels, backwards, perfect, ["a", "b"], n_boot=50)
    assert better["baseline"]["accuracy"]["value"] == 0.0 and better["candidate"]["auc"]["value"] == 1.0
    assert better["difference"]["accuracy"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert better["difference"]["recall b"] == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_a_rare_class_is_measured_by_its_recall_not_by_accuracy() -> None:
    labels = np.array([0] * 95 + [1] * 5)
    always_common = np.tile([0.9, 0.1], (100, 1))
    measures = class_measures(always_common, labels, ["common", "rare"])
    assert measures["accuracy"] == 0.95 and measures["recall rare"] == 0.0 and measures["recall common"] == 1.0
    assert measures["balanced_accuracy"] == 0.5
    # a resample without the rare class leaves its recall undefined, not zero
    absent = class_measures(always_common[:95], labels[:95], ["common", "rare"])
    assert np.isnan(absent["recall rare"]) and absent["balanced_accuracy"] == 1.0
    with pytest.raises(MedfmError, match=r"need \(100, 3\) scores"):
        compare_classifiers(labels, always_common, always_common, ["a", "b", "c"])


def test_segmenter_comparison_is_paired_and_skips_undefined_distances() -> None:
    rng = np.random.default_rng(0)
    baseline = {"dice": rng.uniform(0.3, 0.9, 40), "hd95": np.r_[np.nan, rng.uniform(2, 9, 39)]}
    candidate = {"dice": baseline["dice"] + 0.05, "hd95": np.r_[rng.uniform(2, 9, 39), np.nan]}
    compared = compare_segmenters(baseline, candidate, n_boot=50)
    # every image gains exactly 0.05: a paired interval has no width, however much the images differ
    assert compared["difference"]["dice"]["value"] == pytest.approx(0.05)
    assert compared["difference"]["dice"]["low"] == pytest.approx(0.05) and compared["difference"]["dice"]["high"] == pytest.approx(0.05)
    assert compared["baseline"]["dice"]["value"] == pytest.approx(baseline["dice"].mean())
    # HD95 is averaged over the 38 images where both are defined, on both sides
    assert compared["baseline"]["hd95"]["value"] == pytest.approx(baseline["hd95"][1:-1].mean())
    assert compared["candidate"]["hd95"]["value"] == pytest.approx(candidate["hd95"][1:-1].mean())


def test_rank_orders_generators_by_frd_and_by_precision_recall(generators: tuple[Path, Path], reference: Path) -> None:
    # generators=[]: the folders alone, not the shipped generator as well
    by_frd = rank_generators(reference, generators=[], folders=generators, n=6, steps=2, workers=1)
    frds = [row["frd"] for row in by_frd["ranking"]]
    assert [row["rank"] for row in by_frd["ranking"]] == [1, 2] and frds == sorted(frds)
    assert {row["source"] for row in by_frd["ranking"]} == {"folder"} and by_frd["n_reference"] == 8
    by_pr = rank_generators(reference, metric="precision-recall", generators=[], folders=generators, n=6, steps=2,
                            encoder=FakeEncoder())
    again = rank_generators(reference, metric="precision-recall", generators=[], folders=generators, n=6, steps=2,
                            encoder=FakeEncoder())
    assert again["ranking"] == by_pr["ranking"]  # samples come from a fixed seed
    f1s = [row["f1"] for row in by_pr["ranking"]]
    assert f1s == sorted(f1s, reverse=True) and all(0.0 <= row["precision"] <= 1.0 for row in by_pr["ranking"])


def test_rank_bad_input_is_one_line(generators: tuple[Path, Path], reference: Path, tmp_path: Path) -> None:
    with pytest.raises(MedfmError, match="unknown model 'nope'"):
        rank_generators(reference, generators=["nope"], steps=2)
    with pytest.raises(MedfmError, match="no generator to rank"):
        rank_generators(reference, generators=[])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(MedfmError, match="empty: the reference folder holds no image files"):
        rank_generators(tmp_path / "empty", folders=generators[:1])
    colour = tmp_path / "colour"
    colour.mkdir()
    for n in range(3):
        PILImage.fromarray(np.full((SIZE, SIZE, 3), 60 * n, np.uint8)).save(colour / f"{n}.png")
    with pytest.raises(MedfmError, match=r"0\.png: the reference image has 3 channel\(s\); generator .* makes 1-channel"):
        rank_generators(colour, folders=generators[:1], steps=2)
    with pytest.raises(MedfmError, match="unknown ranking metric 'fid'"):
        rank_generators(reference, metric="fid", folders=generators[:1])


def write_manifest(folder: Path) -> Path:
    """bright/dark discs: 5 training and 3 held-out images of each class (split column)."""
    data = write_classes(folder / "images", per_class=8)
    rows = [[f"images/{label}/{n}.png", label, "train" if n < 5 else "test"] for label in ("bright", "dark") for n in range(8)]
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    assert data.is_dir()
    return manifest


def test_evaluate_synthetic_compares_probes_and_checks_the_samples(generators: tuple[Path, Path], tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    result = evaluate_synthetic(generators[1], manifest, FakeEncoder(), per_class=3, steps=2, n_boot=50, workers=1)
    assert result["classes"] == ["bright", "dark"] and result["n_train"] == {"bright": 5, "dark": 5}
    assert result["n_heldout"] == {"bright": 3, "dark": 3}
    classifier = result["classifier"]
    assert classifier["real_only"]["accuracy"]["value"] == 1.0  # the fake encoder separates bright from dark
    difference = classifier["real_plus_synthetic"]["accuracy"]["value"] - classifier["real_only"]["accuracy"]["value"]
    assert classifier["difference"]["accuracy"]["value"] == pytest.approx(difference)
    assert result["frd"]["n_synthetic"] == 6 and result["frd"]["n_real"] == 6 and result["frd"]["frd"] is not None
    assert result["precision_recall"]["n_synthetic"] == 6
    samples = result["memorisation"]["samples"]
    assert [s["condition"] for s in samples] == ["bright"] * 3 + ["dark"] * 3 and len({s["seed"] for s in samples}) == 6
    training_lines = {2, 3, 4, 5, 6, 10, 11, 12, 13, 14}  # manifest lines of the training rows
    assert all(s["nearest_training_line"] in training_lines for s in samples)
    # balanced real classes: weighting the real-only probe changes nothing
    assert classifier["real_only_class_weighted"]["accuracy"] == classifier["real_only"]["accuracy"]
    weighted = classifier["real_plus_synthetic_class_weighted"]["accuracy"]["value"] - classifier["real_only_class_weighted"]["accuracy"]["value"]
    assert classifier["difference_class_weighted"]["accuracy"]["value"] == pytest.approx(weighted)


def test_evaluate_synthetic_adds_only_the_rare_class_asked_for(generators: tuple[Path, Path], tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    rare = tmp_path / "rare.csv"  # dark keeps 1 of its 5 training rows
    lines = manifest.read_text().splitlines()
    rare.write_text("\n".join(line for n, line in enumerate(lines) if n not in (10, 11, 12, 13)) + "\n")
    result = evaluate_synthetic(generators[1], rare, FakeEncoder(), per_class=4, steps=2, n_boot=50, workers=1,
                                synthetic_classes=["dark"])
    assert result["n_train"] == {"bright": 5, "dark": 1} and result["synthetic_classes"] == ["dark"]
    assert [s["condition"] for s in result["memorisation"]["samples"]] == ["dark"] * 4
    classifier = result["classifier"]
    for key in ("real_only", "real_plus_synthetic", "real_only_class_weighted", "real_plus_synthetic_class_weighted"):
        assert set(classifier[key]) == {"accuracy", "auc", "balanced_accuracy", "recall bright", "recall dark"}
    assert result["frd"]["n_synthetic"] == 4
    with pytest.raises(MedfmError, match="--synthetic-class 'grey' is not a class of the 'train' rows of .*rare.csv"):
        evaluate_synthetic(generators[1], rare, FakeEncoder(), synthetic_classes=["grey"])
    with pytest.raises(MedfmError, match="--synthetic-class is for --task cls"):
        evaluate_synthetic(generators[1], rare, FakeEncoder(), task="seg", synthetic_classes=["dark"])


def test_evaluate_synthetic_bad_input(generators: tuple[Path, Path], tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    with pytest.raises(MedfmError, match="unknown task 'det'"):
        evaluate_synthetic(generators[0], manifest, FakeEncoder(), task="det")
    other = tmp_path / "other.csv"
    other.write_text(manifest.read_text().replace("dark", "grey"))
    with pytest.raises(MedfmError, match="class 'grey' is not one of generator .*'s classes"):
        evaluate_synthetic(generators[0], other, FakeEncoder())
    no_split = tmp_path / "nosplit.csv"
    no_split.write_text("path,label\nimages/bright/0.png,bright\n")
    with pytest.raises(MedfmError, match="no column 'split'"):
        evaluate_synthetic(generators[0], no_split, FakeEncoder())


@pytest.mark.usefixtures("fake_models")
def test_cli_rank_and_evaluate_synthetic(generators: tuple[Path, Path], reference: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["models", "rank", "--reference", str(reference), "--metric", "precision-recall",
                              "--generator", str(generators[0]), "--generator", str(generators[1]), "--model", "fake-clip",
                              "--n", "5", "--steps", "2", "--json"], capsys)
    assert code == 0, err
    # the two folders: fake_models' configuration registers no generator
    assert [row["rank"] for row in json.loads(out)["ranking"]] == [1, 2]
    code, out, err = run_cli(["models", "rank", "--reference", str(reference), "--metric", "precision-recall",
                              "--generator", str(generators[0]), "--model", "fake-clip", "--n", "5", "--steps", "2"], capsys)
    assert code == 0 and out.splitlines()[1].startswith("  1. A") and "precision" in out
    code, _, err = run_cli(["models", "rank", "--reference", str(reference), "--generator", str(tmp_path / "missing")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing" in err
    manifest = write_manifest(tmp_path)
    report = tmp_path / "synthetic.html"
    code, out, err = run_cli(["evaluate", "synthetic", str(generators[1]), "--task", "cls", "--data", str(manifest),
                              "--per-class", "2", "--model", "fake-clip", "--steps", "2", "--n-boot", "20", "--workers", "1",
                              "--json", "--report", str(report)], capsys)
    assert code == 0, err
    assert json.loads(out)["synthetic_per_class"] == 2
    code, out, err = run_cli(["evaluate", "synthetic", str(generators[1]), "--data", str(manifest), "--per-class", "4",
                              "--synthetic-class", "dark", "--model", "fake-clip", "--steps", "2", "--n-boot", "20",
                              "--workers", "1"], capsys)
    assert code == 0, err
    assert "4 synthetic images per class (dark)" in out and "real only, class-weighted" in out and "recall dark" in out
    page = report.read_text()
    assert "Memorisation" in page and "real + synthetic" in page and "<script" not in page
    code, _, err = run_cli(["evaluate", "synthetic", str(generators[1]), "--task", "seg", "--data", str(manifest)], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "makes images without masks" in err


def monai_checkpoint_folder(folder: Path, pixel_range: list[float]) -> Path:
    """A generator from elsewhere: an unconditional MONAI ``DiffusionModelUNet`` saved with ``torch.save`` as
    MONAI's tutorials do, described by a config.json in GEN_DIR's form with its noise schedule and pixel range."""
    from monai.networks.nets import DiffusionModelUNet

    from medfm.models.registry import sha256_of

    torch.manual_seed(0)
    folder.mkdir()
    torch.save(DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, **TINY).state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({
        "name": "monai-ddpm", "kind": "generator", "family": "medfm_generator", "method": "ddpm", "condition": "none",
        "size": SIZE, "channels": 1, "network": TINY, "pixel_range": pixel_range,
        "scheduler": {"schedule": "scaled_linear_beta", "beta_start": 0.0005, "beta_end": 0.0195},
        "weights": {"file": "model.pt", "sha256": sha256_of(folder / "model.pt")}}))
    return folder


def test_a_monai_checkpoint_folder_loads_samples_and_is_ranked(generators: tuple[Path, Path], reference: Path,
                                                              tmp_path: Path) -> None:
    from medfm.models.generators.sampling import sample
    from medfm.models.registry import create_generator

    external = monai_checkpoint_folder(tmp_path / "monai", [0.0, 1.0])
    generator = create_generator(external)
    assert generator.pixel_range == (0.0, 1.0) and generator.weights_sha256 == json.loads((external / "config.json").read_text())["weights"]["sha256"]
    as_unit = sample(generator, [None, None], 2, 1.0, [0, 1])
    config = json.loads((external / "config.json").read_text())
    (external / "config.json").write_text(json.dumps({**config, "pixel_range": [-1.0, 1.0]}))
    as_symmetric = sample(create_generator(external), [None, None], 2, 1.0, [0, 1])
    # the same network output read in the other range: p = x for [0, 1] and p = (x + 1) / 2 for [-1, 1]
    inside = (as_unit > 0) & (as_unit < 1)
    assert torch.allclose(as_symmetric[inside], (as_unit[inside] + 1) / 2, atol=1e-5)
    (external / "config.json").write_text(json.dumps({**config, "pixel_range": [1, 1]}))
    with pytest.raises(MedfmError, match=r"pixel_range must be \[black, white\] with black < white; got \[1, 1\]"):
        create_generator(external)
    (external / "config.json").write_text(json.dumps(config))
    ranked = rank_generators(reference, metric="precision-recall", generators=[], folders=[external, generators[0]], n=5, steps=2,
                             encoder=FakeEncoder())
    assert {row["generator"] for row in ranked["ranking"]} == {"monai-ddpm", generators[0].name}
    (external / "model.pt").write_bytes(b"not a checkpoint")
    config["weights"]["sha256"] = hashlib.sha256(b"not a checkpoint").hexdigest()
    (external / "config.json").write_text(json.dumps(config))
    with pytest.raises(MedfmError, match="model.pt: not a PyTorch state dict"):
        create_generator(external)
