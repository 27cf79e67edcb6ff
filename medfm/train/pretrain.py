"""``medfm pretrain``: self-supervised pretraining of an image encoder on unlabelled images.

1. Collect the planes of the data (:mod:`medfm.train.pretrain_data`: 2D images, slices and
   frames sampled together) into a uint8 cache.
2. Train the backbone (:mod:`medfm.models.encoders.backbone`) with MAE, SimDINO or Barlow
   Twins (:mod:`medfm.train.ssl_methods`) within a wall-time budget, AdamW with a warm-up and
   a cosine decay over the budget.
3. Write ENCODER_DIR: ``config.json`` (family ``medfm_backbone``, the weights' sha256),
   ``encoder.safetensors`` (the backbone only), ``card.md`` and ``pretraining.json``. The
   folder loads everywhere a model name does (``--model ENCODER_DIR``, :func:`~medfm.models.create_encoder`).

Everything is built in a hidden ``.ENCODER_DIR.partial`` folder beside ENCODER_DIR and renamed
at the end, so ENCODER_DIR is absent or complete. Checkpoints there are written to a temporary
file and renamed, so a SIGKILL leaves the previous one; ``resume=True`` continues from it with
the time already spent counted and the same batch draws (each step's randomness is seeded by
its number).

``workers`` processes on this machine share each step's batch (:mod:`medfm.scale.ddp`); started by
torchrun, each process joins that group instead, and with ``ray``, Ray Train starts the processes
(:mod:`medfm.scale.ray_train`). Rank 0 collects the planes, the others read them from its folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from medfm.errors import MedfmError, display_path
from medfm.models.encoders.backbone import ARCHITECTURES, DEFAULT_INPUT, build_backbone
from medfm.scale.ddp import Group, check_workers, launcher_group, local_group
from medfm.tasks.batch import BatchInput
from medfm.train.pretrain_data import collect_planes
from medfm.train.run_folder import partial_folder, write_json
from medfm.train.ssl_methods import METHODS

CHECKPOINT_FILE, STATE_FILE, PLANES_FILE = "checkpoint.pt", "state.json", "planes.pt"
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, HISTORY_FILE = "config.json", "encoder.safetensors", "card.md", "pretraining.json"
#: AdamW's peak learning rate and weight decay, and the fraction of the budget spent warming up.
LEARNING_RATE, WEIGHT_DECAY, WARMUP_FRACTION = 1e-3, 0.05, 0.05


def pretrain(inputs: Sequence[BatchInput], out: str | os.PathLike, *, method: str, arch: str = "cnn-small",
             budget_minutes: float = 10.0, resume: bool = False, batch_size: int = 64, planes_per_image: int = 8,
             seed: int = 0, max_steps: int | None = None, checkpoint_seconds: float = 60.0, command: str = "",
             workers: int = 1, on_step: Callable[[int, float], None] | None = None,
             log: Callable[[str], None] = lambda _: None, ray: str | None = None) -> dict[str, Any] | None:
    """Pretrain ``arch`` with ``method`` on the planes of ``inputs`` and write ENCODER_DIR ``out``;
    returns the training summary. ``max_steps`` caps the steps as well as the budget; ``command``
    (the command line) is written into the card. ``workers`` processes on this machine share each
    step's batch (:mod:`medfm.scale.ddp`); this one (rank 0) alone writes. Started by torchrun
    instead, every rank but 0 only trains, and returns ``None``. With ``ray`` (a Ray cluster's
    address, or ``local``), ``workers`` Ray Train workers do (:mod:`medfm.scale.ray_train`), where
    ``on_step`` and ``log`` then run."""
    check_workers(workers, batch_size)
    launched = launcher_group(workers, ray)
    if launched is not None and not launched.main:
        _follow(launched)
        return None
    if method not in METHODS:
        raise MedfmError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if arch not in ARCHITECTURES:
        raise MedfmError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if not budget_minutes > 0:
        raise MedfmError(f"--budget-min must be above 0 minutes; got {budget_minutes}")
    if batch_size < 2:
        raise MedfmError(f"batch size must be at least 2 (the methods compare images of a batch); got {batch_size}")
    out = Path(out)
    build = partial_folder(out, resume, CHECKPOINT_FILE, "encoder folder", "pretraining")
    if not out.parent.is_dir():
        raise MedfmError(f"{display_path(out.parent)}: folder does not exist; create it first")
    if ray is not None:
        from medfm.scale.ray_train import absolute, train_on_ray

        return train_on_ray(ray, workers, partial(
            pretrain, [replace(item, path=absolute(item.path)) for item in inputs], absolute(out), method=method,
            arch=arch, budget_minutes=budget_minutes, resume=resume, batch_size=batch_size,
            planes_per_image=planes_per_image, seed=seed, max_steps=max_steps, checkpoint_seconds=checkpoint_seconds,
            command=command, on_step=on_step, log=log))
    # absolute paths: a run started from its folder with relative ones resumes with --ray (which makes them absolute)
    inputs_sha256 = hashlib.sha256("\n".join(str(i.record_id if i.record is not None else os.path.abspath(i.path))
                                             for i in inputs).encode()).hexdigest()
    settings = {"method": method, "arch": arch, "batch_size": batch_size, "planes_per_image": planes_per_image, "seed": seed,
                "budget_minutes": budget_minutes, "inputs_sha256": inputs_sha256}
    config = {"family": "medfm_backbone", "kind": "encoder", "arch": arch, **DEFAULT_INPUT}
    torch.manual_seed(seed)
    model = METHODS[method](build_backbone(config))
    if resume:
        state = json.loads((build / STATE_FILE).read_text())
        if state["inputs_sha256"] != inputs_sha256 or state["method"] != method or state["arch"] != arch:
            raise MedfmError(f"{display_path(out)}: the data, method or architecture differ from the interrupted "
                             "pretraining's; start a new one")
        settings, sampling = state, state["sampling"]
        planes = torch.load(build / PLANES_FILE, weights_only=True)
        check_workers(launched.world if launched else workers, min(batch_size, len(planes)))
    else:
        planes, sampling = collect_planes(inputs, model.backbone.patch_size, planes_per_image, log)
        check_workers(launched.world if launched else workers, min(batch_size, len(planes)))
        build.mkdir()
        _save_atomically(lambda path: torch.save(planes, path), build / PLANES_FILE)
        write_json(build / STATE_FILE, {**settings, "sampling": sampling})
    log(f"{sampling['planes']} planes from {sampling['images']} images; {method} on {arch}")
    optimiser = _optimiser(model)
    progress: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "losses": [], "resumed_at_steps": []}
    if resume:
        checkpoint = torch.load(build / CHECKPOINT_FILE, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        progress = checkpoint["progress"]
        progress["resumed_at_steps"].append(progress["step"])
        log(f"resumed at step {progress['step']} after {progress['elapsed_s']:.0f} s")
    setup = {"method": method, "config": config, "seed": seed, "batch_size": batch_size, "build": build,
             "budget_s": settings["budget_minutes"] * 60.0, "max_steps": max_steps, "checkpoint_seconds": checkpoint_seconds}
    with nullcontext(launched) if launched else local_group(workers, _follow) as group:
        if group.world > 1:  # the others build the same model, then take rank 0's state (a resumed one's too)
            log(f"pretraining in {group.world} processes, {min(batch_size, len(planes)) // group.world} planes each per step")
            group.broadcast(setup)
            group.broadcast({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "progress": progress})
            group.broadcast_tensor(planes)
        _train(group, model, optimiser, planes, progress, setup, on_step, log)
    if not math.isfinite(progress["losses"][-1] if progress["losses"] else 0.0):
        raise MedfmError(f"{method} diverged (loss {progress['losses'][-1]}); nothing was written to {display_path(out)}")
    _save_checkpoint(build, model, optimiser, progress)
    first, last = progress["losses"][:10], progress["losses"][-10:]
    summary = {"method": method, "arch": arch, "steps": progress["step"], "training_seconds": round(progress["elapsed_s"], 1),
               "resumed_at_steps": progress["resumed_at_steps"], "batch_size": settings["batch_size"],
               "budget_minutes": settings["budget_minutes"], "seed": seed, "threads": torch.get_num_threads(),
               "loss_first_10": sum(first) / max(len(first), 1), "loss_last_10": sum(last) / max(len(last), 1),
               "sampling": sampling, "inputs_sha256": inputs_sha256, "processes": group.world}
    _write_encoder_dir(build, out, model.backbone, config, summary, progress["losses"], command)
    log(f"pretrained {progress['step']} steps in {progress['elapsed_s']:.0f} s; wrote {display_path(out)}")
    return {"encoder_dir": display_path(out), **summary}


def _optimiser(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)


def _follow(group: Group) -> None:
    """Rank 1.. of a pretraining in several processes: the model and the planes rank 0 has, the same steps. Nothing
    is read from files, so a rank on another machine needs neither the data nor rank 0's run folder."""
    setup = group.broadcast(None)
    torch.manual_seed(setup["seed"])
    model = METHODS[setup["method"]](build_backbone(setup["config"]))
    optimiser = _optimiser(model)
    state = group.broadcast(None)
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    _train(group, model, optimiser, group.broadcast_tensor(None), state["progress"], setup)


def _train(group: Group, model: torch.nn.Module, optimiser: torch.optim.Optimizer, planes: torch.Tensor,
           progress: dict[str, Any], setup: dict[str, Any], on_step: Callable[[int, float], None] | None = None,
           log: Callable[[str], None] = lambda _: None) -> None:
    """The steps, on every rank of ``group``: each draws the step's whole batch with the same seed and trains on its
    share (:mod:`medfm.train.ssl_methods`); rank 0's clock rules the budget, and rank 0 alone writes checkpoints."""
    network = group.wrap(model, unused_parameters=True)  # MAE's encoder leaves its pooling out; the output is the loss
    budget_s, max_steps, seed = setup["budget_s"], setup["max_steps"], setup["seed"]
    started = time.monotonic() - progress["elapsed_s"]
    last_checkpoint = time.monotonic()
    model.train()
    while True:
        elapsed = time.monotonic() - started
        fraction = elapsed / budget_s
        if max_steps:
            fraction = max(fraction, progress["step"] / max_steps)
        going = elapsed < budget_s and (max_steps is None or progress["step"] < max_steps)
        going, fraction = group.broadcast((going, fraction))
        if not going:
            break
        for parameters in optimiser.param_groups:
            parameters["lr"] = learning_rate(fraction)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + progress["step"])
        chosen = torch.randint(0, len(planes), (min(setup["batch_size"], len(planes)),), generator=generator)
        loss = network(planes[chosen].float() / 255.0, generator, group)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        model.after_step()
        progress["step"] += 1
        progress["losses"].append(group.mean(loss.item()))
        progress["elapsed_s"] = time.monotonic() - started
        if on_step is not None:
            on_step(progress["step"], progress["losses"][-1])
        if group.main and time.monotonic() - last_checkpoint >= setup["checkpoint_seconds"]:
            _save_checkpoint(setup["build"], model, optimiser, progress)
            last_checkpoint = time.monotonic()
            recent = progress["losses"][-20:]
            log(f"step {progress['step']}, {progress['elapsed_s']:.0f} s, loss {sum(recent) / len(recent):.4f}")


def learning_rate(fraction: float) -> float:
    """AdamW's rate at ``fraction`` of the budget: linear warm-up, then cosine decay to zero."""
    if fraction < WARMUP_FRACTION:
        return LEARNING_RATE * max(fraction, 1e-3) / WARMUP_FRACTION
    return LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * min(1.0, (fraction - WARMUP_FRACTION) / (1 - WARMUP_FRACTION))))


def _save_atomically(write: Callable[[Path], None], path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


def _save_checkpoint(build: Path, model: torch.nn.Module, optimiser: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    _save_atomically(lambda path: torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                              "progress": progress}, path), build / CHECKPOINT_FILE)



def _write_encoder_dir(build: Path, out: Path, backbone: torch.nn.Module, config: dict[str, Any], summary: dict[str, Any],
                       losses: list[float], command: str) -> None:
    from medfm import __version__
    from medfm.models.registry import save_weights, sha256_of

    save_weights(backbone.state_dict(), build / WEIGHTS_FILE)
    sha256 = sha256_of(build / WEIGHTS_FILE)
    write_json(build / HISTORY_FILE, {**summary, "losses": losses, "medfm_version": __version__, "command": command})
    write_json(build / CONFIG_FILE, {**config, "embed_dim": backbone.embed_dim,
                                      "weights": {"file": WEIGHTS_FILE, "sha256": sha256,
                                                  "licence": "that of the pretraining data (see card.md)",
                                                  "card": CARD_FILE}})
    _save_atomically(lambda path: path.write_text(encoder_card(out.name, config, backbone, summary, sha256, command)),
                     build / CARD_FILE)
    os.replace(build, out)
    for leftover in (CHECKPOINT_FILE, STATE_FILE, PLANES_FILE):
        (out / leftover).unlink(missing_ok=True)


def encoder_card(name: str, config: dict[str, Any], backbone: torch.nn.Module, summary: dict[str, Any], sha256: str,
                 command: str) -> str:
    """The card of a pretrained encoder folder: what it is, how it was made, what it was made from."""
    sampling = summary["sampling"]
    parameters = sum(p.numel() for p in backbone.parameters())
    lines = [
        f"# {name}", "",
        (f"Image encoder pretrained by `medfm pretrain` with **{summary['method']}** (self-supervised, no labels) "
        f"on architecture `{config['arch']}` ({parameters:,} parameters, {backbone.embed_dim}-d pooled features)."), "",
        ("Use it as any model: `--model THIS_FOLDER` in `index build`, `fit-probe`, `classify --probe`, "
        "`evaluate retrieval`; in Python `medfm.models.create_encoder(\"THIS_FOLDER\")` (the weights' sha256 is checked)."),
        "It has no text tower: no zero-shot, no text search.", "",
        "## Weights", "",
        f"`encoder.safetensors` (backbone only), sha256 `{sha256}`. Licence: that of the pretraining data.", "",
        "## Input contract", "",
        (f"Any 2D plane, any dtype: robust 0.5–99.5 percentile min–max to [0, 1], grey to 3 channels, square resize "
        f"to {config['image_size']}×{config['image_size']}, then `(x − {config['pixel_mean'][0]}) / {config['pixel_std'][0]}` "
        "(inside `encode_planes`). Spacing is not used: planes are resized whole."), "",
        "## Pretraining data and sampling", "",
        (f"{sampling['images']} images: {sampling['2d images']} 2D images, {sampling['volumes']} volumes "
        f"({sampling['planes from volumes']} slices), {sampling['videos']} videos ({sampling['planes from videos']} frames); "
        f"{sampling['planes']} planes in all. Rule: {sampling['rule']} "
        f"(planes_per_image = {sampling['planes_per_image_at_most']}), each plane cached at "
        f"{sampling['cache_size']}×{sampling['cache_size']}. Inputs sha256 `{summary['inputs_sha256']}`."), "",
        "## Recipe", "",
        f"- method `{summary['method']}` ({_METHOD_TEXT[summary['method']]})",
        (f"- AdamW, peak learning rate {LEARNING_RATE}, weight decay {WEIGHT_DECAY}, {WARMUP_FRACTION:.0%} warm-up then cosine "
        "decay over the wall-time budget"),
        (f"- batch {summary['batch_size']}, budget {summary['budget_minutes']} min, seed {summary['seed']}, "
        f"{summary['threads']} CPU thread(s) ({platform.machine()})"),
        f"- {summary['steps']} steps in {summary['training_seconds']} s"
        + (f", resumed at steps {summary['resumed_at_steps']}" if summary["resumed_at_steps"] else ""),
        (f"- loss: first 10 steps {summary['loss_first_10']:.4f}, last 10 steps {summary['loss_last_10']:.4f} "
        "(every step in `pretraining.json`)"), "",
        "Command:", "", "```bash", command or "(called from Python)", "```", "",
        "## Held-out results", "",
        ("None measured by this command. Measure before use, e.g. `medfm fit-probe` (cross-validated accuracy with "
        "intervals) or `medfm evaluate retrieval` on labelled images that were not pretrained on."), "",
    ]
    return "\n".join(lines)


_METHOD_TEXT = {
    "mae": "masked autoencoder, 75 % of 16×16 patches masked, loss on masked patches normalised per patch",
    "simdino": "SimDINO: EMA teacher (momentum 0.996), 2 global + 2 local crops, squared distance of unit features "
               "minus 0.05 × coding rate (ε = 0.5)",
    "barlow": "Barlow Twins: two 30–100 % crops, 512-d projector, λ = 5e-3",
}
