"""Driving the workbench in Debian's Chromium with Playwright, for the end-to-end tests.

Never a downloaded browser: Playwright launches /usr/bin/chromium with the flags that keep
it off the network. :func:`workbench_page` opens the workbench and, when the test is done,
asserts that the console stayed free of errors and that no request left the server's origin.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

TIMEOUT_MS = 20_000

sync_api = pytest.importorskip("playwright.sync_api", reason="the e2e tests need the playwright package")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"the e2e tests need Chromium at {CHROMIUM}")


def http(base: str, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    from medfm.server.security import CLIENT_HEADER

    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", CLIENT_HEADER: "test"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_job(base: str, answer: dict, timeout: float = 120) -> dict:
    if "job" not in answer:
        return answer
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http(base, "GET", f"/api/jobs/{answer['job']}")
        if job["state"] == "done":
            return job["result"] or {}
        assert job["state"] != "failed", job
        time.sleep(0.2)
    raise TimeoutError(f"job {answer['job']} did not finish")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where tests save their screenshots: $MEDFM_SCREENSHOTS, else a temporary folder."""
    folder = Path(os.environ.get("MEDFM_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def workbench_page(browser, base: str) -> Iterator:
    """A fresh page on the workbench at ``base``; afterwards: no console errors, no request off the origin."""
    assert base.startswith("http://127.0.0.1:")
    # Playwright's wait_for_function evaluates its string with eval, which the server's content
    # policy forbids; test_the_page_runs_under_its_content_policy runs the page under the policy
    context = browser.new_context(viewport={"width": 1400, "height": 860}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    foreign: list[str] = []
    page.expected_errors = []  # substrings of console errors a test provokes on purpose
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(base + "/") or r.url.startswith("data:") else foreign.append(r.url))
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()
    assert not foreign, f"requests left the server's origin: {foreign}"
    errors = [e for e in errors if not any(expected in e for expected in page.expected_errors)]
    assert not errors, f"console errors: {errors}"


def idle(page) -> None:
    page.wait_for_function("document.body.dataset.busy === '0'")


def open_image(page, description: str) -> None:
    item = page.locator("[data-testid=catalog-item]", has_text=description).first
    item.click()
    image_id = item.get_attribute("data-image-id")
    page.wait_for_function(f"document.body.dataset.imageId === '{image_id}' && document.body.dataset.session")
    page.wait_for_function("document.querySelector('[data-testid=viewport]').dataset.loadedPlane !== undefined")
    idle(page)


def wait_plane(page, k: int, t: int) -> None:
    """Waits until the viewer shows plane (k, t): its picture and the session's mask of it."""
    page.wait_for_function(f"""() => {{
        const viewport = document.querySelector('[data-testid=viewport]').dataset;
        return (viewport.loadedPlane || '').startsWith('{k},{t},') && viewport.maskPlane === '{k},{t}'; }}""")
    idle(page)


def mask_pixels(page) -> int:
    return int(page.get_attribute("[data-testid=viewport]", "data-mask-pixels"))


def overlay_pixels(page) -> int:
    """Painted pixels of the mask overlay canvas (read back from the canvas itself)."""
    return page.evaluate("""() => {
        const c = document.querySelector('[data-testid=overlay-canvas]');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")


def image_digest(page) -> list[int]:
    return page.evaluate("""() => {
        const c = document.querySelector('[data-testid=image-canvas]');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const sums = [0, 0]; for (let i = 0; i < d.length; i += 4) { sums[0] += d[i]; sums[1] += d[i] > 250; } return sums; }""")


def bright_centre(page) -> tuple[float, float, float]:
    """Display pixel (x, y) at the centroid of the brightest pixels of the shown plane, and their count."""
    return page.evaluate("""() => {
        const c = document.querySelector('[data-testid=image-canvas]');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let max = 0; for (let i = 0; i < d.length; i += 4) max = Math.max(max, d[i]);
        let sx = 0, sy = 0, n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] >= max * 0.8) { const p = i / 4; sx += p % c.width; sy += Math.floor(p / c.width); n++; }
        return [sx / n, sy / n, n]; }""")


def screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the centre of display pixel (x, y), wherever the viewer put, zoomed and panned the plane.

    Measured on the mask canvas as the browser lays it out (its transformed, unclipped bounding box),
    not computed from the viewer's own arithmetic: a click there tests that the tools' mapping of
    the mouse agrees with the picture on screen. :func:`viewer_screen` is the viewer's own view.
    """
    box = page.locator("[data-testid=overlay-canvas]").bounding_box()
    width, height = page.evaluate("() => { const c = document.querySelector('[data-testid=overlay-canvas]'); return [c.width, c.height]; }")
    return box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height


def viewer_screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the centre of display pixel (x, y) by the transform the viewer exposes (data-offset, -scale, -aspect)."""
    return page.evaluate("""([x, y]) => {
        const v = document.querySelector('[data-testid=viewport]');
        const [ox, oy] = v.dataset.offset.split(',').map(Number);
        const scale = Number(v.dataset.scale);
        const r = v.getBoundingClientRect();
        return [r.left + v.clientLeft + ox + (x + 0.5) * scale, r.top + v.clientTop + oy + (y + 0.5) * scale * Number(v.dataset.aspect)]; }""", [x, y])


def zoom(page) -> float:
    """The viewer's zoom relative to fit (data-zoom)."""
    return float(page.get_attribute("[data-testid=viewport]", "data-zoom"))


def click_display(page, x: float, y: float, modifiers: list[str] | None = None) -> None:
    for key in modifiers or []:
        page.keyboard.down(key)
    page.mouse.click(*screen(page, x, y))
    for key in modifiers or []:
        page.keyboard.up(key)


def edit(page, action) -> int:
    """Does `action` (a prompt, undo or redo), waits for the session's next revision to be shown; returns the mask's pixels."""
    revision = page.get_attribute("[data-testid=viewport]", "data-revision")
    action()
    page.wait_for_function(f"document.querySelector('[data-testid=viewport]').dataset.revision !== '{revision}'")
    idle(page)
    return mask_pixels(page)
