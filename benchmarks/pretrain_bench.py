"""Speed of ``medfm pretrain``'s methods on CPU, and what their pretraining buys per minute; prints JSON.

1. Training images per second of each method (MAE on vit-tiny, SimDINO and Barlow Twins on
   cnn-small and vit-tiny): optimiser steps on random 128² planes, views made as in training.
   The peer, timed in the same run on the same backbone, is one supervised step (one 112²
   view, linear head, cross-entropy): ``ratio_to_supervised`` = method images/s ÷ peer images/s.
2. With ``--probe runs/probe.json`` (from ``benchmarks/ssl_probe_eval.py``) and encoder folders
   written by ``medfm pretrain``: each encoder's linear-probe accuracy gain over the random
   initialisation of its architecture, divided by its minutes of pretraining.

    python benchmarks/pretrain_bench.py --threads 1 --steps 3 --probe runs/probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medfm.models.encoders.backbone import DEFAULT_INPUT, build_backbone
from medfm.train.pretrain import LEARNING_RATE
from medfm.train.pretrain_data import CACHE_SIZE, augmented_views
from medfm.train.ssl_methods import METHODS

CASES = (("mae", "vit-tiny"), ("simdino", "cnn-small"), ("barlow", "cnn-small"), ("simdino", "vit-tiny"), ("barlow", "vit-tiny"))


def images_per_second(step, batch: int, steps: int) -> float:
    step()  # warm-up: first-call allocations
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - began)


def method_step(method: str, arch: str, planes: torch.Tensor):
    torch.manual_seed(0)
    model = METHODS[method](build_backbone({"arch": arch, **DEFAULT_INPUT}))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = model(planes, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        model.after_step()

    return step


def supervised_step(arch: str, planes: torch.Tensor):
    torch.manual_seed(0)
    backbone = build_backbone({"arch": arch, **DEFAULT_INPUT})
    head = torch.nn.Linear(backbone.embed_dim, 8)
    optimiser = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=LEARNING_RATE)
    labels = torch.arange(len(planes)) % 8
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = F.cross_entropy(head(backbone(augmented_views(planes, backbone.image_size, (0.3, 1.0), generator))), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def accuracy_per_minute(probe: dict) -> dict:
    """Linear-probe accuracy gain over the random initialisation of the same architecture, per pretraining minute."""
    out = {}
    for name, entry in probe["encoders"].items():
        history = Path(name) / "pretraining.json"
        if not history.is_file():
            continue
        trained = json.loads(history.read_text())
        baseline = probe["encoders"].get(f"random:{trained['arch']}")
        minutes = trained["training_seconds"] / 60
        tasks = {}
        for task in probe["tasks"]:
            accuracy = entry[task]["linear"]["value"]
            gain = accuracy - baseline[task]["linear"]["value"] if baseline else None
            tasks[task] = {"linear_accuracy": accuracy, "gain_over_random": gain,
                           "gain_per_minute": gain / minutes if gain is not None and minutes else None}
        out[name] = {"method": trained["method"], "arch": trained["arch"], "steps": trained["steps"],
                     "pretraining_minutes": round(minutes, 2), "tasks": tasks}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--probe", type=Path, help="JSON of benchmarks/ssl_probe_eval.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    planes = torch.rand(args.batch, 3, CACHE_SIZE, CACHE_SIZE, generator=torch.Generator().manual_seed(0))
    peers = {arch: images_per_second(supervised_step(arch, planes), args.batch, args.steps) for arch in {a for _, a in CASES}}
    speed = {}
    for method, arch in CASES:
        rate = images_per_second(method_step(method, arch, planes), args.batch, args.steps)
        speed[f"{method}/{arch}"] = {"images_per_second": round(rate, 2), "supervised_images_per_second": round(peers[arch], 2),
                                     "ratio_to_supervised": round(rate / peers[arch], 3)}
    result = {"threads": args.threads, "batch": args.batch, "steps": args.steps, "device": "cpu", "training_speed": speed}
    if args.probe:
        result["probe_accuracy_per_minute"] = accuracy_per_minute(json.loads(args.probe.read_text()))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
