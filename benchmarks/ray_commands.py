"""The ``commands`` section of ``scale_bench.py``: images/s of ``ingest``, ``classify``, ``segment --auto`` and
``evaluate robustness`` on the plain path vs 1 and 2 Ray workers, each as a ratio to the plain path.

Each command runs through its library function (what the CLI calls) on the same inputs: Kvasir-SEG images
(from ../shared when there, else generated) for ingest, zero-shot classification (medfm-clip-small) and box-prompted
robustness (medfm-interactive, one corruption at two severities: three predictions per case); generated discs
for ``segment --auto``, with a model trained for two steps here (its speed, not its quality, is measured).
One local cluster per worker count serves the four commands; timed: the call alone, not the cluster start or
the workers' model loads (the runner is opened first). Embedding caches start empty in every run.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ray_build import bench_images  # noqa: E402


def robustness_manifest(images: list[Path], folder: Path) -> Path:
    """A manifest of ``images`` with their masks (Kvasir-SEG's ``masks/`` beside ``images/``)."""
    path = folder / "robustness.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask"])
        writer.writerows([str(image), str(image.parent.parent / "masks" / image.name)] for image in images)
    return path


#: ``prepare(ray address or None, workers) -> runner or None`` (not timed) and ``call(runner)`` (timed).
Job = tuple[int, Callable[[str | None, int], object], Callable[[object], object]]


def commands(images: list[Path], folder: Path) -> dict[str, Job]:
    """Per command: how many images it takes, how to open its runner, and the call to time."""
    from medfm.catalog import ingest
    from medfm.eval.protocols.robustness import BoxPrompted, segmenter_robustness
    from medfm.models import create_encoder
    from medfm.models.registry import DEFAULT_ENCODER, create_auto_segmenter, create_segmenter
    from medfm.scale import encoder_runner, open_runner
    from medfm.tasks.auto_segment import auto_segment_files
    from medfm.tasks.batch import expand_paths
    from medfm.tasks.classify import classify_files
    from medfm.train.seg import train_segmenter
    from segdata import write_discs

    manifest = write_discs(folder / "discs", count=len(images), size=128)
    model = folder / "auto-model"
    train_segmenter(manifest, model, max_steps=2, plan_overrides={"batch_size": "4"})
    discs, inputs = expand_paths([folder / "discs" / "images"]), expand_paths(images)
    encoder, segmenter = create_encoder(DEFAULT_ENCODER), create_auto_segmenter(model)
    interactive = create_segmenter("medfm-interactive")
    robustness = robustness_manifest(images, folder)
    outputs = iter(folder / f"out{n}" for n in range(1000))

    def no_runner(prepare):
        return lambda ray, workers: prepare(ray, workers) if ray else None

    return {
        "ingest": (len(images), no_runner(lambda ray, workers: open_runner(ray, workers)),
                   lambda runner: ingest(images, f"sqlite:///{next(outputs)}.db", progress=False, runner=runner)),
        "classify": (len(images), no_runner(lambda ray, workers: encoder_runner(ray, encoder, DEFAULT_ENCODER, None, workers)),
                     lambda runner: classify_files(inputs, encoder, labels=["polyp", "normal mucosa"], runner=runner)),
        "segment_auto": (len(discs), no_runner(lambda ray, workers: open_runner(ray, workers, segmenter,
                                                                                partial(create_auto_segmenter, str(model)))),
                         lambda runner: auto_segment_files(discs, next(outputs), segmenter, runner=runner)),
        "evaluate_robustness": (len(images), no_runner(lambda ray, workers: open_runner(
                                    ray, workers, BoxPrompted(interactive), lambda: BoxPrompted(create_segmenter("medfm-interactive")))),
                                lambda runner: segmenter_robustness(robustness, interactive, corruptions=("gaussian_noise",),
                                                                    severities=(1, 5), runner=runner)),
    }


def bench_commands(count: int, shared: Path | None) -> dict:
    import ray

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        images = bench_images(count, shared, folder)
        jobs = commands(images, folder)
        rates: dict[str, dict[str, float]] = {name: {} for name in jobs}
        for workers in (None, 1, 2):
            os.environ["MEDFM_DATA_DIR"] = str(folder / f"data-{workers}")  # empty caches, the workers' too
            if workers is not None:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                for name, (n, prepare, call) in jobs.items():
                    runner = prepare("local" if workers else None, workers or 1)
                    try:
                        started = time.perf_counter()
                        call(runner)
                        rates[name]["plain" if workers is None else f"ray_{workers}"] = round(n / (time.perf_counter() - started), 2)
                    finally:
                        if runner is not None:
                            runner.close()
            finally:
                if ray.is_initialized():
                    ray.shutdown()
    return {name: {"images_per_s": rate, "ray_1_vs_plain": round(rate["ray_1"] / rate["plain"], 2),
                   "ray_2_vs_plain": round(rate["ray_2"] / rate["plain"], 2)} for name, rate in rates.items()}
