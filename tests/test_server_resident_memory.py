"""A real ``medfm serve`` process keeps its resident memory within its configured bounds while
volume after volume is opened (thumbnail, segmentation session, a slice), as in the workbench.

The image cache and the sessions count only the arrays they hold; this checks what the
operating system sees. Linux only (it reads ``/proc``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from liveserver import start_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's resident memory from /proc")

CACHE_MB, SESSION_MB = 48, 64
#: 512x512x40 int16: 20 MiB in memory, a 10 MiB label map per session.
SHAPE = (512, 512, 40)


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_in_workbench(client: httpx.Client, image_id: int, slices: int) -> None:
    assert client.get(f"/api/images/{image_id}/thumbnail.png").status_code == 200
    assert client.post("/api/sessions", json={"image_id": image_id}).status_code == 200
    assert client.get(f"/api/images/{image_id}/raw", params={"index": slices // 2}).status_code == 200


def test_resident_memory_stays_within_the_image_cache_and_session_bounds(tmp_path):
    import nibabel as nib

    from medfm.catalog import ingest
    from medfm.io.synthetic import phantom

    folder = tmp_path / "volumes"
    folder.mkdir()
    slab = phantom((SHAPE[0], SHAPE[1], 10))
    for n in range(7):
        volume = np.tile(slab, (1, 1, SHAPE[2] // 10)) + np.int16(n)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"volume_{n}.nii.gz"))
    # catalogued before the server starts: an ingest through the server would index them for search,
    # loading the encoder while memory is measured
    ingest([folder], f"sqlite:///{tmp_path / 'catalog.db'}", progress=False)
    with start_server(tmp_path, extra_args=["--image-cache-mb", str(CACHE_MB), "--session-mb", str(SESSION_MB)]) as server:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as client:
            first, *others = [image["id"] for image in client.get("/api/images").json()["images"]]
            open_in_workbench(client, first, SHAPE[2])  # the code each request needs is loaded once, not counted
            baseline = resident_mb(server.process.pid)
            for image_id in others:
                open_in_workbench(client, image_id, SHAPE[2])
            grown = resident_mb(server.process.pid) - baseline
            memory = client.get("/api/health").json()["memory"]
    assert memory["image_cache"]["count"] == 2 and memory["sessions"]["count"] == 2  # the bounds evicted the others
    assert grown <= CACHE_MB + SESSION_MB, f"resident memory grew {grown:.0f} MiB opening {len(others)} volumes of 20 MiB"
