"""``medfm train seg`` and ``segment --auto``: 3D sliding-window inference time against MONAI, and Dice after a budget.

1. **Sliding window** (always; no data needed): one volume (default 256×256×128, random
   values) segmented by medfm's :meth:`AutoSegmenter.probabilities` (normalisation, MONAI's
   Gaussian-blended sliding window, softmax, back on the input grid) and by MONAI's bare
   ``sliding_window_inference`` with the same network, patch, overlap and blending, in the
   same run; the ratio medfm / MONAI is the cost of medfm's pipeline around MONAI.
2. **Training** (``--hc18-budget-min N``, ``--fundus-budget-min N``, need ``../shared/data``):
   ``train_segmenter`` on HC18's dev split (``scale=0.25``, as docs/automatic-segmentation.md)
   or on the fundus-vessel images (first observer's masks) for N minutes, then held-out Dice
   (20 % of the subject groups) and training images/s; then, in the same run, the issue's peer,
   nnU-Net v2 (:mod:`nnunet_peer`: its standard 2D planner at medfm's plan's resolution, or
   at the images' own with ``--nnunet-resolution native``; its trainer with the same wall-time
   budget, one thread) on exactly that split, scored by the same code. Without nnU-Net's
   environment (``scripts/setup_nnunet.sh``) the peer is reported as not measured.

    python benchmarks/train_seg_bench.py [--shape 256,256,128] [--architecture auto-unet] [--hc18-budget-min 10]
        [--fundus-budget-min 10] [--nnunet-python .venv-nnunet/bin/python] [--nnunet-resolution medfm|native]
        [--skip-sliding-window]

Prints JSON. Run it with ``nice -n 10`` and ``MEDFM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from nnunet_peer import run_peer

from medfm.models.automatic.network import build_network
from medfm.models.automatic.plan import Plan, normalise
from medfm.models.automatic.segmenter import AutoSegmenter
from medfm.models.segmenters.base import SegmenterInfo
from medfm.paths import shared_data_dir
from medfm.train.seg_plan import architecture_config

NNUNET_PYTHON = Path(__file__).resolve().parent.parent / ".venv-nnunet" / "bin" / "python"
NNUNET_ABSENT = "not measured: nnunetv2 environment absent, run scripts/setup_nnunet.sh"


def sliding_window(shape: tuple[int, int, int], architecture: str, patch: int, repeats: int) -> dict:
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    plan = Plan(dims=3, in_channels=1, labels={1: "structure"}, scale=1.0, patch_size=(patch,) * 3, batch_size=2,
                normalisation="zscore", architecture=architecture, target_spacing=(1.0, 1.0, 1.0))
    network = build_network(architecture_config(architecture), 1, plan.out_channels, 3).eval()
    segmenter = AutoSegmenter(network, plan, SegmenterInfo("bench"))
    pixels = np.random.default_rng(0).normal(100, 30, (1, *shape)).astype(np.float32)

    def medfm_run() -> np.ndarray:
        return segmenter.probabilities(pixels, (1.0, 1.0, 1.0))

    def monai_run() -> np.ndarray:
        with torch.no_grad():
            batch = torch.from_numpy(normalise(pixels, plan))[None]
            logits = sliding_window_inference(batch, plan.patch_size, 4, network, overlap=plan.sliding_window_overlap,
                                              mode="gaussian")
            return torch.softmax(logits, dim=1)[0].numpy()

    with torch.no_grad():
        network(torch.zeros((1, 1, patch, patch, patch)))  # warm-up: the first call allocates, in neither timing
    times: dict[str, list[float]] = {"medfm": [], "monai": []}
    outputs = {}
    for _ in range(repeats):
        for name, run in (("monai", monai_run), ("medfm", medfm_run)):
            started = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in times.items()}
    return {"volume": list(shape), "architecture": architecture, "patch": [patch] * 3,
            "overlap": plan.sliding_window_overlap, "blending": "gaussian", "repeats": repeats,
            "medfm_s": round(best["medfm"], 3), "monai_s": round(best["monai"], 3),
            "ratio_medfm_over_monai": round(best["medfm"] / best["monai"], 3),
            "max_probability_difference": float(np.abs(outputs["medfm"] - outputs["monai"]).max())}


def fundus_manifest(data: Path, folder: Path) -> Path:
    """The fundus-vessel images with their first observer's masks only (the shared manifest's second-observer column
    would be fused in), grouped by dataset and subject (a CHASE_DB1 subject's two eyes together)."""
    path = folder / "fundus_manifest.csv"
    with open(data / "fundus_vessels" / "manifest.csv", newline="") as source, open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["image", "mask", "subject", "dataset"])
        for row in csv.DictReader(source):
            writer.writerow([data / "fundus_vessels" / row["image"], data / "fundus_vessels" / row["mask"],
                             f"{row['dataset']}-{row['subject']}", row["dataset"]])
    return path


def medfm_and_peer(name: str, manifest: Path, group_column: str, only: dict[str, str] | None,
                   plan_overrides: dict[str, str] | None, budget_minutes: float, architecture: str | None,
                   nnunet_python: Path | None, nnunet_at_medfm_scale: bool, folder: Path) -> dict:
    """``train_segmenter`` for the budget, then nnU-Net on the same training/held-out split for the same budget."""
    from medfm.train.seg import collect_cases, train_segmenter
    from medfm.train.seg_data import split_cases

    def log(line: str) -> None:
        print(f"[{name}] {line}", file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    summary = train_segmenter(manifest, folder / name, architecture=architecture, budget_minutes=budget_minutes,
                              group_column=group_column, only=only, plan_overrides=plan_overrides, log=log)
    plan = json.loads((folder / name / "plan.json").read_text())
    dice = summary["validation"]["1"]["dice"]
    medfm_row = {"plan_overrides": plan_overrides or {}, "scale": plan["scale"], "patch_size": plan["patch_size"],
                 "batch_size": plan["batch_size"], "steps": summary["steps"],
                 "training_seconds": summary["training_seconds"],
                 "train_images_per_s": round(summary["steps"] * plan["batch_size"] / summary["training_seconds"], 2),
                 "val_images": summary["val_images"], "val_dice": dice, "val_hd95": summary["validation"]["1"]["hd95"],
                 "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    report = {"budget_minutes": budget_minutes, "train_images": summary["train_images"], "medfm": medfm_row}
    if nnunet_python is None:
        report["nnunet"] = NNUNET_ABSENT
        return report
    training, held_out = split_cases(collect_cases(manifest, group_column=group_column, only=only))
    labels = {int(value): label for value, label in plan["labels"].items()}
    load_before = os.getloadavg()
    peer = run_peer(nnunet_python, name, training, held_out, labels, budget_minutes * 60.0, folder / "nnunet", log,
                    scale=plan["scale"] if nnunet_at_medfm_scale else None)
    peer["load_average_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    report["nnunet"] = peer
    if isinstance(peer["val_dice"], dict):
        report["dice_ratio_medfm_over_nnunet"] = round(dice["value"] / peer["val_dice"]["value"], 3)
    return report


def training_rows(args: argparse.Namespace, nnunet_python: Path | None) -> dict:
    data = args.data or shared_data_dir()
    rows = {}
    at_medfm_scale = args.nnunet_resolution == "medfm"
    for name, budget in (("hc18", args.hc18_budget_min), ("fundus_vessels", args.fundus_budget_min)):
        if not budget:
            continue
        source = data / ("hc18_fetal_head_us" if name == "hc18" else "fundus_vessels") / "manifest.csv"
        if not source.is_file():
            rows[name] = {"skipped": f"{source} is absent"}
            continue
        with tempfile.TemporaryDirectory() as folder:
            if name == "hc18":
                rows[name] = medfm_and_peer(name, source, "subject_group", {"split": "dev"}, {"scale": "0.25"}, budget,
                                            args.architecture, nnunet_python, at_medfm_scale, Path(folder))
            else:
                rows[name] = medfm_and_peer(name, fundus_manifest(data, Path(folder)), "subject", None, None, budget,
                                            args.architecture, nnunet_python, at_medfm_scale, Path(folder))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256,256,128", help="Volume for the sliding-window timing, I,J,K.")
    parser.add_argument("--architecture", default="auto-unet")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--hc18-budget-min", type=float, default=None, help="Also train on HC18 for this many minutes.")
    parser.add_argument("--fundus-budget-min", type=float, default=None,
                        help="Also train on the fundus-vessel images for this many minutes.")
    parser.add_argument("--nnunet-python", type=Path, default=NNUNET_PYTHON if NNUNET_PYTHON.is_file() else None,
                        help="The Python of nnU-Net's environment (default .venv-nnunet/bin/python when it exists).")
    parser.add_argument("--nnunet-resolution", choices=("medfm", "native"), default="medfm",
                        help="nnU-Net plans at medfm's plan's resampling (default) or at the images' own resolution.")
    parser.add_argument("--skip-sliding-window", action="store_true", help="Only the training comparisons.")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_average_at_start": [round(n, 2) for n in os.getloadavg()]}
    if not args.skip_sliding_window:
        shape = tuple(int(n) for n in args.shape.split(","))
        report["sliding_window"] = sliding_window(shape, args.architecture, args.patch, args.repeats)
    nnunet_python = args.nnunet_python if args.nnunet_python and args.nnunet_python.is_file() else None
    report.update(training_rows(args, nnunet_python))
    if not (args.hc18_budget_min or args.fundus_budget_min):
        report["nnunet"] = "not run: give --hc18-budget-min or --fundus-budget-min"
    report["load_average_at_end"] = [round(n, 2) for n in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
