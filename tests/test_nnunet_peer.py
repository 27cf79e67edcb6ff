"""The pure parts of the nnU-Net peer of benchmarks/train_seg_bench.py: its raw dataset, split and log reading.

nnunetv2 itself is not needed: the files are checked against what its NaturalImage2DIO reads
(one PNG per image, RGB in one file; labels 0..n) and its dataset.json fields.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from medfm.errors import MedfmError
from medfm.train.seg_data import Case, iterate_pairs

_spec = importlib.util.spec_from_file_location("nnunet_peer", Path(__file__).parent.parent / "benchmarks" / "nnunet_peer.py")
nnunet_peer = importlib.util.module_from_spec(_spec)
sys.modules["nnunet_peer"] = nnunet_peer
_spec.loader.exec_module(nnunet_peer)

LABELS = {1: "head"}


def _cases(folder: Path, count: int, colour: bool = False) -> list[Case]:
    """``count`` 5×7 images (rows × columns, so a transposition would show) with 0/255 masks."""
    rng = np.random.default_rng(0)
    cases = []
    for index in range(count):
        pixels = rng.integers(0, 256, (5, 7, 3) if colour else (5, 7), dtype=np.uint8)
        mask = np.zeros((5, 7), dtype=np.uint8)
        mask[1:3, index:index + 4] = 255
        PILImage.fromarray(pixels).save(folder / f"image{index}.png")
        PILImage.fromarray(mask).save(folder / f"mask{index}.png")
        cases.append(Case(str(folder / f"image{index}.png"), (str(folder / f"mask{index}.png"),), f"subject{index}"))
    return cases


def _write(tmp_path: Path, cases: list[Case], held: int = 1):
    return nnunet_peer.write_raw_dataset(tmp_path / "raw", "tiny", iterate_pairs(cases[held:], LABELS),
                                         iterate_pairs(cases[:held], LABELS), LABELS)


def test_raw_dataset_holds_the_training_pairs_and_only_the_held_out_images(tmp_path):
    cases = _cases(tmp_path, 3)
    dataset = _write(tmp_path, cases)
    assert dataset.folder == tmp_path / "raw" / "Dataset990_tiny"
    assert json.loads((dataset.folder / "dataset.json").read_text()) == {
        "name": "tiny", "channel_names": {"0": "channel 0"}, "labels": {"background": 0, "head": 1},
        "numTraining": 2, "file_ending": ".png", "overwrite_image_reader_writer": "NaturalImage2DIO"}
    assert dataset.training == ["tiny_tr0000", "tiny_tr0001"]
    assert {name: Path(case.image).name for name, case in dataset.held_out.items()} == {"tiny_ts0000": "image0.png"}
    assert sorted(p.name for p in (dataset.folder / "labelsTr").iterdir()) == ["tiny_tr0000.png", "tiny_tr0001.png"]
    assert [p.name for p in (dataset.folder / "imagesTs").iterdir()] == ["tiny_ts0000_0000.png"]
    assert not (dataset.folder / "labelsTs").exists()
    for identifier, case in zip(dataset.training, cases[1:]):
        image = np.asarray(PILImage.open(dataset.folder / "imagesTr" / f"{identifier}_0000.png"))
        label = np.asarray(PILImage.open(dataset.folder / "labelsTr" / f"{identifier}.png"))
        np.testing.assert_array_equal(image, np.asarray(PILImage.open(case.image)))
        np.testing.assert_array_equal(label, np.asarray(PILImage.open(case.masks[0])) // 255)  # 0/255 becomes 0/1


def test_a_colour_image_is_one_file_with_three_named_channels(tmp_path):
    cases = _cases(tmp_path, 2, colour=True)
    dataset = _write(tmp_path, cases)
    assert json.loads((dataset.folder / "dataset.json").read_text())["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    written = np.asarray(PILImage.open(dataset.folder / "imagesTs" / "tiny_ts0000_0000.png"))
    np.testing.assert_array_equal(written, np.asarray(PILImage.open(cases[0].image)))
    assert sorted(p.name for p in (dataset.folder / "imagesTr").iterdir()) == ["tiny_tr0000_0000.png"]


def test_label_values_must_run_from_one(tmp_path):
    cases = _cases(tmp_path, 2)
    with pytest.raises(MedfmError, match="label values 1..n"):
        nnunet_peer.write_raw_dataset(tmp_path / "raw", "tiny", iterate_pairs(cases, LABELS), [], {2: "head"})


def test_fold_zero_trains_on_every_training_image(tmp_path):
    dataset = _write(tmp_path, _cases(tmp_path, 12))
    path = nnunet_peer.write_split(tmp_path / "preprocessed", dataset)
    assert path == tmp_path / "preprocessed" / "Dataset990_tiny" / "splits_final.json"
    (fold,) = json.loads(path.read_text())
    assert fold["train"] == dataset.training and len(fold["train"]) == 11
    assert fold["val"] == dataset.training[:nnunet_peer.MONITORED_IMAGES]
    assert not set(fold["val"]) & set(dataset.held_out)


def test_the_most_trained_checkpoint_is_chosen_and_never_the_best(tmp_path):
    assert nnunet_peer.saved_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint_best.pth").write_bytes(b"")
    assert nnunet_peer.saved_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint_latest.pth").write_bytes(b"")
    assert nnunet_peer.saved_checkpoint(tmp_path) == tmp_path / "checkpoint_latest.pth"
    (tmp_path / "checkpoint_final.pth").write_bytes(b"")
    assert nnunet_peer.saved_checkpoint(tmp_path) == tmp_path / "checkpoint_final.pth"


def test_steps_and_epochs_are_read_from_the_output_and_the_log():
    output = f"nnU-Net says hello\n{nnunet_peer.STEP_MARK} 100.5\nnoise\n{nnunet_peer.STEP_MARK} 103.25\n"
    assert nnunet_peer.step_times(output) == [100.5, 103.25]
    log = "2026-12-04 17:00:00: Epoch time: 812.4 s\n2026-12-04 17:14:00: Epoch time: 799.01 s\n"
    assert nnunet_peer.epoch_times(log) == [812.4, 799.01]


def test_plan_summary_reads_the_2d_configuration():
    plans = {"configurations": {"2d": {
        "patch_size": [512, 768], "batch_size": 12, "median_image_size_in_voxels": [540.0, 800.0], "spacing": [1.0, 1.0],
        "architecture": {"arch_kwargs": {"n_stages": 8, "features_per_stage": [32, 64]}}}}}
    assert nnunet_peer.plan_summary(plans) == {"patch_size": [512, 768], "batch_size": 12,
                                               "median_image_size": [540.0, 800.0], "spacing": [1.0, 1.0],
                                               "stages": 8, "features_per_stage": [32, 64]}


def test_nnunet_plans_at_medfm_scale_through_its_target_spacing():
    # NaturalImage2DIO gives each PNG the spacing (999, 1, 1): resampling by 0.25 is a spacing of 4 in-plane
    assert nnunet_peer.target_spacing_arguments(0.25) == ["-overwrite_target_spacing", "999", "4", "4"]
    assert nnunet_peer.target_spacing_arguments(0.6547) == ["-overwrite_target_spacing", "999", "1.52742", "1.52742"]
    assert nnunet_peer.target_spacing_arguments(1.0) == []
    assert nnunet_peer.target_spacing_arguments(None) == []
    with pytest.raises(MedfmError, match="scale must lie in"):
        nnunet_peer.target_spacing_arguments(1.5)


def test_every_nnunet_command_finds_the_budget_trainer_and_its_budget(tmp_path):
    environment = nnunet_peer.nnunet_environment(tmp_path, 600.0)
    trainer = Path(environment["nnUNet_extTrainer"]) / f"{nnunet_peer.TRAINER}.py"
    assert trainer.is_file() and f"class {nnunet_peer.TRAINER}(" in trainer.read_text()
    assert environment["MEDFM_BENCH_BUDGET_S"] == "600.0" and environment["MEDFM_BENCH_EPOCH_STEPS"] == "25,5"
    assert 'os.environ["MEDFM_BENCH_EPOCH_STEPS"]' in trainer.read_text()
    assert environment["nnUNet_results"] == str(tmp_path / "nnUNet_results")
