"""``medfm serve``: the one line it prints, its token, its option errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from clitools import run_cli
from liveserver import free_port, start_server


def test_serve_prints_one_line_with_the_url_and_answers(tmp_path):
    with start_server(tmp_path / "data") as server:
        assert server.log().splitlines() == [f"medfm: workbench at {server.url}"]
        assert httpx.get(server.url + "api/health").json()["status"] == "ok"
        assert httpx.get(server.url).status_code == 200


def test_serve_off_loopback_generates_a_token_and_puts_it_in_the_url(tmp_path):
    port = free_port("0.0.0.0")
    env = {**os.environ, "MEDFM_DATA_DIR": str(tmp_path)}
    env.pop("MEDFM_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-c", "from medfm.cli import main; main()", "serve", "--host", "0.0.0.0",
                                "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline().strip()
        # a host clients can reach, not the wildcard address
        match = re.fullmatch(rf"medfm: workbench at http://([^/:]+):{port}/\?token=([A-Za-z0-9_-]{{20,}})", line)
        assert match and match.group(1) != "0.0.0.0", line
        url = f"http://127.0.0.1:{port}/api/health"
        for _ in range(100):
            try:
                assert httpx.get(url, timeout=2).status_code == 401
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(url, headers={"Authorization": f"Bearer {match.group(2)}"}).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "70000"], "medfm: error: --port must be from 1 to 65535; got 70000"),
    (["--max-upload-mb", "0"], "medfm: error: --max-upload-mb must be at least 1; got 0"),
    (["--session-mb", "0"], "medfm: error: --session-mb must be at least 1; got 0"),
    (["--host", "0.0.0.0", "--token", "s3cret"], "medfm: error: the token is too weak (under 128 bits): use at least 22 "
     "random letters and digits, e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'"),
    (["--certfile", "cert.pem"], "medfm: error: TLS needs both --certfile and --keyfile"),
])
def test_bad_options_are_one_line_errors(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_DATA_DIR", str(tmp_path))
    code, out, err = run_cli(["serve", *args], capsys)
    assert code == 2 and err.strip() == message and out == ""


def test_a_catalog_it_cannot_open_is_a_one_line_error_at_start(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_DATA_DIR", str(tmp_path / "data"))
    text = tmp_path / "text.png"
    text.write_text("hello\n")
    code, out, err = run_cli(["serve", "--catalog", str(text), "--port", str(free_port())], capsys)
    assert (code, out) == (2, "")
    assert err == f"medfm: error: cannot open catalog {text}: not an SQLite database (file is not a database)\n"
    assert text.read_text() == "hello\n" and list(tmp_path.iterdir()) == [text]


def test_a_busy_port_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_DATA_DIR", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, out, err = run_cli(["serve", "--port", str(busy.getsockname()[1])], capsys)
    assert code == 2 and re.fullmatch(r"medfm: error: cannot listen on 127\.0\.0\.1:\d+: .+\n", err)


def test_serve_demo_catalogues_the_examples_and_indexes_them_in_the_background(tmp_path):
    with start_server(tmp_path / "data", demo=True) as server:
        health = httpx.get(server.url + "api/health").json()
        assert health["catalog_images"] >= 10
        for _ in range(300):
            if httpx.get(server.url + "api/health").json()["index_size"] == health["catalog_images"]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the demo catalog was not indexed")
        # the first text query loads the text tower (transformers), which can take tens of seconds on a busy machine
        hits = httpx.get(server.url + "api/search", params={"text": "CT of the head", "k": 3}, timeout=120).json()["hits"]
        assert len(hits) == 3


def test_serve_with_tls_answers_https_only_and_prints_an_https_url(tmp_path):
    """--certfile/--keyfile: a self-signed certificate made here with openssl; the client trusts exactly it."""
    import shutil
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("the TLS test makes its certificate with the openssl program, which is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    trusted = ssl.create_default_context(cafile=str(cert))
    with start_server(tmp_path / "data", scheme="https", extra_args=["--certfile", str(cert), "--keyfile", str(key)],
                      verify=trusted) as server:
        assert server.url.startswith("https://") and server.log().splitlines() == [f"medfm: workbench at {server.url}"]
        assert httpx.get(server.url + "api/health", verify=trusted).json()["status"] == "ok"
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url.replace("https://", "http://") + "api/health")
