"""A real ``medfm serve`` process for end-to-end tests (API load tests, Playwright).

``start_server(tmp_dir)`` runs ``medfm serve`` (this Python) on a free loopback port with
``MEDFM_DATA_DIR`` set to ``tmp_dir`` (its SQLite catalog inside), waits until
``/api/health`` answers, and stops the process when the block ends::

    with start_server(tmp_path, demo=True) as server:
        httpx.get(server.url + "api/images", headers=server.headers)

The ``live_server`` fixture gives one for a test.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

#: Seconds to wait for the server to answer (the demo preload builds example files first).
STARTUP_TIMEOUT = 120.0


@dataclass
class LiveServer:
    """``url`` ends with ``/`` (``http://127.0.0.1:PORT/``); ``token`` is set when one is required."""

    url: str
    data_dir: Path
    token: str | None
    process: subprocess.Popen
    log_path: Path

    @property
    def headers(self) -> dict[str, str]:
        """Headers of a script's request to this server: the token when one is needed, and the
        header that state-changing requests need."""
        from medfm.server.security import CLIENT_HEADER

        return {CLIENT_HEADER: "test", **({"Authorization": f"Bearer {self.token}"} if self.token else {})}

    def log(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextmanager
def start_server(tmp_dir: str | os.PathLike, *, demo: bool = False, host: str = "127.0.0.1",
                 extra_args: Sequence[str] = (), scheme: str = "http", verify: ssl.SSLContext | bool = True) -> Iterator[LiveServer]:
    """Run ``medfm serve`` with its data in ``tmp_dir`` until the block ends (``scheme`` https
    when ``extra_args`` give it a certificate, which ``verify`` names for the health check)."""
    data_dir = Path(tmp_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    token = "test-token-" + os.urandom(8).hex() if host not in ("127.0.0.1", "::1", "localhost") else None
    env = {**os.environ, "MEDFM_DATA_DIR": str(data_dir), "MEDFM_CATALOG": f"sqlite:///{data_dir / 'catalog.db'}"}
    env.pop("MEDFM_TOKEN", None)
    args = [sys.executable, "-c", "from medfm.cli import main; main()", "serve", "--host", host, "--port", str(port), *extra_args]
    if demo:
        args.append("--demo")
    if token:
        args += ["--token", token]
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    shown = f"[{host}]" if ":" in host else host
    server = LiveServer(f"{scheme}://{shown}:{port}/", data_dir, token, process, log_path)
    try:
        _wait_until_healthy(server, verify)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(server: LiveServer, verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"medfm serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "api/health", headers=server.headers, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"medfm serve did not answer within {STARTUP_TIMEOUT:.0f} s:\n{server.log()}")


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server on an empty data directory."""
    with start_server(tmp_path / "data") as server:
        yield server
