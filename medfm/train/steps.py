"""The optimisation loop that trainers without extra state share: a wall-time budget or a step count,
a cosine learning rate over whichever ends first, and a checkpoint every ``checkpoint_seconds``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.train.run_folder import save_checkpoint


def run_steps(loss_of_batch: Callable[[np.random.Generator], torch.Tensor], network: torch.nn.Module,
              optimiser: torch.optim.Optimizer, progress: dict[str, Any], checkpoint: Path, *, learning_rate: float,
              budget_minutes: float, max_steps: int | None, checkpoint_seconds: float, seed: int,
              log: Callable[[str], None]) -> None:
    """Step ``optimiser`` on ``loss_of_batch(rng)`` until the budget or ``max_steps``, updating ``progress``
    (as :func:`medfm.train.run_folder.start_progress` made it) and ending with a checkpoint. The random
    draws continue from ``seed + step``, so a resumed run draws new batches rather than repeat the first ones."""
    budget_s = budget_minutes * 60.0
    started, last_checkpoint = time.monotonic() - progress["elapsed_s"], time.monotonic()
    rng = np.random.default_rng(seed + progress["step"])
    network.train()
    while time.monotonic() - started < budget_s and (max_steps is None or progress["step"] < max_steps):
        fraction = max((time.monotonic() - started) / budget_s, progress["step"] / max_steps if max_steps else 0.0)
        for group in optimiser.param_groups:
            group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))
        loss = loss_of_batch(rng)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        progress["step"] += 1
        progress["losses"].append(loss.item())
        progress["elapsed_s"] = time.monotonic() - started
        if time.monotonic() - last_checkpoint >= checkpoint_seconds:
            _save(checkpoint, network, optimiser, progress)
            last_checkpoint = time.monotonic()
            log(f"step {progress['step']}, {progress['elapsed_s']:.0f} s, loss {np.mean(progress['losses'][-50:]):.4f}")
    _save(checkpoint, network, optimiser, progress)


def _save(checkpoint: Path, network: torch.nn.Module, optimiser: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    save_checkpoint(checkpoint, {"network": network.state_dict(), "optimiser": optimiser.state_dict(), "progress": progress})
