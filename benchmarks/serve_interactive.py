"""What a workbench user waits for on a full-size CT; prints one JSON object.

Run ``python benchmarks/serve_interactive.py [--slices 300]``.

A synthetic 512×512×``--slices`` CT series (DICOM, written to a temporary folder) is
catalogued and served by a real ``medfm serve`` on loopback, and one client does what the
workbench does: open the image (its details, which load the series), show a slice, scroll
through 40 slices (slice PNG and mask per slice), click on 10 new planes (the segmenter
encodes each) and click again on each (decode only). The peer, in the same run, is the
library doing the same work in this process without HTTP: ``medfm.load`` of the folder,
:func:`medfm.server.display.render_png` of a slice, and the segmenter's ``set_image`` and
``predict``; each ratio is server over library (medians).
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

CLICK = (256.0, 256.0)


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 2)


def through_server(url: str, image_id: int, middle: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=120) as client:
        open_ms, _ = _timed(lambda: client.get(f"api/images/{image_id}").raise_for_status())
        session = client.post("api/sessions", json={"image_id": image_id}).json()["session"]
        planes = range(middle - 20, middle + 20)
        slice_ms = [_timed(lambda k=k: client.get(f"api/images/{image_id}/slice.png", params={"k": k}).raise_for_status())[0] for k in planes]
        mask_ms = [_timed(lambda k=k: client.get(f"api/sessions/{session}/mask", params={"k": k}).raise_for_status())[0] for k in planes]
        first, again = [], []
        for k in range(middle - 5, middle + 5):
            body = {"k": k, "points": [list(CLICK)], "point_labels": [1]}
            first.append(_timed(lambda b=body: client.post(f"api/sessions/{session}/prompts", json=b).raise_for_status())[0])
            again.append(_timed(lambda b=body: client.post(f"api/sessions/{session}/prompts", json=b).raise_for_status())[0])
    return {"open_ms": round(open_ms, 2), "slice_ms": _median(slice_ms), "mask_ms": _median(mask_ms),
            "click_new_plane_ms": _median(first), "click_again_ms": _median(again)}


def in_library(folder: Path, middle: int) -> dict[str, float]:
    from medfm.io import load
    from medfm.models.registry import create_segmenter
    from medfm.models.segmenters import Prompt
    from medfm.server.display import Display, default_window, render_png

    open_ms, image = _timed(lambda: load(folder))
    display, window = Display.of(image), default_window(image)
    slice_ms = [_timed(lambda k=k: render_png(image, k, 0, display, window))[0] for k in range(middle - 20, middle + 20)]
    segmenter = create_segmenter("medfm-interactive")
    first, again = [], []
    for k in range(middle - 5, middle + 5):
        plane = image.frame(k, 0)
        first.append(_timed(lambda p=plane: (segmenter.set_image(p), segmenter.predict(Prompt(points=[CLICK], point_labels=[1]))))[0])
        again.append(_timed(lambda p=plane: (segmenter.set_image(p), segmenter.predict(Prompt(points=[CLICK], point_labels=[1]))))[0])
    return {"open_ms": round(open_ms, 2), "slice_ms": _median(slice_ms),
            "click_new_plane_ms": _median(first), "click_again_ms": _median(again)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    from medfm.catalog import ingest, open_catalog
    from medfm.io.synthetic import phantom, write_dicom_series

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        folder = data_dir / "ct"
        write_dicom_series(phantom((512, 512, args.slices)), folder)
        middle = args.slices // 2
        library = in_library(folder, middle)
        with start_server(data_dir) as server:
            with open_catalog(f"sqlite:///{data_dir / 'catalog.db'}") as catalog:
                ingest([folder], catalog)
                (record,) = catalog.query()
            served = through_server(server.url, record.id, middle)
    ratios = {f"{key}_server_over_library": round(served[key] / library[key], 2)
              for key in ("open_ms", "slice_ms", "click_new_plane_ms", "click_again_ms")}
    print(json.dumps({
        "benchmark": "serve_interactive", "cpu": platform.machine(), "cpu_count": os.cpu_count(),
        "image": f"CT 512x512x{args.slices} int16 DICOM", "server": served, "library": library, **ratios,
    }, indent=2))


if __name__ == "__main__":
    main()
