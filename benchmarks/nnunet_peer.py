"""nnU-Net v2 as the peer of ``medfm train seg`` in ``train_seg_bench.py``: the same split, its own commands.

nnU-Net lives in its own environment (``scripts/setup_nnunet.sh`` makes ``.venv-nnunet``;
its requirements would move packages medfm's ``.venv`` pins), so it runs as subprocesses:

1. :func:`write_raw_dataset`: medfm's training and held-out pairs (images and masks exactly
   as ``medfm train seg`` reads them) become an nnU-Net raw dataset of PNGs read by its
   ``NaturalImage2DIO``: the training split in ``imagesTr``/``labelsTr`` (labels 0..n), the
   held-out images in ``imagesTs`` only, so nnU-Net never sees their masks or their sizes.
2. ``nnUNetv2_plan_and_preprocess -c 2d`` (timed on its own), its standard planner; with
   ``scale`` (medfm's plan's resampling factor) its target spacing is set to ``1 / scale`` so
   that both tools train at the same resolution (nnU-Net's ``-overwrite_target_spacing``; it
   still chooses its own patch, batch, network, normalisation and augmentation, and its
   predictions are resampled back to each image's own grid by nnU-Net). Then
   :func:`write_split`: fold 0 trains on the whole training split; its per-epoch pseudo-Dice
   watches a few training images.
3. ``nnUNetv2_train ID 2d 0 -device cpu -tr nnUNetTrainer_WallBudget``
   (``nnunet_trainers/``: nnU-Net's trainer with its poly decay over the same wall-time budget
   as medfm's, ``checkpoint_final`` when the budget is spent); that checkpoint predicts the
   held-out images with ``nnUNetv2_predict --disable_tta`` (medfm's validation does not flip
   either), scored by the code that scores medfm's.

Both commands start through :data:`TRAIN_LAUNCHER`/:data:`PREDICT_LAUNCHER`: nnU-Net's CPU
path sets torch to every core, which would give it twice medfm's one thread on this machine;
the training launcher also prints a line per optimiser step, since nnU-Net logs only per epoch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.formats import load, save
from medfm.io.image import Image
from medfm.train.seg_data import Case, Pair, iterate_pairs
from medfm.train.seg_report import score

DATASET_ID = 990
TRAINER = "nnUNetTrainer_WallBudget"
TRAINERS_FOLDER = Path(__file__).resolve().parent / "nnunet_trainers"
#: The budget trainer's epoch: optimiser steps, then validation steps (nnU-Net's own: 250 and 50).
EPOCH_STEPS = (25, 5)
#: nnU-Net's set-up before its budget starts (network, data loaders, unpacking) and its final checkpoint
#: are outside the budget; a run that overstays it by this much is killed.
OVERSTAY_S = 600.0
#: Training images nnU-Net's per-epoch validation (pseudo-Dice, "best" checkpoint) runs on.
MONITORED_IMAGES = 8
STEP_MARK = "medfm-bench step"
_ONE_THREAD = "import sys, time, torch; torch.set_num_threads = lambda _: None; "
TRAIN_LAUNCHER = _ONE_THREAD + (
    "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as T; step = T.train_step; "
    f"T.train_step = lambda self, batch: (step(self, batch), print('{STEP_MARK}', time.time(), flush=True))[0]; "
    "from nnunetv2.run.run_training import run_training_entry as main; sys.argv[0] = 'nnUNetv2_train'; sys.exit(main())")
PREDICT_LAUNCHER = _ONE_THREAD + (
    "from nnunetv2.inference.predict_from_raw_data import predict_entry_point as main; "
    "sys.argv[0] = 'nnUNetv2_predict'; sys.exit(main())")
#: The checkpoints nnU-Net writes, most trained first; ``checkpoint_best`` is left out, being chosen by a Dice.
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth")


@dataclass(frozen=True)
class RawDataset:
    """An nnU-Net raw dataset written by :func:`write_raw_dataset`: its folder, and its case identifiers."""

    folder: Path
    training: list[str]
    held_out: dict[str, Case]

    @property
    def name(self) -> str:
        return self.folder.name


def write_raw_dataset(raw: Path, name: str, training: Iterable[Pair], held_out: Iterable[Pair],
                      labels: Mapping[int, str], dataset_id: int = DATASET_ID) -> RawDataset:
    """``raw/Dataset{id}_{name}``: the training pairs as ``imagesTr``/``labelsTr``, the held-out images as ``imagesTs``,
    PNGs in the pairs' orientation, and its ``dataset.json`` (``labels``: mask value → name, values 1..n)."""
    if sorted(labels) != list(range(1, len(labels) + 1)):
        raise MedfmError(f"nnU-Net needs label values 1..n; got {sorted(labels)}")
    folder = raw / f"Dataset{dataset_id:03d}_{name}"
    training_ids, held_cases, channels = [], {}, set()
    for role, pairs in (("Tr", training), ("Ts", held_out)):
        (folder / f"images{role}").mkdir(parents=True)
        for index, pair in enumerate(pairs):
            identifier = f"{name}_{role.lower()}{index:04d}"
            channels.add(_write_pair(folder, role, identifier, pair))
            if role == "Tr":
                training_ids.append(identifier)
            else:
                held_cases[identifier] = pair.case
    if len(channels) != 1:
        raise MedfmError(f"nnU-Net needs one channel count for every image; got {sorted(channels)}")
    count = channels.pop()
    description = {
        "name": name,
        "channel_names": dict(zip("012", "RGB")) if count == 3 else {str(c): f"channel {c}" for c in range(count)},
        "labels": {"background": 0, **{labels[value]: value for value in sorted(labels)}},
        "numTraining": len(training_ids),
        "file_ending": ".png",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
    }
    (folder / "dataset.json").write_text(json.dumps(description, indent=2))
    return RawDataset(folder, training_ids, held_cases)


def _write_pair(folder: Path, role: str, identifier: str, pair: Pair) -> int:
    """The pair's image as one PNG (an RGB image is one file, as NaturalImage2DIO reads it) and, for training, its
    mask; returns the image's channel count."""
    if pair.kind != "2d":
        raise MedfmError(f"{display_path(pair.case.image)}: the nnU-Net peer takes 2D images; this is a {pair.kind}")
    channels = pair.pixels.shape[0]
    save(Image(np.moveaxis(pair.pixels[..., 0], 0, -1)[:, :, None, None, :]), folder / f"images{role}" / f"{identifier}_0000.png")
    if role == "Tr":
        (folder / "labelsTr").mkdir(exist_ok=True)
        save(Image(pair.mask[..., 0].astype(np.uint8)), folder / "labelsTr" / f"{identifier}.png")
    return channels


def write_split(preprocessed: Path, dataset: RawDataset) -> Path:
    """Fold 0 of ``splits_final.json``: trains on every training image; validation watches the first few of them."""
    path = preprocessed / dataset.name / "splits_final.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"train": dataset.training, "val": dataset.training[:MONITORED_IMAGES]}], indent=2))
    return path


def nnunet_environment(work: Path, budget_s: float) -> dict[str, str]:
    """The environment of every nnU-Net command: its three folders under ``work``, the budget trainer's folder, budget
    and epoch, one thread, augmentation in-process."""
    folders = {key: str(work / key) for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    return {**os.environ, **folders, "nnUNet_extTrainer": str(TRAINERS_FOLDER), "MEDFM_BENCH_BUDGET_S": str(budget_s),
            "MEDFM_BENCH_EPOCH_STEPS": ",".join(map(str, EPOCH_STEPS)),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "nnUNet_n_proc_DA": "0"}


def target_spacing_arguments(scale: float | None) -> list[str]:
    """``-overwrite_target_spacing`` for nnU-Net's planner so that it resamples by ``scale`` as medfm's plan does
    (NaturalImage2DIO gives every PNG the spacing 999, 1, 1); nothing at scale 1 or without one."""
    if scale is None or scale == 1.0:
        return []
    if not 0.0 < scale < 1.0:
        raise MedfmError(f"the resampling scale must lie in (0, 1]; got {scale}")
    return ["-overwrite_target_spacing", "999", *[f"{1.0 / scale:.6g}"] * 2]


def plan_summary(plans: Mapping[str, Any]) -> dict[str, Any]:
    """The 2D configuration of ``nnUNetPlans.json``: what the comparison's reader needs to judge nnU-Net's pace."""
    config = plans["configurations"]["2d"]
    architecture = config["architecture"]["arch_kwargs"]
    return {"patch_size": config["patch_size"], "batch_size": config["batch_size"],
            "median_image_size": config["median_image_size_in_voxels"], "spacing": config["spacing"],
            "stages": architecture["n_stages"], "features_per_stage": architecture["features_per_stage"]}


def saved_checkpoint(fold: Path) -> Path | None:
    """The most trained checkpoint nnU-Net saved in ``fold`` (final, else latest), or None."""
    return next((fold / name for name in CHECKPOINTS if (fold / name).is_file()), None)


def step_times(output: str) -> list[float]:
    """The wall-clock times of the optimiser steps :data:`TRAIN_LAUNCHER` marked in nnU-Net's output."""
    return [float(match) for match in re.findall(rf"^{STEP_MARK} (\S+)$", output, flags=re.MULTILINE)]


def epoch_times(log_text: str) -> list[float]:
    """nnU-Net's per-epoch wall times (training and its validation iterations) from its training log."""
    return [float(match) for match in re.findall(r"Epoch time: ([0-9.]+) s", log_text)]


def run_command(name: str, command: list[str], environment: Mapping[str, str], log_path: Path,
                budget_s: float | None = None) -> tuple[float, bool]:
    """Run ``command`` with its output in ``log_path``; with ``budget_s``, kill its process group when the budget is
    spent. Returns ``(seconds, finished)``; a command that fails on its own raises, naming its log."""
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=dict(environment), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return time.monotonic() - started, False
    if process.returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise MedfmError(f"{name} failed (exit {process.returncode}): {tail[0]}; see {log_path}")
    return time.monotonic() - started, True


def predicted_pairs(dataset: RawDataset, predictions: Path, labels: Mapping[int, str]
                    ) -> Iterator[tuple[Pair, np.ndarray]]:
    """Each held-out pair (read as medfm reads it) with nnU-Net's label map for it, ``(I, J, 1)``."""
    identifiers = list(dataset.held_out)
    for identifier, pair in zip(identifiers, iterate_pairs([dataset.held_out[i] for i in identifiers], labels)):
        yield pair, np.asarray(load(predictions / f"{identifier}.png").array)[:, :, :, 0, 0]


def run_peer(python: Path, name: str, training: list[Case], held_out: list[Case], labels: Mapping[int, str],
             budget_s: float, work: Path, log: Callable[[str], None], scale: float | None = None) -> dict[str, Any]:
    """Convert, plan (at medfm's resampling ``scale`` when given) and preprocess, train for ``budget_s`` and score
    the held-out images as medfm's row is scored."""
    environment = nnunet_environment(work, budget_s)
    tools = python.parent
    started = time.monotonic()
    dataset = write_raw_dataset(work / "nnUNet_raw", name, iterate_pairs(training, labels),
                                iterate_pairs(held_out, labels), labels)
    spacing = target_spacing_arguments(scale)
    report: dict[str, Any] = {"trainer": TRAINER, "target_spacing_override": spacing[1:] or None,
                              "conversion_s": round(time.monotonic() - started, 1)}
    log(f"nnU-Net: {dataset.name} written; planning and preprocessing")
    seconds, _ = run_command("nnUNetv2_plan_and_preprocess",
                             [str(tools / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d",
                              "--verify_dataset_integrity", "-np", "1", "-npfp", "1", *spacing],
                             # its planner sets torch's threads to this count, and 0 is refused
                             {**environment, "nnUNet_n_proc_DA": "1"}, work / "plan_and_preprocess.log")
    plans = json.loads((work / "nnUNet_preprocessed" / dataset.name / "nnUNetPlans.json").read_text())
    report.update(preprocessing_s=round(seconds, 1), plan=plan_summary(plans))
    write_split(work / "nnUNet_preprocessed", dataset)
    log(f"nnU-Net: plan {report['plan']}; training {TRAINER} for {budget_s:.0f} s")
    launched = time.time()
    seconds, finished = run_command("nnUNetv2_train", [str(python), "-c", TRAIN_LAUNCHER, str(DATASET_ID), "2d", "0",
                                                       "-device", "cpu", "-tr", TRAINER],
                                    environment, work / "train.log", budget_s + OVERSTAY_S)
    steps = step_times((work / "train.log").read_text())
    fold = work / "nnUNet_results" / dataset.name / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    training_log = next(fold.glob("training_log_*.txt"), None)
    epochs = epoch_times(training_log.read_text()) if training_log else []
    batch = report["plan"]["batch_size"]
    report.update(
        process_s=round(seconds, 1), killed_for_overstaying=not finished, steps=len(steps), epochs_completed=len(epochs),
        iterations_per_epoch=EPOCH_STEPS[0], epoch_s=epochs,
        first_step_after_s=round(steps[0] - launched, 1) if steps else None,
        train_images_per_s=round(len(steps) * batch / seconds, 3),
        train_images_per_s_after_first_step=(round((len(steps) - 1) * batch / (steps[-1] - steps[0]), 3)
                                             if len(steps) > 1 else None))
    checkpoint = saved_checkpoint(fold)
    if checkpoint is None:
        report["val_dice"] = (f"not measured: nnU-Net saved no checkpoint within {budget_s + OVERSTAY_S:.0f} s "
                              f"(it made {len(steps)} steps)")
        return report
    log(f"nnU-Net: predicting {len(dataset.held_out)} held-out images from {checkpoint.name}")
    predictions = work / "predictions"
    seconds, _ = run_command("nnUNetv2_predict",
                             [str(python), "-c", PREDICT_LAUNCHER, "-i", str(dataset.folder / "imagesTs"),
                              "-o", str(predictions), "-d", str(DATASET_ID), "-c", "2d", "-f", "0", "-tr", TRAINER,
                              "-chk", checkpoint.name, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
                             environment, work / "predict.log")
    validation = score(predicted_pairs(dataset, predictions, labels), labels, by_group=True)
    report.update(checkpoint=checkpoint.name, prediction_s=round(seconds, 1), val_images=len(dataset.held_out),
                  val_dice=validation["1"]["dice"], val_hd95=validation["1"]["hd95"])
    return report
