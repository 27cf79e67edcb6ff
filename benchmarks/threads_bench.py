"""medfm's thread count against torch's own default, with and without a competing CPU load; prints one JSON object.

Run ``python benchmarks/threads_bench.py [--cpus 0,1] [--busy 1] [--predictions 30]``.

Each measurement runs in a fresh process (torch's thread pools are per process) holding
``medfm-interactive``: the median and 90th-centile latency of one prediction (a new
256×256 plane encoded, then a box decoded: what one click on a new slice costs), and the
time to propagate one box through a synthetic 256×256×48 volume (a sphere in noise) from
its middle slice. "medfm default" is :func:`medfm.threads.default_threads`; "torch default"
is the intra-op thread count torch chooses when nothing is set (one per core), restored
after the model is created. The competing load is ``--busy`` processes spinning on the
CPU at normal priority (what another user's job does). ``--cpus`` pins everything (the
measured process and the load) to those CPUs, e.g. ``0,1`` to act as a 2-core machine.
``ratio`` is torch default ÷ medfm default: above 1, medfm's choice is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

THREAD_VARIABLES = ("MEDFM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

MEASURE = r"""
import json, sys, time
import numpy as np
import torch

torch_default = torch.get_num_threads()
from medfm.io.image import Image
from medfm.models.registry import create_segmenter
from medfm.models.segmenters import Prompt
from medfm.tasks.segment import propagate

segmenter = create_segmenter("medfm-interactive")  # applies medfm's default
if sys.argv[1] == "torch":
    torch.set_num_threads(torch_default)
predictions = int(sys.argv[2])
rng = np.random.default_rng(0)
size, depth = 256, 48
yy, xx = np.mgrid[:size, :size]
disk = (xx - 128) ** 2 + (yy - 120) ** 2 <= 50 ** 2
box = Prompt(boxes=[(70, 62, 186, 178)])
segmenter.set_image(np.where(disk, 180, 60).astype(np.uint8))  # warm-up: first-call allocations
segmenter.predict(box)
latencies = []
for n in range(predictions):
    plane = np.clip(np.where(disk, 180, 60) + rng.normal(0, 20, disk.shape), 0, 255).astype(np.uint8)
    start = time.perf_counter()
    segmenter.set_image(plane)
    segmenter.predict(box)
    latencies.append((time.perf_counter() - start) * 1000)
grid = np.mgrid[:size, :size, :depth]
sphere = ((grid[0] - 120) ** 2 + (grid[1] - 128) ** 2 + ((grid[2] - depth // 2) * 4) ** 2) <= 90 ** 2
volume = Image((sphere * 150 + rng.normal(40, 15, sphere.shape)).astype(np.float32))
start = time.perf_counter()
result = propagate(volume, segmenter, {depth // 2: [Prompt(boxes=[(40, 30, 210, 220)])]})
propagation_s = time.perf_counter() - start
planes = len(result.metadata["segmentation"]["structures"][0]["planes"])
print(json.dumps({"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
                  "prediction_ms_median": float(np.median(latencies)),
                  "prediction_ms_p90": float(np.percentile(latencies, 90)),
                  "propagation_s": propagation_s, "propagated_planes": planes,
                  "propagation_ms_per_plane": propagation_s * 1000 / planes}))
"""


def measure(config: str, predictions: int) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    result = subprocess.run([sys.executable, "-c", MEASURE, config, str(predictions)],
                            check=True, capture_output=True, text=True, env=env, timeout=1800)
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_load(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", help="comma-separated CPU numbers to pin to (default: all this process may use)")
    parser.add_argument("--busy", type=int, default=1, help="competing busy processes")
    parser.add_argument("--predictions", type=int, default=30)
    args = parser.parse_args()
    cpus = {int(cpu) for cpu in args.cpus.split(",")} if args.cpus else None
    if cpus:
        os.sched_setaffinity(0, cpus)  # inherited by the measured processes and the load
    results: dict[str, dict] = {}
    for load in ("idle", "busy"):
        load_processes = start_load(args.busy) if load == "busy" else []
        try:
            time.sleep(0.5 if load_processes else 0)
            runs = {config: measure(config, args.predictions) for config in ("medfm", "torch")}
        finally:
            for process in load_processes:
                process.kill()
                process.wait()
        results[load] = {
            "medfm_default": runs["medfm"],
            "torch_default": runs["torch"],
            "ratio_torch_to_medfm": {
                key: round(runs["torch"][key] / runs["medfm"][key], 2)
                for key in ("prediction_ms_median", "prediction_ms_p90", "propagation_ms_per_plane")
            },
        }
    print(json.dumps({
        "python": platform.python_version(),
        "cpus_on_machine": os.cpu_count(),
        "cpus_pinned": sorted(cpus) if cpus else None,
        "busy_processes": args.busy,
        "load_average_at_end": os.getloadavg(),
        "predictions": args.predictions,
        **results,
    }, indent=2))


if __name__ == "__main__":
    main()
