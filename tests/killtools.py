"""Killing a training run mid-way, for the tests that prove a run resumes after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPOSITORY = Path(__file__).resolve().parents[1]


def step_of(checkpoint: Path) -> int:
    """The training step a checkpoint was written at."""
    import torch

    return torch.load(checkpoint, weights_only=False)["progress"]["step"]


def child_env() -> dict[str, str]:
    """The environment of a child Python that runs this checkout's medfm on one thread."""
    return {**os.environ, "PYTHONPATH": str(REPOSITORY), "MEDFM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def kill_after_checkpoint(python_args: list[str], checkpoint: Path, *, ready: Callable[[Path], bool] = Path.is_file,
                          timeout: float = 300) -> None:
    """Run ``python PYTHON_ARGS`` on this checkout's medfm with one thread, SIGKILL it as soon as
    ``ready(checkpoint)`` holds, and fail if that never happened (the child died or the time ran out)."""
    child = subprocess.Popen([sys.executable, *python_args], env=child_env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not ready(checkpoint) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate()
    assert child.returncode == -signal.SIGKILL and ready(checkpoint), f"no checkpoint before the kill: {stderr.decode()[-2000:]}"
