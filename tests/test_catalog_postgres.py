"""The same catalog checks as test_catalog.py, through a real PostgreSQL server.

The server (Debian's ``postgresql`` package) runs from a temporary folder on 127.0.0.1
for this module only, as the ``postgres`` user when the tests run as root (initdb and
postgres refuse root). Without the binaries the tests skip with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clitools import run_cli
from test_catalog import (
    PATIENT_NAME,
    check_first_ingest,
    check_queries,
    check_reingest_adds_nothing,
    check_resume_after_interrupt,
    make_tree,
)
from test_catalog_datasets import manifest_dataset

from medfm.catalog import ingest, open_catalog

BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A throwaway PostgreSQL server; yields the URL of its ``postgres`` database."""
    if not BIN_DIRS or not os.path.exists(os.path.join(BIN_DIRS[-1], "initdb")):
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (Debian package postgresql)")
    bin_dir = BIN_DIRS[-1]
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        pytest.skip("running as root and runuser is missing: cannot start PostgreSQL as the postgres user")
    folder = Path(tempfile.mkdtemp(prefix="medfm-pg-"))
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data, log, port = folder / "data", folder / "server.log", _free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*prefix, os.path.join(bin_dir, tool), *args], check=True, capture_output=True, timeout=120)

    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')[-500:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def url(server: str) -> Iterator[str]:
    """A fresh database on the server for each test."""
    import psycopg

    name = f"medfm_{os.urandom(4).hex()}"
    base = server.rsplit("/", 1)[0]
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(autouse=True)
def data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFM_DATA_DIR", str(tmp_path / "medfm-data"))
    monkeypatch.delenv("MEDFM_CATALOG", raising=False)


def test_ingest_reingest_and_query_through_postgresql(url: str, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    check_first_ingest(url, tree)
    check_reingest_adds_nothing(url, tree)
    check_queries(url)
    with open_catalog(url) as catalog:
        assert catalog.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert not (tmp_path / "medfm-data").exists()  # nothing went to the default SQLite catalog


def test_interrupted_ingest_resumes_through_postgresql(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_resume_after_interrupt(url, make_tree(tmp_path / "tree"), monkeypatch)


def test_cli_with_postgresql_url(url: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = make_tree(tmp_path / "tree")
    code, out, err = run_cli(["ingest", str(tree), "--catalog", url, "--no-progress"], capsys)
    assert code == 1 and "4 images added" in out and "corrupt.png" in err
    code, out, _ = run_cli(["catalog", "query", "--catalog", url, "--modality", "CT"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 1 and PATIENT_NAME not in out


def test_labels_and_tags_through_postgresql(url: str, tmp_path: Path) -> None:
    root = manifest_dataset(tmp_path / "derm")
    report = ingest(root, url, progress=False)
    assert (report.added, report.labelled, report.label_files) == (4, 4, 6)
    with open_catalog(url) as catalog:
        assert all(record.mask for record in catalog.query())
        assert len(catalog.query(where={"diagnosis": "MELANOMA"}, has_mask=True)) == 2
