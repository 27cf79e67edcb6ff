"""The workbench against attacks and large studies, in Chromium: a page on another origin cannot
change anything on the server; the workbench uploads a study of more files than one request
may carry, in chunks."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from browsertools import TIMEOUT_MS, browser, http, needs_chromium, wait_job, workbench_page  # noqa: F401  (browser: the fixture)

from medfm.io.synthetic import phantom, write_dicom_series
from tests.liveserver import free_port, start_server

pytestmark = needs_chromium


class BlankPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title><p>nothing here"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def other_origin():
    """``http://localhost:PORT``: another origin (and site) than the workbench's 127.0.0.1."""
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), BlankPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{port}"
    server.shutdown()
    server.server_close()


#: What a page elsewhere can make the browser send without a CORS preflight: a multipart upload
#: (no-cors fetch), a JSON body sent as text/plain, and a plain form post; and, with a preflight,
#: a request that carries the workbench's own header.
ATTACKS = """async (target) => {
    const png = Uint8Array.from(atob('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgAB4iG8MwAAAABJRU5ErkJggg=='), c => c.charCodeAt(0));
    const form = new FormData();
    form.append('files', new Blob([png], { type: 'image/png' }), 'evil.png');
    // the answers are opaque or blocked (Cross-Origin-Resource-Policy): what counts is what the server did
    const attempt = (what, init) => fetch(target + what, init).catch(() => null);
    await attempt('/api/uploads', { method: 'POST', mode: 'no-cors', body: form, credentials: 'include' });
    await attempt('/api/ingest', { method: 'POST', mode: 'no-cors', body: JSON.stringify({ path: 'seed' }),
                                   headers: { 'Content-Type': 'text/plain' }, credentials: 'include' });
    await attempt('/api/uploads/chunked', { method: 'POST', headers: { 'X-Medfm-Client': 'workbench', 'Content-Type': 'application/json' },
                                            body: JSON.stringify({ files: [{ name: 'a.png', size: 1 }] }) });
    const frame = document.createElement('iframe');
    frame.name = 'sink';
    document.body.appendChild(frame);
    const post = document.createElement('form');
    post.method = 'POST'; post.action = target + '/api/index/build'; post.target = 'sink';
    document.body.appendChild(post);
    const loaded = new Promise((resolve) => { frame.onload = resolve; setTimeout(resolve, 5000); });
    post.submit();
    await loaded;
}"""


def audit(data_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (data_dir / "logs" / "audit.log").read_text().splitlines()]


def test_a_page_on_another_origin_cannot_change_anything(browser, other_origin, tmp_path):
    from PIL import Image as PILImage

    (tmp_path / "data" / "seed").mkdir(parents=True)
    PILImage.new("L", (8, 8), 90).save(tmp_path / "data" / "seed" / "seed.png")
    with start_server(tmp_path / "data") as live:
        base = live.url.rstrip("/")
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(other_origin + "/")
        page.evaluate(ATTACKS, base)
        context.close()
        assert http(base, "GET", "/api/images")["images"] == []
        assert not (live.data_dir / "uploads").exists() or not any((live.data_dir / "uploads").iterdir())
        # the browser sent them (the audit log saw each): the server refused them
        refused = {(line["method"], line["path"]): line["status"] for line in audit(live.data_dir) if line["method"] == "POST"}
        assert refused == {("POST", "/api/uploads"): 403, ("POST", "/api/ingest"): 403, ("POST", "/api/index/build"): 403}
        # the workbench itself, on its own origin, still changes things
        with workbench_page(browser, base) as own:
            result = own.evaluate("""async () => {
                const { api } = await import('/js/api.js');
                return api('/ingest', { method: 'POST', body: { path: 'seed' } }); }""")
        assert wait_job(base, result)["image_ids"]


def test_the_workbench_uploads_a_study_of_many_files_in_chunks(browser, tmp_path):
    """1,100 DICOM files (one request used to take at most 1,000) through a 1 MiB request limit."""
    study = tmp_path / "study"
    files = write_dicom_series(phantom((32, 32, 1100)), study / "ct", patient_name="Doe^Jane")
    total = sum(path.stat().st_size for path in files)
    assert total > 3 * 2**20
    with start_server(tmp_path / "data", extra_args=["--max-upload-mb", "1"]) as live:
        base = live.url.rstrip("/")
        with workbench_page(browser, base) as page:
            chunks: list[str] = []
            page.on("request", lambda r: chunks.append(r.url) if r.method == "PUT" else None)
            progress: list[str] = []
            page.expose_function("noteProgress", lambda note: progress.append(note))
            page.evaluate("""() => new MutationObserver(() => window.noteProgress(
                document.querySelector('[data-testid=upload-progress] .note').textContent)).observe(
                document.querySelector('[data-testid=upload-progress] .note'), { childList: true, characterData: true, subtree: true })""")
            page.set_input_files("[data-testid=folder-input]", str(study))
            page.wait_for_function("document.querySelectorAll('[data-testid=catalog-item]').length === 1", timeout=300_000)
        assert len(chunks) == -(-total // 2**20)  # the study in 1 MiB chunks, each sent once
        percents = sorted({int(note.split("… ")[1].rstrip(" %")) for note in progress if note.startswith("uploading") and "%" in note})
        assert len(percents) >= 3 and percents[-1] == 100, progress
        (image,) = httpx.get(base + "/api/images").json()["images"]
        assert image["num_slices"] == 1100
