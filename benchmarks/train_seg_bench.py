"""``medfm train seg`` and ``segment --auto``: 3D sliding-window inference time against MONAI, and Dice after a budget.

1. **Sliding window** (always; no data needed): one volume (default 256×256×128, random
   values) segmented by medfm's :meth:`AutoSegmenter.probabilities` (normalisation, MONAI's
   Gaussian-blended sliding window, softmax, back on the input grid) and by MONAI's bare
   ``sliding_window_inference`` with the same network, patch, overlap and blending, in the
   same run; the ratio medfm / MONAI is the cost of medfm's pipeline around MONAI.
2. **Training** (``--hc18-budget-min N``, needs ``../shared/data``): ``train_segmenter`` on
   HC18's dev split for N minutes, then held-out Dice (20 % of the subject groups) and
   training images/s. The issue's peer, nnU-Net v2, is reported as not measured when the
   ``nnunetv2`` package is absent (no fake peer).

    python benchmarks/train_seg_bench.py [--shape 256,256,128] [--architecture auto-unet] [--hc18-budget-min 10]

Prints JSON. Run it with ``nice -n 10``; threads follow ``MEDFM_THREADS``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medfm.models.automatic.network import build_network
from medfm.models.automatic.plan import Plan, normalise
from medfm.models.automatic.segmenter import AutoSegmenter
from medfm.models.segmenters.base import SegmenterInfo
from medfm.paths import shared_data_dir
from medfm.train.seg_plan import architecture_config


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


def hc18(budget_minutes: float, architecture: str | None, data: Path) -> dict:
    from medfm.train.seg import train_segmenter

    manifest = data / "hc18_fetal_head_us" / "manifest.csv"
    if not manifest.is_file():
        return {"skipped": f"{manifest} is absent"}
    with tempfile.TemporaryDirectory() as folder:
        summary = train_segmenter(manifest, Path(folder) / "hc18", architecture=architecture, budget_minutes=budget_minutes,
                                  group_column="subject_group", only={"split": "dev"}, plan_overrides={"scale": "0.25"},
                                  log=lambda line: print(line, file=sys.stderr))
        plan = json.loads((Path(folder) / "hc18" / "plan.json").read_text())
    return {"budget_minutes": budget_minutes, "plan_overrides": {"scale": 0.25}, "batch_size": plan["batch_size"],
            "steps": summary["steps"], "training_seconds": summary["training_seconds"],
            "train_images_per_s": round(summary["steps"] * plan["batch_size"] / summary["training_seconds"], 2),
            "val_images": summary["val_images"], "val_dice": summary["validation"]["1"]["dice"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256,256,128", help="Volume for the sliding-window timing, I,J,K.")
    parser.add_argument("--architecture", default="auto-unet")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--hc18-budget-min", type=float, default=None, help="Also train on HC18 for this many minutes.")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    report = {"sliding_window": sliding_window(shape, args.architecture, args.patch, args.repeats),
              "threads": torch.get_num_threads(),
              "nnunetv2": ("installed, but not run by this benchmark" if importlib.util.find_spec("nnunetv2")
                           else "not installed: no nnU-Net v2 peer was measured")}
    if args.hc18_budget_min:
        report["hc18"] = hc18(args.hc18_budget_min, args.architecture, args.data or shared_data_dir())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
