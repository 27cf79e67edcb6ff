"""What a workbench user waits for on a full-size CT; prints one JSON object.

Run ``python benchmarks/serve_interactive.py [--slices 300] [--volumes 20] [--browser]``.

A synthetic 512×512×``--slices`` CT series (DICOM, written to a temporary folder) is
catalogued and served by a real ``medfm serve`` on loopback, and one client does what the
workbench does: open the image (its details, which load the series), show a slice, scroll
through 40 slices (slice PNG and mask per slice), click on 10 new planes (the segmenter
encodes each) and click again on each (decode only). The peer, in the same run, is the
library doing the same work in this process without HTTP: ``medfm.load`` of the folder,
:func:`medfm.server.display.render_png` of a slice, and the segmenter's ``set_image`` and
``predict``; each ratio is server over library (medians).

Workbench v2 adds: the time to the first slice (details, then the middle plane's raw values),
an MPR slice change (a coronal plane's raw values; peer: an axial one, through the same
server), a window/level change measured in Chromium (``--browser``: the page windows the
raw plane itself; peer: the round trip for a slice.png at the new window, in the same page),
and the server's resident memory after opening ``--volumes`` large volumes one after another
against its configured image cache (``--image-cache-mb``).
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
#: The header every state-changing request to the server carries (docs/server-api.md: cross-site requests).
CLIENT = {"X-Medfm-Client": "benchmark"}


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 2)


def through_server(url: str, image_id: int, middle: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=120, headers=CLIENT) as client:
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


def first_slice_and_mpr(url: str, image_id: int, middle: int) -> dict[str, float]:
    """A fresh server: time to the first slice a user sees, then MPR plane changes (raw values)."""
    with httpx.Client(base_url=url, timeout=300) as client:
        first_ms = _timed(lambda: (client.get(f"api/images/{image_id}").raise_for_status(),
                                   client.get(f"api/images/{image_id}/raw", params={"index": middle}).raise_for_status()))[0]
        axial = [_timed(lambda k=k: client.get(f"api/images/{image_id}/raw", params={"index": k}).raise_for_status())[0]
                 for k in range(middle - 10, middle + 10)]
        coronal = [_timed(lambda j=j: client.get(f"api/images/{image_id}/raw", params={"axis": "j", "index": j}).raise_for_status())[0]
                   for j in range(246, 266)]
    return {"first_slice_ms": round(first_ms, 2), "axial_raw_ms": _median(axial), "mpr_slice_change_ms": _median(coronal)}


def window_level_in_browser(url: str, image_id: int) -> dict[str, float] | None:
    """Milliseconds per W/L change windowed in the page, and per slice.png round trip at a new window (Chromium)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        return None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 860}, bypass_csp=True)
        page.goto(f"{url}?image={image_id}")
        page.wait_for_function("(document.querySelector('[data-testid=viewport]').dataset.loadedPlane || '') !== ''",
                               timeout=300_000)
        timings = page.evaluate("""async (id) => {
            const centre = document.querySelector('[data-testid=wl-center]');
            const viewport = document.querySelector('[data-testid=viewport]');
            const inPage = [];
            // both until the new picture is on the canvas (not until the next frame is composited)
            for (let i = 0; i < 30; i++) {
                const t0 = performance.now();
                centre.value = String(40 + i);
                centre.dispatchEvent(new Event('change'));  // windows the plane and draws it, synchronously
                if (!viewport.dataset.loadedPlane.includes(`,${40 + i},`)) throw new Error('not repainted');
                inPage.push(performance.now() - t0);
                await new Promise(requestAnimationFrame);
            }
            const k = viewport.dataset.loadedPlane.split(',')[0];
            const canvas = document.createElement('canvas');
            const ctx = canvas.getContext('2d');
            const roundTrip = [];
            for (let i = 0; i < 15; i++) {
                const t0 = performance.now();
                const blob = await (await fetch(`/api/images/${id}/slice.png?k=${k}&center=${40 + i}&width=400`)).blob();
                const bitmap = await createImageBitmap(blob);
                [canvas.width, canvas.height] = [bitmap.width, bitmap.height];
                ctx.drawImage(bitmap, 0, 0);
                bitmap.close();
                roundTrip.push(performance.now() - t0);
            }
            const median = (v) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
            return [median(inPage), median(roundTrip)];
        }""", image_id)
        browser.close()
    in_page, round_trip = timings
    return {"wl_change_in_page_ms": round(in_page, 2), "wl_change_png_round_trip_ms": round(round_trip, 2),
            "wl_in_page_over_round_trip": round(in_page / round_trip, 3)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def memory_after_volumes(tmp: Path, volumes: int, cache_mb: int) -> dict[str, float]:
    """Server RSS after opening ``volumes`` NIfTI volumes of 512x512x200 int16 (100 MiB each) in turn."""
    import nibabel as nib

    folder = tmp / "memory" / "volumes"  # inside the server's data folder: ingest takes nothing from outside
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in range(volumes):
        array = rng.integers(-1000, 1000, (512, 512, 200), dtype=np.int16)
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(folder / f"volume_{n:02d}.nii"))
    with start_server(tmp / "memory", extra_args=["--image-cache-mb", str(cache_mb)]) as server:
        with httpx.Client(base_url=server.url, timeout=600, headers=CLIENT) as client:
            job = client.post("api/ingest", json={"path": "volumes"}).json()["job"]
            while client.get(f"api/jobs/{job}").json()["state"] not in ("done", "failed"):
                time.sleep(0.5)
            ids = [image["id"] for image in client.get("api/images").json()["images"]]
            before = rss_mb(server.process.pid)
            peak = before
            for image_id in ids:
                client.get(f"api/images/{image_id}").raise_for_status()
                client.get(f"api/images/{image_id}/raw", params={"index": 100}).raise_for_status()
                peak = max(peak, rss_mb(server.process.pid))
            after = rss_mb(server.process.pid)
            cache = client.get("api/health").json()["memory"]["image_cache"]
    return {"volumes_opened": len(ids), "volume_mb": 100.0, "image_cache_limit_mb": cache_mb,
            "image_cache_held_mb": round(cache["bytes"] / 2**20, 1), "rss_before_mb": round(before, 1),
            "rss_after_mb": round(after, 1), "rss_peak_mb": round(peak, 1),
            "rss_growth_over_cache_limit": round((peak - before) / cache_mb, 2)}


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
    parser.add_argument("--volumes", type=int, default=20, help="large volumes opened for the memory figure (0: skip)")
    parser.add_argument("--image-cache-mb", type=int, default=512)
    parser.add_argument("--browser", action="store_true", help="measure window/level changes in Chromium")
    parser.add_argument("--skip-clicks", action="store_true", help="leave out the segmenter timings")
    args = parser.parse_args()
    from medfm.catalog import ingest, open_catalog
    from medfm.io.synthetic import phantom, write_dicom_series

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        folder = data_dir / "ct"
        write_dicom_series(phantom((512, 512, args.slices)), folder)
        middle = args.slices // 2
        library = {} if args.skip_clicks else in_library(folder, middle)
        with start_server(data_dir) as server:
            with open_catalog(f"sqlite:///{data_dir / 'catalog.db'}") as catalog:
                ingest([folder], catalog)
                (record,) = catalog.query()
            workbench = first_slice_and_mpr(server.url, record.id, middle)
            workbench["mpr_over_axial"] = round(workbench["mpr_slice_change_ms"] / workbench["axial_raw_ms"], 2)
            if args.browser:
                workbench.update(window_level_in_browser(server.url, record.id) or {"wl_change": "no Chromium/playwright"})
            served = {} if args.skip_clicks else through_server(server.url, record.id, middle)
        if args.volumes:
            workbench["memory"] = memory_after_volumes(data_dir, args.volumes, args.image_cache_mb)
    ratios = {f"{key}_server_over_library": round(served[key] / library[key], 2)
              for key in ("open_ms", "slice_ms", "click_new_plane_ms", "click_again_ms") if key in served}
    print(json.dumps({
        "benchmark": "serve_interactive", "cpu": platform.machine(), "cpu_count": os.cpu_count(),
        "image": f"CT 512x512x{args.slices} int16 DICOM", "server": served, "library": library, **ratios,
        "workbench": workbench,
    }, indent=2))


if __name__ == "__main__":
    main()
