"""The ``ddp`` section of ``scale_bench.py``: ``train seg`` in 1 process against 2 (torch DDP, gloo) with one global batch.

Both runs train medfm's default automatic segmenter on the same generated discs (``--size``
pixels a side, ``--batch`` patches a step in all) for ``--steps`` steps with the same seed.
Timed: the steps after the first (which includes DDP's first synchronisation); data
preparation, process start and validation are not counted. Also reported: the largest
relative difference between the two runs' per-step losses (the equivalence the tests bound).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from segdata import write_discs  # noqa: E402


def run(manifest: Path, out: Path, workers: int, steps: int, batch: int) -> tuple[list[float], float]:
    """``(per-step losses, steps/s after the first step)`` of one training run."""
    from medfm.train.seg import train_segmenter

    losses, times = [], []

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        times.append(time.monotonic())

    train_segmenter(manifest, out, max_steps=steps, budget_minutes=10_000, plan_overrides={"batch_size": str(batch)},
                    workers=workers, on_step=on_step)
    return losses, (len(times) - 1) / (times[-1] - times[0])


def bench_ddp(steps: int, size: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="medfm-ddp-bench-") as folder:
        manifest = write_discs(Path(folder) / "discs", count=16, size=size)
        one_losses, one_rate = run(manifest, Path(folder) / "one", 1, steps, batch)
        two_losses, two_rate = run(manifest, Path(folder) / "two", 2, steps, batch)
    difference = np.abs(np.array(two_losses) - one_losses) / np.abs(one_losses)
    return {"image_size": size, "global_batch": batch, "steps": steps,
            "steps_per_s": {"1 process": round(one_rate, 2), "2 processes": round(two_rate, 2)},
            "ratio_2_to_1": round(two_rate / one_rate, 2), "max_loss_relative_difference": float(difference.max())}
