"""Reading the field's checkpoint files safely, and saying in one line why one does not fit.

State dicts are read with safetensors or ``torch.load(weights_only=True)`` — never an
arbitrary pickle — and compared with the model key by key before loading, so a
checkpoint of another architecture fails with "N missing keys, first: ..." instead of
PyTorch's page-long report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from medfm.errors import MedfmError, display_path


def weights_file(path: Path, names: Sequence[str]) -> Path:
    """``path`` itself if it is a file, else the first of ``names`` inside the folder ``path``."""
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise MedfmError(f"{display_path(path)}: no weights file in the folder; expected one of {', '.join(names)}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a ``torch.save``d state dict (``.pt``/``.pth``/``.bin``).

    A dict that wraps the weights under ``state_dict`` or ``model`` is unwrapped, and the
    ``module.`` prefix of DataParallel checkpoints is removed.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip errors all mean "not a readable checkpoint"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise MedfmError(f"{display_path(path)}: cannot read as a checkpoint ({reason})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise MedfmError(f"{display_path(path)}: not a state dict (a mapping of names to tensors)")
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """How ``found`` (a checkpoint) differs from ``expected`` (a model's state dict), or ``None``."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    reshaped = [key for key in expected if key in found and tuple(found[key].shape) != tuple(expected[key].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys, first: {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, first: {unexpected[0]}")
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} tensors of another shape, first: {key} "
            f"{tuple(found[key].shape)} in the checkpoint, {tuple(expected[key].shape)} in the model"
        )
    return "; ".join(parts) or None


def load_exactly(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, architecture: str) -> None:
    """Load ``state`` into ``model`` only if every key and shape matches; else a one-line error."""
    problem = mismatch(model.state_dict(), state)
    if problem:
        raise MedfmError(f"{display_path(path)}: not a checkpoint of {architecture}: {problem}")
    model.load_state_dict(state, strict=True)
