"""The ``ddp-clip`` section of ``scale_bench.py``: ``train clip`` in 1 process against 2 (torch DDP, gloo) with one global batch.

Both runs train medfm-clip-small from the same seed on the generated two-class cache of
``tests/clipdata.py`` (``--images`` images, two thirds in the training split) for ``--epochs``
epochs of ``--batch`` images a step. Timed: each epoch's training steps (``seconds`` in the run's
``history.jsonl``: validation, process start and the cache are not counted), reported as steps/s
per epoch. Also reported: both runs' epoch losses and their largest relative difference. The
validation prompts get fixed random text features (no MiniLM), as in the tests.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from clipdata import write_cache


def bench_ddp_clip(images: int, epochs: int, batch: int) -> dict:
    import torch

    from medfm.train import clip

    clip.MedfmClipEncoder.encode_text = lambda self, texts: np.random.default_rng(len(texts)).normal(
        size=(len(texts), 256)).astype(np.float32)
    report = {"images": images, "epochs": epochs, "global_batch": batch, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="medfm-ddp-clip-bench-") as folder:
        cache = Path(folder) / "cache.pt"
        write_cache(cache, n=images)
        for workers in (1, 2):
            out = Path(folder) / f"workers-{workers}"
            clip.train_clip(Path(folder), out, epochs=epochs, batch_size=batch, cache=cache, workers=workers)
            history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
            steps = sum(1 for i in range(images) if i % 3 != 2) // batch
            report[f"processes_{workers}"] = {"steps_per_s": [round(steps / h["seconds"], 3) for h in history],
                                              "losses": [h["train_loss"] for h in history]}
    one, two = (np.array(report[f"processes_{w}"]["losses"]) for w in (1, 2))
    report["loss_max_relative_difference"] = float(np.max(np.abs(two / one - 1)))
    return report
