"""The ``ray`` section of ``scale_bench.py``: ``index build`` on the plain path vs 1 and 2 Ray workers, and a fault test.

Each run embeds the same images into a new index with medfm-clip-small, with an empty
embedding cache of its own (``MEDFM_DATA_DIR`` per run, set before the run's cluster starts
so its workers use it too). Timed: ``build_index`` alone; the cluster start and the workers'
model loads are reported apart (``setup_s``). The fault run kills one worker (SIGKILL) once
the build is under way and counts the index's records against the images.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def bench_images(count: int, shared: Path | None, folder: Path) -> list[Path]:
    """``count`` images: Kvasir-SEG polyp photographs from ../shared when there, else generated PNGs."""
    source = shared / "kvasir_seg_polyp" if shared is not None else None
    if source is not None and source.is_dir():
        found = sorted(path for path in source.rglob("*.jpg") if "mask" not in str(path).lower())
        if len(found) >= count:
            return found[:count]
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for number in range(count):
        path = folder / f"image{number:04d}.png"
        Image.fromarray((rng.random((256, 256, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def run(images: list[Path], workers: int | None, kill_after_s: float | None = None) -> dict:
    """One build: ``workers=None`` on the plain path, else on a local Ray cluster of that many workers."""
    import ray

    from medfm.index import open_index
    from medfm.models.registry import DEFAULT_ENCODER, create_encoder
    from medfm.scale import encoder_runner
    from medfm.tasks.search import build_index

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["MEDFM_DATA_DIR"] = str(Path(scratch) / "data")
        started = time.perf_counter()
        encoder = create_encoder(DEFAULT_ENCODER)
        runner = encoder_runner(None if workers is None else "local", encoder, DEFAULT_ENCODER, None, workers or 1)
        setup_s = time.perf_counter() - started
        killed = []
        if kill_after_s is not None:
            victim = runner.pids()[0]
            timer = threading.Timer(kill_after_s, lambda: (os.kill(victim, signal.SIGKILL), killed.append(victim)))
            timer.start()
        try:
            started = time.perf_counter()
            report = build_index(images, encoder, Path(scratch) / "index", runner=runner)
            build_s = time.perf_counter() - started
            held = open_index(Path(scratch) / "index").ids()
        finally:
            runner.close()
            if ray.is_initialized():
                ray.shutdown()
        result = {"workers": workers or "plain", "setup_s": round(setup_s, 1), "build_s": round(build_s, 1),
                  "images_per_s": round(len(images) / build_s, 1), "added": report.added, "bad": len(report.bad)}
        if kill_after_s is not None:
            result.update(killed_worker=bool(killed), records=len(held), expected=len(images),
                          duplicates_or_missing=len(images) - len(held))
        return result


def bench_ray(count: int, shared: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        images = bench_images(count, shared, Path(folder))
        plain = run(images, None)
        one, two = run(images, 1), run(images, 2)
        fault = run(images, 2, kill_after_s=max(2.0, two["build_s"] / 3))
    return {"images": count, "source": "kvasir_seg_polyp" if shared and str(images[0]).startswith(str(shared)) else "generated",
            "plain": plain, "ray_1_worker": one, "ray_2_workers": two,
            "ray_1_vs_plain": round(one["images_per_s"] / plain["images_per_s"], 2),
            "ray_2_vs_plain": round(two["images_per_s"] / plain["images_per_s"], 2),
            "fault": fault}
