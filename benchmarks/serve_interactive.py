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
the server's resident memory after opening ``--volumes`` large volumes one after another
(a segmentation session on each, its thumbnail and a slice) against its configured bounds
(``--image-cache-mb`` plus ``--session-mb``), and a chunked upload of a thin-slice study
(``--upload-files`` DICOM slices of 512 KiB, 1.5 GB for 3,000) through the REST upload path
the workbench uses, in the server's suggested chunks: MB/s, wall time, the server's peak
resident memory while it arrived, and the ingest that follows. Its peer is the same bytes
copied from file to file in this process, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int) -> float:
    """The process's largest resident size so far (the kernel's high-water mark, not a sample)."""
    return _status_mb(pid, "VmHWM")


def _wait_for_job(client: httpx.Client, job: str) -> dict:
    while (status := client.get(f"api/jobs/{job}").json())["state"] not in ("done", "failed"):
        time.sleep(0.5)
    return status


def memory_after_volumes(tmp: Path, volumes: int, slices: int, cache_mb: int, session_mb: int) -> dict[str, float]:
    """Server RSS after opening ``volumes`` gzipped NIfTI volumes of 512x512x``slices`` int16 in turn:
    each one's thumbnail, a segmentation session on it and its middle slice, as the workbench does."""
    import nibabel as nib

    from medfm.catalog import ingest
    from medfm.io.synthetic import phantom

    folder = tmp / "memory" / "volumes"  # inside the server's data folder: ingest takes nothing from outside
    folder.mkdir(parents=True)
    slab = phantom((512, 512, 30))
    for n in range(volumes):
        volume = np.tile(slab, (1, 1, -(-slices // 30)))[:, :, :slices] + np.int16(n)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"volume_{n:02d}.nii.gz"))
    volume_mb = 512 * 512 * slices * 2 / 2**20
    bound_mb = cache_mb + session_mb
    # catalogued before the server starts: an ingest through the server would start indexing them
    # for search, and the encoder's weights and work would be measured with the volumes
    ingest([folder], f"sqlite:///{tmp / 'memory' / 'catalog.db'}", progress=False)
    with start_server(tmp / "memory", extra_args=["--image-cache-mb", str(cache_mb), "--session-mb", str(session_mb)]) as server:
        pid = server.process.pid
        with httpx.Client(base_url=server.url, timeout=600, headers=server.headers) as client:
            ids = [image["id"] for image in client.get("api/images", params={"limit": volumes}).json()["images"]]
            before = rss_mb(pid)
            samples = []
            for image_id in ids:
                client.get(f"api/images/{image_id}/thumbnail.png").raise_for_status()
                client.post("api/sessions", json={"image_id": image_id}).raise_for_status()
                client.get(f"api/images/{image_id}/raw", params={"index": slices // 2}).raise_for_status()
                samples.append(rss_mb(pid))
            after, peak = rss_mb(pid), peak_rss_mb(pid)
            memory = client.get("api/health").json()["memory"]
    return {"volumes_opened": len(ids), "volume_mb": round(volume_mb, 1), "image_cache_limit_mb": cache_mb,
            "session_limit_mb": session_mb, "bound_mb": bound_mb,
            "image_cache_held_mb": round(memory["image_cache"]["bytes"] / 2**20, 1),
            "sessions_held_mb": round(memory["sessions"]["bytes"] / 2**20, 1), "sessions_open": memory["sessions"]["count"],
            "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "rss_max_sampled_mb": round(max(samples), 1), "rss_peak_mb": round(peak, 1),
            "rss_growth_over_bound": round((max(samples) - before) / bound_mb, 2),
            "rss_after_each_volume_mb": [round(v) for v in samples]}


def write_thin_slice_study(folder: Path, files: int) -> int:
    """``files`` 512x512 int16 CT slices of one series (about 512 KiB each) in ``folder``; returns their bytes."""
    from pydicom.uid import generate_uid

    from medfm.io.synthetic import phantom, write_dicom_series

    slab, spacing = phantom((512, 512, 20)), 0.625
    uids = {key: generate_uid() for key in ("study_uid", "series_uid", "frame_of_reference_uid")}
    for first in range(0, files, slab.shape[2]):
        part = slab[:, :, :min(slab.shape[2], files - first)]
        write_dicom_series(part, folder, spacing=(0.7, 0.7, spacing), origin=(-180.0, -180.0, -900.0 + first * spacing),
                           seed=first, **uids)
    return sum(path.stat().st_size for path in folder.iterdir())


def _stream_chunks(paths: list[Path], chunk_bytes: int):
    """The files' bytes one after another, in chunks of ``chunk_bytes`` (as the workbench slices its File objects)."""
    buffer = bytearray()
    for path in paths:
        buffer += path.read_bytes()
        while len(buffer) >= chunk_bytes:
            yield bytes(buffer[:chunk_bytes])
            del buffer[:chunk_bytes]
    if buffer:
        yield bytes(buffer)


def chunked_upload(tmp: Path, files: int) -> dict[str, float]:
    """A thin-slice study of ``files`` DICOM slices through the chunked upload API of a fresh server, then its ingest."""
    study = tmp / "study"  # outside the server's data folder: it arrives by upload
    study.mkdir()
    total = write_thin_slice_study(study, files)
    paths = sorted(study.iterdir())
    peer_ms = _timed(lambda: [(tmp / "copy").write_bytes(chunk) for chunk in _stream_chunks(paths, 8 * 2**20)])[0]
    (tmp / "copy").unlink()
    with start_server(tmp / "upload") as server:
        pid = server.process.pid
        with httpx.Client(base_url=server.url, timeout=600, headers=server.headers) as client:
            rss_before = rss_mb(pid)
            started = time.perf_counter()
            begun = client.post("api/uploads/chunked", json={"files": [{"name": p.name, "size": p.stat().st_size} for p in paths]})
            upload, chunk_bytes = begun.raise_for_status().json()["upload"], begun.json()["chunk_bytes"]
            offset, requests = 0, 0
            for chunk in _stream_chunks(paths, chunk_bytes):
                offset = client.put(f"api/uploads/chunked/{upload}", params={"offset": offset}, content=chunk).raise_for_status().json()["received"]
                requests += 1
            job = client.post(f"api/uploads/chunked/{upload}/finish").raise_for_status().json()["job"]
            upload_s = time.perf_counter() - started
            rss_peak = peak_rss_mb(pid)  # a fresh server: its high-water mark is its peak while the study arrived
            status = _wait_for_job(client, job)
            ingest_s = time.perf_counter() - started - upload_s
            images = client.get("api/images").json()["images"]
    shutil.rmtree(study)
    return {"files": files, "bytes": total, "mb": round(total / 1e6, 1), "chunk_bytes": chunk_bytes, "chunk_requests": requests,
            "upload_wall_s": round(upload_s, 2), "upload_mb_per_s": round(total / 1e6 / upload_s, 1),
            "peer_file_copy_mb_per_s": round(total / 1e6 / (peer_ms / 1000), 1),
            "upload_over_file_copy_time": round(upload_s * 1000 / peer_ms, 2),
            "server_rss_before_mb": round(rss_before, 1), "server_rss_peak_during_upload_mb": round(rss_peak, 1),
            "ingest_state": status["state"], "ingest_wall_s": round(ingest_s, 2),
            "images_after_ingest": len(images), "slices_of_the_image": images[0]["shape"][2] if len(images) == 1 else None}


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
    parser.add_argument("--volume-slices", type=int, default=300, help="slices of each 512x512 volume opened for the memory figure")
    parser.add_argument("--image-cache-mb", type=int, default=512)
    parser.add_argument("--session-mb", type=int, default=512)
    parser.add_argument("--upload-files", type=int, default=3000, help="DICOM slices of the chunked upload (0: skip)")
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
            workbench["memory"] = memory_after_volumes(data_dir, args.volumes, args.volume_slices, args.image_cache_mb, args.session_mb)
        if args.upload_files:
            workbench["chunked_upload"] = chunked_upload(data_dir, args.upload_files)
    ratios = {f"{key}_server_over_library": round(served[key] / library[key], 2)
              for key in ("open_ms", "slice_ms", "click_new_plane_ms", "click_again_ms") if key in served}
    print(json.dumps({
        "benchmark": "serve_interactive", "cpu": platform.machine(), "cpu_count": os.cpu_count(),
        "image": f"CT 512x512x{args.slices} int16 DICOM", "server": served, "library": library, **ratios,
        "workbench": workbench,
    }, indent=2))


if __name__ == "__main__":
    main()
