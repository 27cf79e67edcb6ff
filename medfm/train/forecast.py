"""``medfm train forecast``: the latent neural-ODE forecaster, trained on ordered sequences (video frames).

Sources and the held-out split by group are those of :mod:`medfm.train.upscale_data`; only sequences
(videos, multi-frame images) are used. Each sequence is read as grey frames, resized to the working
``size`` and subsampled every ``frame_stride`` frames (one forecast step). Training windows are
``2 + horizon`` consecutive steps: the network sees the first two and is scored (L1) on the next
``horizon``; the learning rate follows a cosine over the wall-time budget.

The held-out measure (:func:`evaluate_forecaster`) compares, on every window of the held-out
sequences, the network with repeating the last image and with linear extrapolation, by PSNR and
SSIM at the working size, per step ahead. Build folder, checkpoint, resume and the model folder
work as in :mod:`medfm.train.upscale`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError, display_path
from medfm.eval.image_metrics import psnr, ssim
from medfm.models.forecaster import CONTEXT, WEIGHTS_FILE, build_net
from medfm.tasks.forecast import forecast_frames, resize
from medfm.train.run_folder import partial_folder, run_settings, start_progress, write_json
from medfm.train.steps import run_steps
from medfm.train.upscale_data import Source, find_sources, luminance_planes

CHECKPOINT_FILE, SEQUENCES_FILE, STATE_FILE = "checkpoint.pt", "sequences.npz", "training.json"
DEFAULTS = {"size": 64, "features": 16, "latent": 8, "horizon": 4, "frame_stride": 2, "batch_size": 16,
            "learning_rate": 2e-3, "seed": 0}


def read_sequences(sources: Sequence[Source], size: int, stride: int) -> list[np.ndarray]:
    """Each video source as ``(T, size, size)`` uint8 frames, every ``stride``-th frame; stills are skipped."""
    sequences = []
    for source in sources:
        planes, video = luminance_planes(source.path)
        if video and len(planes) >= stride * (CONTEXT + 1):
            sequences.append(np.rint(resize(planes[::stride], (size, size)).clip(0, 1) * 255).astype(np.uint8))
    return sequences


def train_forecaster(data: Sequence[str | os.PathLike], out: str | os.PathLike, budget_minutes: float = 10.0,
                     resume: bool = False, max_steps: int | None = None, checkpoint_seconds: float = 30.0,
                     log: Callable[[str], None] = lambda _: None, **recipe: Any) -> dict[str, Any]:
    """Train on the sequences of ``data`` into the new model folder ``out``; returns the summary with held-out results."""
    out = Path(out)
    build = partial_folder(out, resume, CHECKPOINT_FILE, "model folder", "training")
    settings = run_settings(build, resume, STATE_FILE, DEFAULTS, recipe, budget_minutes=budget_minutes,
                            data=[os.fspath(d) for d in data])
    sources = find_sources(settings["data"])
    held_out = [s for s in sources if s.held_out]
    window = CONTEXT + settings["horizon"]
    if not resume:
        training = [s for s in sources if not s.held_out]
        sequences = [s for s in read_sequences(training, settings["size"], settings["frame_stride"]) if len(s) >= window]
        if not sequences:
            raise MedfmError(f"no training sequence of {window} steps (every {settings['frame_stride']} frames) in the data: "
                             "forecasting trains on videos or multi-frame images")
        build.mkdir(parents=True)
        np.savez(build / SEQUENCES_FILE, *sequences)
        write_json(build / STATE_FILE, settings)
    with np.load(build / SEQUENCES_FILE) as stored:
        sequences = [stored[key] for key in stored.files]
    log(f"{len(sequences)} training sequences, {len(held_out)} held-out sources")
    torch.manual_seed(settings["seed"])
    net = build_net(settings)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings["learning_rate"])
    progress = start_progress(build / CHECKPOINT_FILE, resume, net, optimiser)
    lengths = np.array([len(s) - window + 1 for s in sequences], np.float64)

    def loss_of_batch(rng: np.random.Generator) -> torch.Tensor:
        chosen = rng.choice(len(sequences), size=settings["batch_size"], p=lengths / lengths.sum())
        windows = np.stack([sequences[c][(s := rng.integers(lengths[c])): s + window] for c in chosen]).astype(np.float32) / 255
        if rng.random() < 0.5:
            windows = windows[..., ::-1].copy()
        windows = torch.from_numpy(windows)
        return F.l1_loss(net(windows[:, :CONTEXT], settings["horizon"]), windows[:, CONTEXT:])

    run_steps(loss_of_batch, net, optimiser, progress, build / CHECKPOINT_FILE, learning_rate=settings["learning_rate"],
              budget_minutes=settings["budget_minutes"], max_steps=max_steps, checkpoint_seconds=checkpoint_seconds,
              seed=settings["seed"], log=log)
    return _write_model_dir(build, out, net, settings, progress, held_out, log)


def _write_model_dir(build: Path, out: Path, net: torch.nn.Module, settings: dict[str, Any], progress: dict[str, Any],
                     held_out: list[Source], log: Callable[[str], None]) -> dict[str, Any]:
    from medfm.models.registry import create_forecaster, save_weights, sha256_of
    from medfm.serialize import json_ready

    save_weights(net.state_dict(), build / WEIGHTS_FILE)
    architecture = {key: settings[key] for key in ("size", "features", "latent")}
    training = {"steps": progress["step"], "training_seconds": round(progress["elapsed_s"], 1),
                "resumed_at_steps": progress["resumed_at_steps"],
                "loss_first_50": float(np.mean(progress["losses"][:50])) if progress["losses"] else None,
                "loss_last_50": float(np.mean(progress["losses"][-50:])) if progress["losses"] else None,
                "recipe": {k: v for k, v in settings.items() if k not in architecture}}
    config = {"name": out.name, "kind": "forecaster", "family": "medfm_forecast", **architecture,
              "description": "latent neural-ODE forecaster (ImageFlowNet-style) over grey sequences",
              "input": f"the last two frames, grey in [0, 1], at {settings['size']}x{settings['size']}",
              "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(build / WEIGHTS_FILE)}, "training": training}
    (build / "config.json").write_text(json.dumps(json_ready(config), indent=2) + "\n")
    sequences = read_sequences(held_out, settings["size"], settings["frame_stride"])
    results = evaluate_forecaster(create_forecaster(build), sequences, settings["horizon"]) if sequences else None
    (build / "results.json").write_text(json.dumps(json_ready({"held_out_sequences": len(sequences), "results": results}), indent=2) + "\n")
    for leftover in (CHECKPOINT_FILE, SEQUENCES_FILE, STATE_FILE):
        (build / leftover).unlink(missing_ok=True)
    os.replace(build, out)
    log(f"wrote {display_path(out)}")
    return {"model_dir": display_path(out), **training, "held_out": results}


def evaluate_forecaster(forecaster: Any, sequences: Sequence[np.ndarray], horizon: int) -> dict[str, Any]:
    """Mean PSNR and SSIM per step ahead (1 … ``horizon``) of ``ode``, ``last`` and ``linear`` over every
    window of the ``(T, S, S)`` uint8 ``sequences``, and which method wins at each step."""
    window = CONTEXT + horizon
    scores = {method: {"psnr": [[] for _ in range(horizon)], "ssim": [[] for _ in range(horizon)]} for method in ("ode", "last", "linear")}
    windows = 0
    for sequence in sequences:
        for start in range(0, len(sequence) - window + 1, horizon):
            frames = sequence[start: start + window].astype(np.float32) / 255
            windows += 1
            for method in scores:
                future = forecast_frames(frames[:CONTEXT], horizon, method, forecaster)
                for k in range(horizon):
                    scores[method]["psnr"][k].append(psnr(future[k], frames[CONTEXT + k]))
                    scores[method]["ssim"][k].append(ssim(future[k], frames[CONTEXT + k]))
    if not windows:
        return {"windows": 0}
    means = {m: {metric: [float(np.mean([v for v in values if math.isfinite(v)])) for values in per_step]
                 for metric, per_step in by_metric.items()} for m, by_metric in scores.items()}
    best = {metric: [max(means, key=lambda m: means[m][metric][k]) for k in range(horizon)] for metric in ("psnr", "ssim")}
    return {"windows": windows, "sequences": len(sequences), "steps_ahead": list(range(1, horizon + 1)),
            "mean": means, "best": best}
