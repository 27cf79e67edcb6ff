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
    (never overwritten), a ``resume`` with no checkpoint to resume, and a fresh start over an
    interrupted run (which ``--resume`` continues or the user removes). ``output`` names what ``out``
    is ("model folder", "adapter file"), ``activity`` the run ("training", "pretraining")."""
    build = out.parent / f".{out.name}.partial"
    if out.exists():
        raise MedfmError(f"{display_path(out)}: already exists; choose a new {output}")
    if resume and not (build / checkpoint_file).is_file():
        raise MedfmError(f"{display_path(out)}: no interrupted {activity} to resume (no {display_path(build / checkpoint_file)})")
    if build.exists() and not resume:
        raise MedfmError(f"{display_path(build)}: an interrupted {activity} of this {output.split()[0]} is there; "
                         "pass --resume, or remove it to start again")
    return build


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
