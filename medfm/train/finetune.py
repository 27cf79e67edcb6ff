"""``medfm finetune BASE --data DATA --method lora|dd-adapter|vpt|full [--rank R] [--budget-min N] [--resume] -o ADAPTER``.

1. Everything the user gives is checked before any data is read: the method, the budget,
   the output, the base model (built from the registry; its weights must be identified).
   DATA is a CSV manifest, or for segmenters a folder of saved annotation versions as
   ``medfm train seg`` takes it (:func:`medfm.train.seg.collect_cases`).
2. The data is decoded once (:mod:`medfm.train.finetune_data`) and the method's modules
   are added to the frozen base (:mod:`medfm.models.adapters`).
3. Training runs within the wall-time budget (counted across resumes). Promptable
   segmenters learn from the simulated interactions ``medfm train interactive`` uses
   (:func:`medfm.train.interactive.training_step`: box, clicks or scribbles, then corrective
   clicks); encoders learn a linear classification head with their adapter under
   cross-entropy. Every ``checkpoint_seconds`` the validation part is scored and the best
   state so far (the untouched base included) is kept.
4. ADAPTER is written once, atomically, from the best state: an adapter file
   (:mod:`medfm.models.adapters.file`) holding only the trained tensors.

Work in progress lives in a hidden ``.ADAPTER.partial`` folder beside ADAPTER (checkpoint
written to a temporary file and renamed, so a SIGKILL leaves the previous one);
``resume=True`` continues from it. The folder is removed once ADAPTER is written.

``workers`` processes on this machine share each step's batch (:mod:`medfm.scale.ddp`): each
rank reads the data, builds the same model, then takes rank 0's state (a resumed one's too);
every step all draw the same global batch and train on their share, and the trainable
parameters' gradients are averaged before the optimiser steps. Rank 0 alone validates, keeps
the best state, checkpoints and writes ADAPTER, and its clock ends the run for all. Started by
torchrun, each process joins that group instead (:func:`medfm.scale.ddp.launched_group`); with
``ray``, Ray Train starts the processes (:mod:`medfm.scale.ray_train`), which do the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.errors import MedfmError, display_path
from medfm.models.adapters import (
    DEFAULT_RANK,
    add_adapter,
    check_method,
    set_training,
    trainable_state,
)
from medfm.models.adapters.file import network_of, save_adapter
from medfm.scale.ddp import Group, check_workers, launcher_group, local_group
from medfm.train.finetune_objectives import ClassifierObjective, segmentation_objective
from medfm.train.run_folder import partial_folder

CHECKPOINT_FILE, SETTINGS_FILE = "checkpoint.pt", "settings.json"
#: AdamW learning rate per method: adapters start from zero and move fast; full fine-tuning moves the base gently.
LEARNING_RATES = {"lora": 2e-3, "dd-adapter": 2e-3, "vpt": 5e-3, "full": 3e-4}


def _build_base(base: str, checkpoint: str | os.PathLike | None) -> tuple[Any, str]:
    from medfm.models.registry import (
        ENCODER_DIR_CONFIG,
        create_encoder,
        create_segmenter,
        list_encoders,
        list_segmenters,
    )

    if base in list_encoders() or (Path(base) / ENCODER_DIR_CONFIG).is_file():  # a registered encoder or an ENCODER_DIR
        model, kind = create_encoder(base, checkpoint), "encoder"
    elif base in list_segmenters() or base.endswith(".json"):
        model, kind = create_segmenter(base, checkpoint), "segmenter"
    else:
        raise MedfmError(f"unknown model {base!r}; choose one of: {', '.join([*list_segmenters(), *list_encoders()])}")
    if not model.info.weights_sha256:
        raise MedfmError(f"model {base!r} has no identified weights (randomly initialised); give --checkpoint, "
                         "so that the adapter can name the weights it adapts")
    return model, kind


def finetune(
    base: str, data: str | os.PathLike, out: str | os.PathLike, *, method: str = "lora", rank: int = DEFAULT_RANK,
    budget_minutes: float = 10.0, resume: bool = False, checkpoint: str | os.PathLike | None = None,
    label_column: str | None = None, group_column: str | None = None, batch_size: int = 16,
    learning_rate: float | None = None, max_steps: int | None = None, checkpoint_seconds: float = 60.0,
    seed: int = 0, catalog: str | None = None, final_only: bool = False, on_step: Callable[[int, float], None] | None = None,
    log: Callable[[str], None] = lambda _: None, workers: int = 1, group: Group | None = None, ray: str | None = None,
) -> dict[str, Any] | None:
    """Fine-tune ``base`` on ``data`` and write the adapter file ``out``; returns the summary (also stored in the
    file's ``training`` metadata). ``data``: a CSV manifest, or for a segmenter a folder of saved annotation versions
    whose images come from ``catalog`` (only versions marked final with ``final_only``). ``max_steps`` caps the steps
    as well as the budget; ``on_step(step, loss)`` is called after each step. ``workers`` processes on this machine
    share each step's batch (``group``: the one this rank runs in); started by torchrun instead, each process joins
    its group. With ``ray`` (a Ray cluster's address, or ``local``), ``workers`` Ray Train workers do
    (:mod:`medfm.scale.ray_train`), where ``on_step`` and ``log`` then run. Ranks other than 0 return None."""
    from medfm.train.seg import collect_cases
    from medfm.train.seg_data import data_digest

    arguments = {key: value for key, value in locals().items() if key not in ("collect_cases", "data_digest", "group", "ray")}
    check_method(method, rank)
    check_workers(workers, batch_size)
    launched = launcher_group(workers, ray) if group is None else None
    if not budget_minutes > 0:
        raise MedfmError(f"--budget-min must be above 0 minutes; got {budget_minutes}")
    out, data = Path(out), Path(data)
    if (group or launched or Group()).main:
        work = partial_folder(out, resume, CHECKPOINT_FILE, "adapter file", "fine-tuning")
    if not data.exists():
        raise MedfmError(f"{display_path(data)}: not found (DATA is a CSV manifest or a folder of saved annotations)")
    if ray is not None:
        from medfm.scale.ray_train import absolute, absolute_catalog, train_on_ray

        return train_on_ray(ray, workers, partial(finetune, **{
            **arguments, "workers": 1, "base": str(absolute(base)) if Path(base).exists() else base,
            "data": absolute(data), "out": absolute(out), "checkpoint": absolute(checkpoint),
            "catalog": absolute_catalog(catalog)}))
    quiet = {**arguments, "on_step": None, "log": _quiet}  # the others never log nor report steps: rank 0 does
    if launched is not None:
        return finetune(**(arguments if launched.main else quiet), group=launched)
    if group is None:  # the others need nothing that cannot be pickled
        with local_group(workers, partial(_follow, quiet)) as started:
            return finetune(**arguments, group=started)
    model, kind = _build_base(base, checkpoint)
    if kind == "encoder" and not data.is_file():
        raise MedfmError(f"{display_path(data)}: fine-tuning an encoder takes a CSV manifest with --label-column, not a folder")
    cases = None if kind == "encoder" else collect_cases(data, group_column=group_column, catalog=catalog, final_only=final_only)
    data_sha256 = hashlib.sha256(data.read_bytes()).hexdigest() if data.is_file() else data_digest(cases or [])
    settings = {"base_model": model.info.name, "base_sha256": model.info.weights_sha256, "method": method, "rank": rank,
                "data_sha256": data_sha256, "budget_minutes": budget_minutes, "seed": seed}
    if resume and group.main:
        before = json.loads((work / SETTINGS_FILE).read_text())
        changed = [key for key in ("base_model", "base_sha256", "method", "rank", "data_sha256") if before[key] != settings[key]]
        if changed:
            raise MedfmError(f"{display_path(out)}: the interrupted fine-tuning had another {changed[0]}; start a new one")
    torch.manual_seed(seed)
    network = network_of(model)
    base_parameters = sum(p.numel() for p in network.parameters())
    add_adapter(network, method, rank, model.info.name)  # before the data: a method that does not fit stops at once
    check_workers(group.world, batch_size, len(cases) if cases is not None else None)
    objective = (ClassifierObjective(model, data, batch_size, label_column, group) if cases is None
                 else segmentation_objective(model, cases, batch_size, group))
    parameters = [p for p in network.parameters() if p.requires_grad] + objective.extra_parameters
    learning_rate = learning_rate or LEARNING_RATES[method]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-4 if method == "full" else 0.0)
    rng = np.random.default_rng(seed)
    progress: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "losses": [], "resumed_at_steps": [], "history": []}
    best: dict[str, Any] = {}

    def save_checkpoint() -> None:
        state = {"network": trainable_state(network, method), "optimizer": optimizer.state_dict(),
                 "rng": rng.bit_generator.state, "progress": progress, "best": best,
                 "head": objective.head.state_dict() if kind == "encoder" else None}
        torch.save(state, work / (CHECKPOINT_FILE + ".tmp"))
        os.replace(work / (CHECKPOINT_FILE + ".tmp"), work / CHECKPOINT_FILE)

    def evaluate() -> dict[str, float]:
        """Score the validation part and keep the state if it is the best so far."""
        nonlocal best
        set_training(network, method, False)
        scores = objective.score()
        progress["history"].append({"step": progress["step"], **scores})
        if not best or scores["score"] > best["scores"]["score"]:
            best = {"step": progress["step"], "scores": scores,
                    "state": {**trainable_state(network, method), **objective.head_state()}}
        set_training(network, method, True)
        return scores

    if group.main and resume:
        saved = torch.load(work / CHECKPOINT_FILE, weights_only=False)
        network.load_state_dict(saved["network"], strict=False)
        if kind == "encoder":
            objective.head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["rng"]
        progress, best = saved["progress"], saved["best"]
        progress["resumed_at_steps"].append(progress["step"])
        log(f"resumed at step {progress['step']} after {progress['elapsed_s']:.0f} s")
    elif group.main:
        work.mkdir(parents=True)
        (work / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        log(f"before fine-tuning: {evaluate()}")
        save_checkpoint()  # from now on, an interruption can always be resumed
    if group.world > 1:
        _share_state(group, network, method, objective, optimizer, rng, progress, parameters)
        log(f"fine-tuning in {group.world} processes, {batch_size // group.world} samples each per step")

    budget_s = budget_minutes * 60
    started = time.monotonic() - progress["elapsed_s"]
    last_checkpoint = time.monotonic()
    set_training(network, method, True)
    while True:
        going = time.monotonic() - started < budget_s and (max_steps is None or progress["step"] < max_steps)
        fraction = (time.monotonic() - started) / budget_s
        if max_steps:
            fraction = max(fraction, progress["step"] / max_steps)
        going, fraction = group.broadcast((going, fraction))  # rank 0's clock rules every rank
        if not going:
            break
        warmup = min(1.0, (progress["step"] + 1) / 20)
        for parameter_group in optimizer.param_groups:
            parameter_group["lr"] = learning_rate * warmup * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))
        progress["losses"].append(group.mean(objective.step(optimizer, rng)))
        progress["step"] += 1
        if on_step is not None:
            on_step(progress["step"], progress["losses"][-1])
        progress["elapsed_s"] = time.monotonic() - started
        if group.main and time.monotonic() - last_checkpoint >= checkpoint_seconds:
            scores = evaluate()
            save_checkpoint()
            last_checkpoint = time.monotonic()
            log(f"step {progress['step']}, {progress['elapsed_s']:.0f} s, loss {np.mean(progress['losses'][-20:]):.4f}, {scores}")
    if not group.main:
        return None
    log(f"step {progress['step']}, {progress['elapsed_s']:.0f} s: {evaluate()}")
    save_checkpoint()
    summary = {
        "base_model": model.info.name, "base_sha256": model.info.weights_sha256, "method": method, "rank": rank,
        "steps": progress["step"], "training_seconds": round(progress["elapsed_s"], 1),
        "resumed_at_steps": progress["resumed_at_steps"], "learning_rate": learning_rate, "batch_size": batch_size,
        "trainable_parameters": sum(p.numel() for p in parameters), "base_parameters": base_parameters, "processes": group.world,
        "validation_before": progress["history"][0], "validation_best": {"step": best["step"], **best["scores"]},
        "data_sha256": settings["data_sha256"], **objective.metadata(),
    }
    extra = {"training": summary, **({"labels": objective.data.labels} if kind == "encoder" else {})}
    save_adapter(out, best["state"], model.info.name, model.info.weights_sha256, method, rank, extra)
    shutil.rmtree(work)
    log(f"kept step {best['step']}: {best['scores']}")
    return {"adapter": display_path(out), "adapter_bytes": out.stat().st_size, **summary}


def _share_state(group: Group, network: torch.nn.Module, method: str, objective: Any, optimizer: torch.optim.Optimizer,
                 rng: np.random.Generator, progress: dict[str, Any], parameters: list[torch.nn.Parameter]) -> None:
    """Make every rank start from rank 0's trainable state, optimiser, random state and progress, and average the
    trainable parameters' gradients over the ranks before each optimiser step."""
    from medfm.scale.batchnorm import use_global_batchnorm

    state = group.broadcast({"network": trainable_state(network, method), "head": objective.head_state(),
                             "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
                             "progress": progress} if group.main else None)
    if not group.main:
        network.load_state_dict(state["network"], strict=False)
        objective.load_head_state(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        progress.update(state["progress"])
    if method == "full":  # BatchNorm layers train only then; they normalise with the global batch's statistics
        use_global_batchnorm(network)
    # the objectives call parts of the network (encoder, decoder) rather than one forward, which DDP's
    # gradient hooks need; the trainable parameters are averaged here instead, as DDP would
    optimizer.register_step_pre_hook(lambda *_: group.average_gradients(parameters))


def _follow(arguments: dict[str, Any], group: Group) -> None:
    finetune(**arguments, group=group)


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""
