"""``medfm train seg`` and ``medfm segment --auto`` on generated discs: plan, training, resume, inference, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from clitools import run_cli
from killtools import kill_after_checkpoint, step_of
from segdata import write_discs
from medfm.errors import MedfmError
from medfm.io.formats import load
from medfm.models.registry import create_auto_segmenter, list_auto_architectures, sha256_of
from medfm.train.seg import train_segmenter
from medfm.train.seg_data import fingerprint, read_cases, split_cases
from medfm.train.seg_plan import make_plan

SMALL = {"batch_size": "8"}


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_discs(tmp_path_factory.mktemp("discs"))


@pytest.fixture(scope="module")
def trained(discs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("models") / "discs-model"
    summary = train_segmenter(discs, out, max_steps=40, plan_overrides=SMALL, group_column="subject")
    return out, summary


def trivial_dice(manifest: Path) -> float:
    """Dice of calling every pixel foreground, over the held-out images: what a net must beat."""
    _, held_out = split_cases(read_cases(manifest, "subject"))
    scores = []
    for case in held_out:
        mask = np.asarray(PILImage.open(case.masks[0])) > 0
        scores.append(2 * mask.sum() / (mask.sum() + mask.size))
    return float(np.mean(scores))


def test_training_lowers_the_loss_and_beats_the_trivial_baseline(trained, discs):
    out, summary = trained
    assert summary["steps"] == 40
    assert summary["loss_last_10"] < summary["loss_first_10"]
    dice = summary["validation"]["1"]["dice"]
    assert dice["value"] > trivial_dice(discs) + 0.1
    assert dice["low"] <= dice["value"] <= dice["high"]


def test_model_dir_is_complete_and_verified(trained):
    out, summary = trained
    assert sorted(p.name for p in out.iterdir()) == ["card.md", "config.json", "fingerprint.json", "plan.json",
                                                     "weights.safetensors"]
    assert not (out.parent / f".{out.name}.partial").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["weights"]["sha256"] == sha256_of(out / "weights.safetensors")
    assert json.loads((out / "plan.json").read_text())["labels"] == {"1": "foreground"}
    fingerprint_record = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint_record["shape"]["median"] == [32, 32] and 0 < fingerprint_record["class_frequency"]["1"] < 0.5
    card = (out / "card.md").read_text()
    assert f"{summary['validation']['1']['dice']['value']:.3f}" in card and "HD95" in card
    # PNGs have no physical scale: their HD95 is in pixels, and the card says so
    assert fingerprint_record["spacing_known"] is False and "HD95 pixels" in card and "HD95 mm" not in card


def test_damaged_weights_are_refused(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in out.iterdir():
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    weights = copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(MedfmError, match="weights.safetensors: does not match the sha256"):
        create_auto_segmenter(copy)


def test_auto_segment_writes_one_png_per_input_with_provenance(trained, discs, tmp_path, capsys):
    out, _ = trained
    images = sorted((discs.parent / "images").iterdir())
    code, stdout, stderr = run_cli(["segment", "--auto", "--model", str(out), str(images[0]), str(images[1]),
                                    "--flips", "--largest-component", "-o", str(tmp_path / "seg"), "--json"], capsys)
    assert code == 0, stderr
    results = json.loads(stdout)["results"]
    assert [Path(r["output"]).name for r in results] == [images[0].name, images[1].name]
    written = load(tmp_path / "seg" / images[0].name)
    config = json.loads((out / "config.json").read_text())
    record = written.provenance
    assert record.model == "discs-model" and record.weights_sha256 == config["weights"]["sha256"]
    assert tuple(record.parameters["plan"]["patch_size"]) == (32, 32) and record.parameters["flips"] is True
    labels = written.array[:, :, 0, 0, 0]
    from scipy import ndimage
    assert ndimage.label(labels > 0)[1] <= 1  # the largest component only
    # prompts mean nothing to a trained model: refused, not silently dropped
    code, _, stderr = run_cli(["segment", "--auto", "--model", str(out), str(images[0]), "--point", "3,3",
                               "-o", str(tmp_path / "prompted")], capsys)
    assert code == 2 and stderr == "medfm: error: --auto segments without prompts; it cannot be combined with --point\n"
    assert not (tmp_path / "prompted").exists()


def test_auto_segment_of_a_folder_matches_the_library(trained, discs, tmp_path, capsys):
    from medfm.tasks.auto_segment import auto_segment

    out, _ = trained
    code, _, stderr = run_cli(["segment", "--auto", "--model", str(out), str(discs.parent / "images"),
                               "-o", str(tmp_path / "seg")], capsys)
    assert code == 0, stderr
    assert len(list((tmp_path / "seg").iterdir())) == 16
    image_path = discs.parent / "images" / "case03.png"
    expected = auto_segment(load(image_path), create_auto_segmenter(out), image_path).array[:, :, 0, 0, 0]
    assert np.array_equal(load(tmp_path / "seg" / "case03.png").array[:, :, 0, 0, 0] > 0, expected > 0)


def test_refused_auto_segment_leaves_no_output_folder(trained, discs, tmp_path, capsys):
    out, _ = trained
    image = sorted((discs.parent / "images").iterdir())[0]
    code, _, stderr = run_cli(["segment", "--auto", "--model", str(out), str(image), "--suffix", ".dcm",
                               "-o", str(tmp_path / "seg")], capsys)
    assert code == 2 and "DICOM SEG output needs a DICOM input" in stderr
    assert not (tmp_path / "seg").exists()


def test_interrupted_training_resumes_from_its_checkpoint(discs, tmp_path):
    out = tmp_path / "model"

    def interrupt(step: int, loss: float) -> None:
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_segmenter(discs, out, max_steps=10, plan_overrides=SMALL, checkpoint_seconds=0, on_step=interrupt)
    assert not out.exists()
    assert (tmp_path / ".model.partial" / "checkpoint.pt").is_file()
    with pytest.raises(MedfmError, match="interrupted training .* pass --resume"):
        train_segmenter(discs, out, max_steps=10, plan_overrides=SMALL)
    summary = train_segmenter(discs, out, max_steps=10, resume=True)
    assert summary["steps"] == 10 and summary["resumed_at_steps"] == [5]
    assert json.loads((out / "plan.json").read_text())["batch_size"] == 8  # the plan of the first run
    assert not (tmp_path / ".model.partial").exists()


def test_plan_follows_the_fingerprint_and_takes_overrides(discs):
    print_, labels = fingerprint(read_cases(discs), None)
    plan = make_plan(print_, labels)
    assert (plan.scale, plan.patch_size, plan.normalisation) == (1.0, (32, 32), "zscore")
    ct = {**print_, "modality": ["CT"]}
    ct_plan = make_plan(ct, labels, "auto-dynunet", {"patch_size": "[16, 16]"})
    assert ct_plan.normalisation == "ct_clip" and ct_plan.patch_size == (16, 16)
    assert ct_plan.clip == (print_["intensity"]["foreground_percentile_0_5"], print_["intensity"]["foreground_percentile_99_5"])
    with pytest.raises(MedfmError, match="no setting 'patchsize'"):
        make_plan(print_, labels, None, {"patchsize": "[16, 16]"})
    with pytest.raises(MedfmError, match="unknown architecture 'nope'"):
        make_plan(print_, labels, "nope")


@pytest.mark.parametrize("name", sorted(list_auto_architectures()))
def test_every_architecture_trains_a_step(name, discs, tmp_path):
    summary = train_segmenter(discs, tmp_path / name, architecture=name, max_steps=2, plan_overrides={"batch_size": "2"})
    assert summary["steps"] == 2 and json.loads((tmp_path / name / "config.json").read_text())["architecture"] == name


def bad(tmp_path: Path, rows: list[str]) -> Path:
    write_discs(tmp_path, count=4)
    manifest = tmp_path / "bad.csv"
    manifest.write_text("\n".join(["image,mask", *rows]) + "\n")
    return manifest


@pytest.mark.parametrize("case, rows, extra, message", [
    ("missing mask", ["images/case00.png,masks/case00.png", "images/case01.png,"], [], r"bad\.csv, line 3: images/case01\.png has no mask"),
    ("mask not found", ["images/case00.png,masks/case00.png", "images/case01.png,masks/none.png"], [], r"none\.png: listed in"),
    ("empty dataset", [], [], r"bad\.csv: the manifest has no rows"),
    ("budget 0", ["images/case00.png,masks/case00.png", "images/case01.png,masks/case01.png"], ["--budget-min", "0"],
     "must be above 0"),
    ("shape", ["images/case00.png,masks/case00.png", "images/case01.png,masks/small.png"], [], r"small\.png: mask shape \(16, 16\) differs"),
    ("undeclared", ["images/case00.png,masks/case00.png", "images/case01.png,masks/three.png"], ["--labels", "1=disc"],
     r"three\.png: holds label value 3, not declared"),
])
def test_bad_input_is_one_line_naming_the_file(case, rows, extra, message, tmp_path, capsys):
    manifest = bad(tmp_path, rows)
    PILImage.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / "small.png")
    three = np.zeros((32, 32), np.uint8)
    three[4:9, 4:9] = 3
    PILImage.fromarray(three).save(tmp_path / "masks" / "three.png")
    code, stdout, stderr = run_cli(["train", "seg", str(manifest), "-o", str(tmp_path / "model"), *extra], capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("medfm: error: ")]
    assert code == 2 and len(errors) == 1 and stderr.strip().endswith(errors[0]) and "Traceback" not in stderr, stderr
    assert re.search(message, errors[0]), stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("architecture, family, setting", [("auto-transunet", "transunet", ("transformer_layers", 2)),
                                                         ("auto-compact", "compact_macmd", ("dilations", [1, 2, 3]))])
def test_the_other_architectures_learn_the_discs(discs, tmp_path, architecture, family, setting):
    summary = train_segmenter(discs, tmp_path / "model", architecture=architecture, max_steps=40,
                              plan_overrides=SMALL, group_column="subject")
    assert summary["loss_last_10"] < summary["loss_first_10"]
    assert summary["validation"]["1"]["dice"]["value"] > trivial_dice(discs) + 0.1
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["network"]["family"] == family and config["network"][setting[0]] == setting[1]


def test_a_training_killed_with_sigkill_resumes_from_its_last_checkpoint(discs, tmp_path):
    out = tmp_path / "model"
    checkpoint = tmp_path / ".model.partial" / "checkpoint.pt"
    code = ("from medfm.train.seg import train_segmenter\n"
            f"train_segmenter({str(discs)!r}, {str(out)!r}, max_steps=10**6, checkpoint_seconds=0, "
            "plan_overrides={'batch_size': '2'})\n")
    kill_after_checkpoint(["-c", code], checkpoint)
    assert not out.exists()
    step = step_of(checkpoint)
    summary = train_segmenter(discs, out, max_steps=step + 3, resume=True)
    assert step >= 1 and summary["steps"] == step + 3 and summary["resumed_at_steps"] == [step]
    assert (out / "weights.safetensors").is_file() and not checkpoint.parent.exists()


@pytest.mark.parametrize("case", ["4d", "mixed", "video mask frames"])
def test_inputs_of_the_wrong_kind_are_one_line_naming_the_file(case, tmp_path, capsys):
    import nibabel as nib

    def save(name: str, array: np.ndarray) -> str:
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / name)
        return name

    rows = {
        "4d": [(save("a.nii.gz", np.zeros((8, 8, 4, 3), np.float32)), save("am.nii.gz", np.zeros((8, 8, 4, 3), np.uint8)))],
        "mixed": [(save("v.nii.gz", np.ones((8, 8, 16), np.float32)), save("vm.nii.gz", np.ones((8, 8, 16), np.uint8)))],
        "video mask frames": [(save("f.nii.gz", np.zeros((8, 8, 1, 5), np.float32)),
                               save("fm.nii.gz", np.zeros((8, 8, 1, 4), np.uint8)))],
    }[case]
    write_discs(tmp_path, count=4)
    listed = [*rows, *[(f"images/case0{n}.png", f"masks/case0{n}.png") for n in range(4)]]
    (tmp_path / "d.csv").write_text("image,mask\n" + "\n".join(f"{i},{m}" for i, m in listed) + "\n")
    code, _, stderr = run_cli(["train", "seg", str(tmp_path / "d.csv"), "-o", str(tmp_path / "model")], capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("medfm: error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr
    expected = {"4d": "a.nii.gz: is (8, 8, 4, 3) (I, J, K, T), a 4D series",
                "mixed": "the images mix 2d and volume inputs",
                "video mask frames": "fm.nii.gz: mask shape (8, 8, 4) differs from its image's (8, 8, 5)"}[case]
    assert expected in errors[0], stderr
    assert not (tmp_path / "model").exists()
