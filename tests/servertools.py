"""Small catalogued images and a TestClient app over them, for the server's tests."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from medfm.catalog import ingest, open_catalog
from medfm.io import Image, save
from medfm.io.synthetic import phantom, write_dicom_series
from medfm.server.app import create_app
from medfm.server.security import CLIENT_HEADER
from medfm.server.settings import ServerSettings

#: The patient name of the DICOM series: it must never appear in a response.
PATIENT_NAME = "Doe^Jane"


def disc_volume(size: int = 48, slices: int = 6) -> np.ndarray:
    """(I, J, K) float32: a bright disc (radius ~size/4) at the centre of every slice, darker off-centre."""
    grid = np.mgrid[:size, :size]
    disc = ((grid[0] - size / 2) ** 2 + (grid[1] - size / 2) ** 2) < (size / 4) ** 2
    volume = np.where(disc[..., None], 200.0, 10.0) * np.ones(slices)
    return volume.astype(np.float32)


def make_data(root: Path) -> dict[str, Any]:
    """A data directory with a catalog of: a NIfTI disc volume, a PNG photo, a DICOM phantom series."""
    images = root / "images"
    images.mkdir(parents=True)
    save(Image(disc_volume(), np.diag([1.0, 1.0, 2.0, 1.0])), images / "disc.nii.gz")
    photo = np.zeros((40, 30, 3), np.uint8)
    photo[10:20, 5:15] = (255, 0, 0)
    from PIL import Image as PILImage

    PILImage.fromarray(photo).save(images / "photo.png")
    write_dicom_series(phantom((32, 32, 4)), images / "ct", patient_name=PATIENT_NAME, patient_id="MRN-77123")
    url = f"sqlite:///{root / 'catalog.db'}"
    ingest([images], url, progress=False)
    with open_catalog(url) as catalog:
        ids = {Path(r.source_path).name: r.id for r in catalog.query()}
    return {"url": url, "disc": ids["disc.nii.gz"], "photo": ids["photo.png"], "ct": ids["ct"]}


#: What a script sends with every request: the header that state-changing requests need.
CLIENT_HEADERS = {CLIENT_HEADER: "test"}


def make_client(root: Path, url: str, **settings: Any) -> TestClient:
    """A client of a server over ``root``; it sends :data:`CLIENT_HEADERS`, as scripts must."""
    app = create_app(ServerSettings(data_dir=root, catalog_url=url, **settings))
    return TestClient(app, base_url="http://127.0.0.1", headers=CLIENT_HEADERS)


def mask_of(plane_state: dict[str, Any]) -> np.ndarray:
    """The (rows, columns) label values of a PlaneState's PNG mask, display orientation."""
    from PIL import Image as PILImage

    data = base64.b64decode(plane_state["mask"].split(",", 1)[1])
    return np.asarray(PILImage.open(io.BytesIO(data)))


def png_data_url(values: np.ndarray) -> str:
    """A (rows, columns) plane of label values as the PNG data URL that PUT /api/sessions/{id}/planes takes."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(values.astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def wait_for_job(client: TestClient, job: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise TimeoutError(f"job {job} still running")
