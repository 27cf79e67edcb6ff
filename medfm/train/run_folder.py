"""Where a training run builds its output: one hidden ``.OUT.partial`` folder, renamed into place when done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medfm.errors import MedfmError, display_path


def partial_folder(out: Path, resume: bool, checkpoint_file: str, output: str = "model folder",
                   activity: str = "training") -> Path:
    """The folder in which a run builds ``out``, after refusing in one line: an ``out`` that exists
    (never overwritten), a ``resume`` with no checkpoint to resume, an interrupted run killed before
    its first checkpoint (which only removing it clears), and a fresh start over an interrupted run
    (which ``--resume`` continues or the user removes). ``output`` names what ``out``
    is ("model folder", "adapter file"), ``activity`` the run ("training", "pretraining")."""
    build = out.parent / f".{out.name}.partial"
    if out.exists():
        raise MedfmError(f"{display_path(out)}: already exists; choose a new {output}")
    if build.exists() and not (build / checkpoint_file).is_file():
        # the trainers resume only from a checkpoint: one killed before its first has nothing to continue
        raise MedfmError(f"{display_path(build)}: an interrupted {activity} stopped before its first checkpoint, so "
                         "there is nothing to resume; remove it to start again")
    if resume and not (build / checkpoint_file).is_file():
        raise MedfmError(f"{display_path(out)}: no interrupted {activity} to resume (no {display_path(build / checkpoint_file)})")
    if build.exists() and not resume:
        raise MedfmError(f"{display_path(build)}: an interrupted {activity} of this {output.split()[0]} is there; "
                         "pass --resume, or remove it to start again")
    return build


def run_settings(build: Path, resume: bool, state_file: str, defaults: dict[str, Any], recipe: dict[str, Any],
                 **fixed: Any) -> dict[str, Any]:
    """A run's settings: on ``resume`` those its first run stored in ``build / state_file`` (a resumed run keeps
    its recipe); else ``defaults`` overridden by ``recipe`` and ``fixed``. A ``recipe`` key that ``defaults``
    lacks is refused in one line."""
    unknown = sorted(set(recipe) - set(defaults))
    if unknown:
        raise MedfmError(f"unknown training setting {unknown[0]!r}; choose from {', '.join(defaults)}")
    if resume:
        return json.loads((build / state_file).read_text())
    return {**defaults, **recipe, **fixed}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` through a temporary file, so a kill leaves the previous checkpoint whole."""
    import torch

    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def write_json(path: Path, value: Any) -> None:
    """``value`` as strict JSON (:func:`medfm.serialize.json_ready`) into ``path``, replaced whole."""
    from medfm.serialize import json_ready

    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(json_ready(value), indent=2, allow_nan=False) + "\n")
    os.replace(temporary, path)


def start_progress(checkpoint: Path, resume: bool, network: Any, optimiser: Any) -> dict[str, Any]:
    """A run's progress (step, elapsed seconds, losses, the steps it resumed at): new, or read back
    from ``checkpoint`` (as :func:`save_checkpoint` wrote ``{"network", "optimiser", "progress"}``)
    with ``network`` and ``optimiser`` restored to it."""
    if not resume:
        return {"step": 0, "elapsed_s": 0.0, "losses": [], "resumed_at_steps": []}
    import torch

    state = torch.load(checkpoint, weights_only=False)
    network.load_state_dict(state["network"])
    optimiser.load_state_dict(state["optimiser"])
    progress = state["progress"]
    progress["resumed_at_steps"].append(progress["step"])
    return progress


def publish_model_folder(out: Path, state: dict[str, Any], config: dict[str, Any], weights_file: str = "weights.safetensors") -> None:
    """Write the model folder ``out``: ``state`` (float16 tensors) as ``weights_file`` and ``config`` named after the
    folder, with the weights' file, sha256 and dtype; built aside and renamed whole, so ``out`` is absent or complete."""
    import shutil

    from medfm.models.registry import save_weights, sha256_of

    building = out.parent / f".{out.name}.partial"
    shutil.rmtree(building, ignore_errors=True)  # what a killed run left
    building.mkdir()
    try:
        save_weights(state, building / weights_file)
        write_json(building / "config.json", {"name": out.name, **config, "weights": {
            "file": weights_file, "sha256": sha256_of(building / weights_file), "dtype": "float16"}})
        os.replace(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
