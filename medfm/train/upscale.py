"""``medfm train upscale``: the compact super-resolution network trained on the user's own images and videos.

1. Find the sources (:mod:`medfm.train.upscale_data`), hold out 15 % of the groups, and cut random
   high-resolution crops from the others (a video's frame with its neighbours; stills repeated),
   kept as uint8 in the build folder so that a resumed run trains on the same crops.
2. Train :class:`~medfm.models.upscaler.UpscaleNet` on (area-downsampled crop → crop centre) pairs
   with random flips and quarter turns, under an L1 loss, with a learning rate that decays along a
   cosine over the wall-time budget.
3. Measure the held-out sources against bicubic and Lanczos (:mod:`medfm.train.upscale_eval`) with
   the weights as written (float16 unless ``half=False``), and write MODEL_DIR: ``config.json``,
   ``weights.safetensors``, ``results.json`` and ``card.md``.

As :mod:`medfm.train.seg` does, everything is built in a hidden ``.MODEL_DIR.partial`` folder and
renamed at the end; the checkpoint there is replaced atomically, so a SIGKILL loses at most the
steps since the last one, and ``resume=True`` continues with the time already spent counted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError, display_path
from medfm.models.upscaler import WEIGHTS_FILE, build_net
from medfm.train.run_folder import partial_folder, run_settings, start_progress, write_json
from medfm.train.steps import run_steps
from medfm.train.upscale_data import (
    area_downsample,
    find_sources,
    luminance_planes,
    sample_crops,
)

CHECKPOINT_FILE, CROPS_FILE, STATE_FILE = "checkpoint.pt", "crops.npy", "training.json"
#: The shipped model's architecture and recipe; every one can be changed by the caller.
DEFAULTS = {"scale": 2, "frames": 3, "features": 32, "blocks": 4, "crop": 64, "crops_per_source": 12,
            "max_sources_per_dataset": 200, "batch_size": 16, "learning_rate": 1e-3, "seed": 0}


def train_upscaler(data: Sequence[str | os.PathLike], out: str | os.PathLike, budget_minutes: float = 10.0,
                   resume: bool = False, half: bool = True, max_steps: int | None = None,
                   checkpoint_seconds: float = 30.0, log: Callable[[str], None] = lambda _: None,
                   **recipe: Any) -> dict[str, Any]:
    """Train on ``data`` (folders, manifests) into the new model folder ``out``; returns the summary with
    the held-out results. ``recipe`` overrides :data:`DEFAULTS` (not on resume: the first run's holds)."""
    out = Path(out)
    build = partial_folder(out, resume, CHECKPOINT_FILE, "model folder", "training")
    settings = run_settings(build, resume, STATE_FILE, DEFAULTS, recipe, budget_minutes=budget_minutes,
                            data=[os.fspath(d) for d in data])
    if not resume and settings["scale"] not in (2, 4):
        raise MedfmError(f"--scale must be 2 or 4; got {settings['scale']}")
    sources = find_sources(settings["data"])
    training = [s for s in sources if not s.held_out]
    held_out = [s for s in sources if s.held_out]
    if not resume:
        build.mkdir(parents=True)
        crops = _crop_bank(training, settings, log)
        np.save(build / CROPS_FILE, crops)
        write_json(build / STATE_FILE, settings)
    crops = np.load(build / CROPS_FILE)
    log(f"{len(training)} training sources ({len(crops)} crops), {len(held_out)} held out")
    torch.manual_seed(settings["seed"])
    net = build_net(settings)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings["learning_rate"])
    progress = start_progress(build / CHECKPOINT_FILE, resume, net, optimiser)
    if resume:
        log(f"resumed at step {progress['step']} after {progress['elapsed_s']:.0f} s")

    def loss_of_batch(rng: np.random.Generator) -> torch.Tensor:
        low, high = _batch(crops, settings["batch_size"], settings["scale"], rng)
        return F.l1_loss(net(low), high)

    run_steps(loss_of_batch, net, optimiser, progress, build / CHECKPOINT_FILE, learning_rate=settings["learning_rate"],
              budget_minutes=settings["budget_minutes"], max_steps=max_steps, checkpoint_seconds=checkpoint_seconds,
              seed=settings["seed"], log=log)
    log(f"trained {progress['step']} steps in {progress['elapsed_s']:.0f} s; measuring {len(held_out)} held-out sources")
    return _write_model_dir(build, out, net, settings, progress, held_out, half, log)


def _crop_bank(training: list, settings: dict[str, Any], log: Callable[[str], None]) -> np.ndarray:
    """Random high-resolution crops of at most ``max_sources_per_dataset`` sources of each dataset."""
    rng = np.random.default_rng(settings["seed"])
    by_dataset: dict[str, list] = {}
    for source in training:
        by_dataset.setdefault(source.dataset, []).append(source)
    crops, size = [], settings["crop"] * settings["scale"]
    for dataset, members in sorted(by_dataset.items()):
        chosen = rng.permutation(len(members))[: settings["max_sources_per_dataset"]]
        for index in chosen:
            planes, video = luminance_planes(members[index].path)
            count = settings["crops_per_source"] * (4 if video else 1)  # a clip holds many images
            crops.append(sample_crops(planes, video, count, size, settings["frames"], rng))
        log(f"{dataset}: crops from {len(chosen)} sources")
    bank = np.concatenate(crops) if crops else np.empty((0,))
    if len(bank) == 0:
        raise MedfmError(f"no training crops: every training image is smaller than {size} pixels or blank")
    return bank


def _batch(crops: np.ndarray, batch_size: int, scale: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-resolution inputs ``(B, frames, h, w)`` and high-resolution centres ``(B, 1, H, W)`` in [0, 1]."""
    chosen = crops[rng.integers(len(crops), size=batch_size)].astype(np.float32) / 255
    turns, flips = rng.integers(4, size=batch_size), rng.integers(2, size=batch_size)
    high = np.stack([np.rot90(c[..., ::-1] if f else c, k, axes=(1, 2)) for c, k, f in zip(chosen, turns, flips)])
    low = area_downsample(high, scale)
    centre = high.shape[1] // 2
    return torch.from_numpy(np.ascontiguousarray(low)), torch.from_numpy(np.ascontiguousarray(high[:, centre: centre + 1]))


def _write_model_dir(build: Path, out: Path, net: torch.nn.Module, settings: dict[str, Any], progress: dict[str, Any],
                     held_out: list, half: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from medfm.models.registry import create_upscaler, save_weights, sha256_of
    from medfm.train.upscale_eval import evaluate_upscaler

    dtype = torch.float16 if half else torch.float32
    save_weights({k: v.to(dtype) for k, v in net.state_dict().items()}, build / WEIGHTS_FILE)
    architecture = {key: settings[key] for key in ("scale", "frames", "features", "blocks")}
    training = {"steps": progress["step"], "training_seconds": round(progress["elapsed_s"], 1),
                "resumed_at_steps": progress["resumed_at_steps"], "crops": len(np.load(build / CROPS_FILE, mmap_mode="r")),
                "loss_first_50": float(np.mean(progress["losses"][:50])), "loss_last_50": float(np.mean(progress["losses"][-50:])),
                "recipe": {k: v for k, v in settings.items() if k not in architecture}}
    config = {"name": out.name, "kind": "upscaler", "family": "medfm_upscale", **architecture,
              "description": f"compact super-resolution network (×{settings['scale']}, {settings['frames']} fused frames)",
              "input": "luminance planes in [0, 1] (medfm.tasks.upscale windows images and converts colour through YCbCr)",
              "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(build / WEIGHTS_FILE),
                          "dtype": "float16" if half else "float32"},
              "training": training}
    write_json(build / "config.json", config)
    results = evaluate_upscaler(create_upscaler(build), held_out, settings["scale"], log=log) if held_out else None
    write_json(build / "results.json", results or {"sources": 0})
    (build / "card.md").write_text(model_card(config, results))
    for leftover in (CHECKPOINT_FILE, CROPS_FILE, STATE_FILE):
        (build / leftover).unlink()
    os.replace(build, out)
    return {"model_dir": display_path(out), **training, "held_out": results}


def model_card(config: dict[str, Any], results: dict[str, Any] | None) -> str:
    """A short card: what the model is, how it was trained, and its held-out numbers (or that there are none)."""
    lines = [f"# {config['name']}", "", config["description"] + ".", "",
             (f"Trained by `medfm train upscale` for {config['training']['steps']} steps "
              f"({config['training']['training_seconds']:.0f} s) on {config['training']['crops']} crops; "
              "low-resolution inputs by area averaging."), ""]
    if results is None:
        return "\n".join([*lines, "No held-out sources: no measured numbers.", ""])
    lines += ["| dataset | planes | PSNR model | PSNR bicubic | PSNR Lanczos | SSIM model | SSIM bicubic |",
              "|---|---|---|---|---|---|---|"]
    for name, row in [*results["per_dataset"].items(), ("all", results["all"])]:
        lines.append(f"| {name} | {row['planes']} | {row['psnr']['model']:.2f} | {row['psnr']['bicubic']:.2f} | "
                     f"{row['psnr']['lanczos']:.2f} | {row['ssim']['model']:.4f} | {row['ssim']['bicubic']:.4f} |")
    return "\n".join([*lines, ""])
