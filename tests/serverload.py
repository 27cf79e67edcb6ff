"""Many concurrent clients drawing and saving on a live server: shared by the load test and benchmark.

Each client (a thread with its own httpx connection) opens a session on one of the
images, clicks a few times around the image's centre (the last click negative) and saves
as a new version of annotation ``load``, so that all clients of one image race for
version numbers. A 429 is answered by waiting as its Retry-After says, as a polite
client would.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

ANNOTATION = "load"


@dataclass
class ClientRun:
    """What one client did: the image, the save response and each request's latency in seconds."""

    image_id: int
    saved: dict[str, Any] | None = None
    prompt_seconds: list[float] = field(default_factory=list)
    save_seconds: list[float] = field(default_factory=list)
    throttled: int = 0
    error: str | None = None


def _request(client: httpx.Client, run: ClientRun, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    while True:
        started = time.perf_counter()
        response = client.request(method, path, **kwargs)
        elapsed = time.perf_counter() - started
        if response.status_code != 429:
            response.raise_for_status()
            return response, elapsed
        run.throttled += 1
        time.sleep(float(response.headers.get("retry-after", "1")))


def clicks_for(width: int, height: int, count: int) -> list[tuple[float, float, int]]:
    """``count`` clicks ``(x, y, positive)`` near the centre of a ``width`` x ``height`` plane, the last negative."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    offsets = [(0, 0), (2, 1), (-1, 2), (1, -2), (-2, -1), (2, 2), (-2, 2)]
    clicks = [(cx + dx, cy + dy, 1) for dx, dy in offsets[: count - 1]]
    return clicks + [(max(cx - width / 5, 0), cy, 0)]


def run_client(url: str, headers: dict[str, str], image: dict[str, Any], clicks: int, run: ClientRun) -> None:
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            session = _request(client, run, "POST", "api/sessions", json={"image_id": image["id"]})[0].json()["session"]
            k = image["num_slices"] // 2
            for x, y, positive in clicks_for(image["display"]["width"], image["display"]["height"], clicks):
                body = {"k": k, "label": 1, "points": [[x, y]], "point_labels": [positive]}
                run.prompt_seconds.append(_request(client, run, "POST", f"api/sessions/{session}/prompts", json=body)[1])
            response, elapsed = _request(client, run, "POST", f"api/sessions/{session}/save", json={"name": ANNOTATION})
            run.saved, run.save_seconds = response.json(), [elapsed]
            _request(client, run, "DELETE", f"api/sessions/{session}")
    except Exception as exc:  # reported, and the test fails on it
        run.error = f"{type(exc).__name__}: {exc}"


def drive(url: str, headers: dict[str, str], image_ids: list[int], clients: int = 50, clicks: int = 5) -> tuple[list[ClientRun], float]:
    """Run ``clients`` concurrent clients over ``image_ids`` (round robin); returns their runs and the wall time."""
    images = {i: httpx.get(f"{url}api/images/{i}", headers=headers, timeout=60).json() for i in image_ids}
    runs = [ClientRun(image_ids[n % len(image_ids)]) for n in range(clients)]
    threads = [threading.Thread(target=run_client, args=(url, headers, images[run.image_id], clicks, run)) for run in runs]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs, time.perf_counter() - started
