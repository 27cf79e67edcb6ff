"""The REST server under load: 50 concurrent clients clicking and saving; prints one JSON object.

Run ``python benchmarks/serve_load.py [--clients 50] [--clicks 5]``.

A real ``medfm serve`` (tests/liveserver.py) runs on loopback over three small images (a
48×48×6 NIfTI disc volume, a 32×32×4 DICOM phantom, a 40×30 RGB photo). First the same
click runs ``--serial`` times through the library in this process (``Segmenter.set_image``
on the cached plane, then ``predict`` with the previous logits: what the server does
behind HTTP, JSON and the PNG mask) and through the server for one client alone; the
ratio of their medians is the server's overhead. Then ``--clients`` threads
(tests/serverload.py) each open a session, click ``--clicks`` times and save: p50/p95
latency of prompts and saves, answered requests per second (429s, waited out, are
counted apart), and versions lost (saves whose version is missing or whose file's voxel
count differs from what the save returned).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from liveserver import start_server  # noqa: E402
from serverload import ANNOTATION, clicks_for, drive  # noqa: E402
from servertools import disc_volume, make_data  # noqa: E402


def _ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2)


def library_click_ms(repeats: int) -> float:
    """Median ms of one click through the library: set_image on a cached plane, then predict."""
    from medfm.models.registry import create_segmenter
    from medfm.models.segmenters import Prompt

    segmenter = create_segmenter("medfm-interactive")
    plane = disc_volume()[:, :, 3].T
    segmenter.set_image(plane)
    logits, times = None, []
    for x, y, positive in (clicks_for(48, 48, 5) * repeats)[:repeats]:
        started = time.perf_counter()
        segmenter.set_image(plane)
        logits = segmenter.predict(Prompt(points=[(x, y)], point_labels=[positive], mask_input=logits)).logits
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 2)


def serial_click_ms(url: str, image_id: int, repeats: int) -> float:
    """Median ms of one click through the server, one client alone, on the same plane."""
    with httpx.Client(base_url=url, timeout=60) as client:
        session = client.post("api/sessions", json={"image_id": image_id}).json()["session"]
        times = []
        for x, y, positive in (clicks_for(48, 48, 5) * repeats)[:repeats]:
            started = time.perf_counter()
            client.post(f"api/sessions/{session}/prompts", json={"k": 3, "points": [[x, y]], "point_labels": [positive]}).raise_for_status()
            times.append(time.perf_counter() - started)
        client.delete(f"api/sessions/{session}")
    return round(float(np.median(times[1:])) * 1000, 2)  # the first click encodes the plane


def versions_lost(data_dir: Path, runs: list) -> int:
    from medfm.io import load

    lost = 0
    for run in runs:
        path = data_dir / "annotations" / str(run.image_id) / ANNOTATION / f"v{run.saved['version']:04d}.nii.gz" if run.saved else None
        if path is None or not path.is_file() or int((np.asarray(load(path).array) == 1).sum()) != run.saved["voxels"].get("1", 0):
            lost += 1
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--serial", type=int, default=30, help="clicks of the lone client and of the library")
    args = parser.parse_args()
    library = library_click_ms(args.serial)  # before the server starts, so that nothing competes for the CPU
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp, "data"))
        image_ids = [data["disc"], data["ct"], data["photo"]]
        with start_server(Path(tmp, "data")) as server:
            serial = serial_click_ms(server.url, data["disc"], args.serial)
            runs, seconds = drive(server.url, server.headers, image_ids, clients=args.clients, clicks=args.clicks)
            lost = versions_lost(server.data_dir, runs)
    prompts = [s for run in runs for s in run.prompt_seconds]
    saves = [s for run in runs for s in run.save_seconds]
    requests = len(prompts) + len(saves) + 2 * len(runs)  # with each session's open and close
    print(json.dumps({
        "benchmark": "serve_load", "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "clients": args.clients, "clicks_per_client": args.clicks, "requests": requests,
        "errors": sum(1 for run in runs if run.error), "throttled_429": sum(run.throttled for run in runs),
        "wall_s": round(seconds, 2), "requests_per_s": round(requests / seconds, 1),
        "prompt_ms": {"p50": _ms(prompts, 50), "p95": _ms(prompts, 95)},
        "save_ms": {"p50": _ms(saves, 50), "p95": _ms(saves, 95)},
        "versions_saved": sum(1 for run in runs if run.saved), "versions_lost": lost,
        "click_ms": {"server_one_client": serial, "library_in_process": library,
                     "ratio_server_over_library": round(serial / library, 2)},
    }, indent=2))


if __name__ == "__main__":
    main()
