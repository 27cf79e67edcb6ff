"""A real Orthanc PACS for tests: started on free loopback ports, stopped by pid.

``orthanc`` (session-scoped fixture) yields an :class:`Orthanc` with its DICOMweb base URL
and REST base URL. It skips when the Orthanc binary or its DICOMweb plugin is missing
(Debian packages ``orthanc`` and ``orthanc-dicomweb``; ``scripts/setup.sh --test``
installs them). Tests share one server, so each uploads its own study with fresh UIDs
(:func:`upload_study`: a synthetic CT of a bright cylinder, with a patient name to hide).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pydicom
import pytest

from medfm.io.synthetic import write_dicom_series

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
STARTUP_S = 20.0

PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PACS-TEST-7"
SHAPE, CENTRE, RADIUS = (64, 56, 6), (30, 24), 12  # (I, J, K); the cylinder's axis (i, j) in the written grid


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: ``dicomweb_url`` for medfm, ``rest_url`` for test setup."""

    dicomweb_url: str
    rest_url: str
    pid: int

    def upload(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """Store DICOM files through Orthanc's own REST ``/instances``; returns their Orthanc ids."""
        ids = []
        with httpx.Client(base_url=self.rest_url, timeout=30) as client:
            for path in paths:
                response = client.post("/instances", content=Path(path).read_bytes())
                response.raise_for_status()
                ids.append(response.json()["ID"])
        return ids


def cylinder_volume(seed: int = 0) -> np.ndarray:
    """A bright cylinder (900) along k on a dark noisy background (300): ``SHAPE`` int16."""
    i, j, _ = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    inside = (i - CENTRE[0]) ** 2 + (j - CENTRE[1]) ** 2 <= RADIUS**2
    noise = np.random.default_rng(seed).normal(0, 30, SHAPE)
    return (np.where(inside, 900, 300) + noise).round().astype(np.int16)


def upload_study(server: Orthanc, folder: Path) -> SimpleNamespace:
    """A new synthetic CT study written to ``folder`` and stored on ``server``: its UIDs, folder and files."""
    files = write_dicom_series(cylinder_volume(), folder, patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    server.upload(files)
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    return SimpleNamespace(study_uid=header.StudyInstanceUID, series_uid=header.SeriesInstanceUID,
                           folder=folder, files=files)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(folder: Path, http_port: int, dicom_port: int) -> dict:
    return {
        "Name": "medfm-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "MEDFMTEST",
        # Loopback only: with remote access off, Orthanc refuses any client not on 127.0.0.1,
        # which is what makes running without authentication safe here.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "SaveJobs": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        # Host carries the port so that the URLs the plugin writes into responses point back here.
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{http_port}", "Ssl": False},
    }


def start_orthanc(folder: Path) -> tuple[subprocess.Popen, Orthanc]:
    """Start Orthanc with its storage, index and log in ``folder``; wait until ``/system`` answers."""
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(_config(folder, http_port, dicom_port), indent=2))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115  (closed with the process)
    process = subprocess.Popen([str(ORTHANC), str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    log.close()
    rest = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{rest}/system", timeout=1).status_code == 200:
                return process, Orthanc(f"{rest}/dicom-web", rest, process.pid)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_orthanc(process)
    raise RuntimeError(f"Orthanc did not start within {STARTUP_S:.0f} s; its log:\n{(folder / 'orthanc.log').read_text()[-2000:]}")


def stop_orthanc(process: subprocess.Popen) -> None:
    """Stop the Orthanc we started, by its pid.

    Killed outright: its storage is a throwaway folder, and an orderly shutdown takes
    over 3 s (Orthanc joins its housekeeping threads), paid once per test module.
    """
    if process.poll() is None:
        process.kill()
    process.wait()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc with the DICOMweb plugin, on free loopback ports, for the whole test session."""
    for path, package in ((ORTHANC, "orthanc"), (DICOMWEB_PLUGIN, "orthanc-dicomweb")):
        if not path.exists():
            pytest.skip(f"{path} is missing: install the Debian package {package} (scripts/setup.sh --test)")
    process, server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        stop_orthanc(process)
