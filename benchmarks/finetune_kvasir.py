"""medfm-interactive fine-tuned on Kvasir-SEG polyps: box-prompt Dice before and after LoRA, DD-Adapter and
full fine-tuning at the same wall-time budget, and the same network trained from scratch, on images neither
the base nor the adapters trained on.

Run ``nice -n 10 python benchmarks/finetune_kvasir.py --run RUN_DIR [--budget-min 8] [--methods M ...]
[--max-steps N] [--results medfm/models/cards/medfm-interactive-kvasir-dd-adapter.results.json]``.

``scratch`` is full fine-tuning of medfm-interactive's architecture from random weights (seed 0, written to
RUN_DIR/scratch-init.safetensors and given as ``--checkpoint``) at the learning rate the shipped model was
trained with (2e-3), so that it learns polyps from the fine-tuning data alone. ``--max-steps`` caps every
method's steps as well as the budget (equal steps when the machine's load differs between runs).

Splits (from ``../shared/data/kvasir_seg_polyp``, nothing decoded to choose them): the base model's own
held-out validation images (:func:`medfm.train.interactive.is_validation`, the ``kvasir`` rows of its
card's evaluation) are the **held-out** set here; the other dev images are the fine-tuning data, of
which ``medfm finetune`` keeps 20 % (by image) aside as its validation part, used only to choose which
state is kept. Each method runs ``medfm --threads 1 finetune`` with the same ``--budget-min`` and batch
size, one after the other; held-out Dice comes from ``medfm evaluate interactive --max-clicks 1`` (box
alone, and one centre click), at each image's own resolution; ``paired`` gives, per adapter smaller
than 10 % of the base, the held-out Dice difference to the base with a 95 % bootstrap interval over
images (the same protocol, image by image). A step whose output is already in RUN_DIR is not run
again, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("lora", "dd-adapter", "full", "scratch")
#: The learning rate medfm-interactive was trained with (``medfm.train.interactive.train``): the from-scratch row's.
SCRATCH_LEARNING_RATE = 2e-3
MEDFM = [sys.executable, "-c", "from medfm.cli import main; main()", "--threads", "1"]


def write_manifests(data: Path, run: Path) -> None:
    from medfm.train.interactive import is_validation

    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name, keep in (("finetune", False), ("heldout", True)):
        with open(run / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "mask", "dataset"])
            writer.writerows([str(data / row["image"]), str(data / row["mask"]), "kvasir"]
                             for row in rows if is_validation("kvasir", row["image"]) == keep)


def scratch_init(path: Path) -> Path:
    """medfm-interactive's architecture with random weights (seed 0), as a checkpoint file (kept if present)."""
    if not path.exists():
        import torch

        from medfm.models.registry import list_segmenters
        from medfm.models.segmenters.interactive_net import InteractiveNet
        from medfm.train.interactive import export_weights

        config = list_segmenters()["medfm-interactive"]
        torch.manual_seed(0)
        export_weights(InteractiveNet(config["widths"], config["blocks"], config["pixel_mean"], config["pixel_std"]), path)
    return path


def method_arguments(method: str, run: Path) -> tuple[list[str], list[str]]:
    """``medfm finetune``'s arguments for ``method``, and the base arguments its evaluation needs."""
    if method != "scratch":
        return ["--method", method], []
    base = ["--checkpoint", str(run / "scratch-init.safetensors")]
    return ["--method", "full", "--learning-rate", str(SCRATCH_LEARNING_RATE), *base], base


def run_once(output: Path, command: list[str], stdout: Path | None = None) -> float | None:
    """Run ``command`` unless ``output`` exists; its wall time in seconds (None when skipped)."""
    if output.exists():
        return None
    started = time.monotonic()
    with open(stdout or output.with_suffix(".log"), "w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT if stdout is None else None)
    return time.monotonic() - started


def held_out(path: Path) -> dict[str, float]:
    report = json.loads(path.read_text())["datasets"]["kvasir"]
    return {"images": report["images"], "box_dice": report["box_dice"], "click_dice": report["click_dice"][0]}


def paired_differences(heldout: Path, adapters: dict[str, Path]) -> dict[str, dict[str, dict[str, float]]]:
    """Per adapter: mean held-out (adapter − base) box and one-click Dice, with 95 % bootstrap intervals over images."""
    import numpy as np

    from medfm.eval.bootstrap import bootstrap
    from medfm.eval.protocols.interactive import read_manifest, simulate
    from medfm.io.formats import load
    from medfm.io.label_maps import read_mask
    from medfm.models.registry import create_segmenter

    models = {"base": create_segmenter("medfm-interactive"),
              **{name: create_segmenter("medfm-interactive", adapter=path) for name, path in adapters.items()}}
    dice: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for row in read_manifest(heldout):
        truth = read_mask(row["mask"])[:, :, 0].T
        plane = load(row["image"]).frame()
        for name, model in models.items():
            run = simulate(model, plane, truth, max_clicks=1)
            dice[name].append((run["box"], run["clicks"][0]))
            model.reset_image()
    base = np.array(dice["base"])
    out = {}
    for name in adapters:
        difference = np.array(dice[name]) - base
        estimates = bootstrap(lambda rows, d=difference: {"box_dice": d[rows, 0].mean(), "click_dice": d[rows, 1].mean()},
                              len(difference))
        out[name] = {key: {"mean": round(e.value, 4), "low": round(e.low, 4), "high": round(e.high, 4)}
                     for key, e in estimates.items()}
    return out


def main() -> None:
    from medfm.models.registry import WEIGHTS_DIR, list_segmenters, sha256_of
    from medfm.paths import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="Folder for manifests, adapters and logs (outside the repository).")
    parser.add_argument("--budget-min", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--max-steps", type=int, default=None, help="Also stop each method after this many steps.")
    parser.add_argument("--results", type=Path, help="Also write the JSON here.")
    args = parser.parse_args()
    run = args.run
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "heldout.csv").exists():
        write_manifests(shared_data_dir() / "kvasir_seg_polyp", run)
    walls = json.loads((run / "walls.json").read_text()) if (run / "walls.json").exists() else {}
    evaluate = [*MEDFM, "evaluate", "interactive", str(run / "heldout.csv"), "--max-clicks", "1", "--no-progress"]
    run_once(run / "eval-base.json", [*evaluate, "--results", str(run / "eval-base.json")])
    config = list_segmenters()["medfm-interactive"]
    base_bytes = (WEIGHTS_DIR / config["weights"]["file"]).stat().st_size
    results = {"base_model": "medfm-interactive", "base_weights_sha256": config["weights"]["sha256"],
               "base_weights_bytes": base_bytes, "budget_minutes": args.budget_min, "batch_size": args.batch_size,
               "threads": 1, "held_out": {"base": held_out(run / "eval-base.json")}, "methods": {}}
    steps = ["--max-steps", str(args.max_steps)] if args.max_steps else []
    for method in args.methods:
        adapter = run / f"{method}.safetensors"
        if method == "scratch":
            scratch_init(run / "scratch-init.safetensors")
        training, base = method_arguments(method, run)
        wall = run_once(adapter, [*MEDFM, "finetune", "medfm-interactive", "--data", str(run / "finetune.csv"), *training,
                                  "--budget-min", str(args.budget_min), "--batch-size", str(args.batch_size), *steps,
                                  "-o", str(adapter)],
                        stdout=run / f"{method}.json")
        if wall is not None:
            walls[method] = round(wall, 1)
            (run / "walls.json").write_text(json.dumps(walls))
        run_once(run / f"eval-{method}.json", [*evaluate, *base, "--adapter", str(adapter),
                                               "--results", str(run / f"eval-{method}.json")])
        summary = json.loads((run / f"{method}.json").read_text())
        results["held_out"][method] = held_out(run / f"eval-{method}.json")
        results["methods"][method] = {
            "trainable_parameters": summary["trainable_parameters"], "adapter_bytes": summary["adapter_bytes"],
            "adapter_sha256": sha256_of(adapter),
            "adapter_fraction_of_base": round(summary["adapter_bytes"] / base_bytes, 4), "steps": summary["steps"],
            "training_seconds": summary["training_seconds"], "wall_seconds_with_data_loading": walls.get(method),
            "kept_step": summary["validation_best"]["step"], "validation_before": summary["validation_before"],
            "validation_kept": summary["validation_best"], "train_images": summary["train_images"],
            "val_images": summary["val_images"], "learning_rate": summary["learning_rate"],
        }
    small = {method: run / f"{method}.safetensors" for method, measured in results["methods"].items()
             if measured["adapter_fraction_of_base"] <= 0.1 and method != "scratch"}
    if not (run / "paired.json").exists():
        (run / "paired.json").write_text(json.dumps(paired_differences(run / "heldout.csv", small)))
    results["paired_difference_to_base"] = json.loads((run / "paired.json").read_text())
    results["commands"] = [" ".join(["nice -n 10 python benchmarks/finetune_kvasir.py --run RUN",
                                     f"--budget-min {args.budget_min:g} --batch-size {args.batch_size}",
                                     f"--methods {' '.join(args.methods)}", *steps]),
                           *(" ".join(["medfm --threads 1 finetune medfm-interactive --data RUN/finetune.csv",
                                       *method_arguments(method, Path("RUN"))[0], f"--budget-min {args.budget_min:g}",
                                       f"--batch-size {args.batch_size}", *steps, f"-o RUN/{method}.safetensors"])
                             for method in args.methods),
                           ("medfm --threads 1 evaluate interactive RUN/heldout.csv --max-clicks 1 "
                            "[--checkpoint RUN/scratch-init.safetensors] [--adapter RUN/METHOD.safetensors]")]
    text = json.dumps(results, indent=2)
    if args.results:
        args.results.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
