"""Workbench v2 in Chromium: window/level in the page, MPR with a linked crosshair, brush and
eraser with locks, measurements, video playback, and panel answers that arrive too late.

One server holds the sphere phantom of test_workbench_e2e, a DICOM CT series whose header
names a window, and a video whose first frames are black.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browsertools import (
    browser, click_display, edit, http, idle, image_digest, mask_pixels, needs_chromium,  # noqa: F401  (browser: the fixture)
    open_image, overlay_pixels, screen, screenshots, wait_job, wait_plane, workbench_page,  # noqa: F401
)
from test_workbench_e2e import SHAPE, SPHERE_CENTRE, write_seed

pytestmark = needs_chromium

CT_NAME = "windowed CT phantom"
CT_SHAPE = (64, 64, 20)
HEADER_WINDOW = (-600, 1500)
BLANK_FRAMES = 3


def write_windowed_ct(folder: Path) -> None:
    import pydicom

    from medfm.io.synthetic import phantom, write_dicom_series

    for path in write_dicom_series(phantom(CT_SHAPE), folder, series_description=CT_NAME):
        ds = pydicom.dcmread(path)
        ds.WindowCenter, ds.WindowWidth = [str(HEADER_WINDOW[0]), "40"], [str(HEADER_WINDOW[1]), "400"]
        ds.save_as(path)


def write_video(path: Path) -> None:
    from medfm.io import Image, save

    frames = np.zeros((48, 64, 12, 3), np.uint8)  # (rows, columns, frames, RGB) as the demo's cine
    yy, xx = np.mgrid[:48, :64]
    for t in range(BLANK_FRAMES, 12):
        frames[(xx - 10 - 3 * t) ** 2 + (yy - 24) ** 2 < 64, t] = 220
    save(Image(frames.transpose(1, 0, 2, 3)[:, :, None], metadata={"fps": 8.0}), path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.liveserver import start_server

    data_dir = tmp_path_factory.mktemp("workbench-v2")
    write_seed(data_dir / "seed")
    write_windowed_ct(data_dir / "seed" / "ct")
    write_video(data_dir / "seed" / "moving_disc.mp4")
    with start_server(data_dir) as live:
        base = live.url.rstrip("/")
        wait_job(base, http(base, "POST", "/api/ingest", {"path": "seed"}))
        assert len(http(base, "GET", "/api/images")["images"]) == 4
        yield base


@pytest.fixture
def page(browser, server):
    with workbench_page(browser, server) as page:
        yield page


def raw_plane(base: str, image_id: str, axis: str, index: int) -> np.ndarray:
    with urllib.request.urlopen(f"{base}/api/images/{image_id}/raw?axis={axis}&index={index}", timeout=60) as response:
        height, width = (int(v) for v in response.headers["X-Medfm-Shape"].split(","))
        dtype = {"int16": "<i2", "uint16": "<u2", "float32": "<f4"}[response.headers["X-Medfm-Dtype"]]
        return np.frombuffer(response.read(), dtype).reshape(height, width)


def dataset(page, testid: str) -> dict:
    return page.evaluate(f"() => ({{...document.querySelector('[data-testid={testid}]').dataset}})")


# ---- window/level ---------------------------------------------------------------------------------

def test_a_ct_opens_at_its_header_window_and_windows_in_the_page(page, server):
    open_image(page, CT_NAME)
    assert (page.input_value("[data-testid=wl-center]"), page.input_value("[data-testid=wl-width]")) == ("-600", "1500")
    before = image_digest(page)
    planes: list[str] = []
    page.on("request", lambda r: planes.append(r.url) if "/raw" in r.url or "slice.png" in r.url else None)
    page.select_option("[data-testid=wl-preset]", "40,400")
    page.wait_for_function("document.querySelector('[data-testid=viewport]').dataset.loadedPlane.endsWith(',40,400')")
    assert image_digest(page) != before
    box = page.locator("[data-testid=viewport]").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down(button="right")
    page.mouse.move(cx + 120, cy + 40, steps=4)
    page.mouse.up(button="right")
    page.wait_for_function("!document.querySelector('[data-testid=viewport]').dataset.loadedPlane.endsWith(',40,400')")
    assert planes == []  # every window above was applied in the page: no plane was asked for again

    # the value under the cursor is the CT number there, in HU
    k = int(page.get_attribute("[data-testid=slice-label]", "data-k"))
    values = raw_plane(server, page.evaluate("document.body.dataset.imageId"), "k", k)
    for x, y in [(32, 32), (5, 40)]:
        page.mouse.move(*screen(page, x, y))
        page.wait_for_function(f"document.querySelector('[data-testid=pixel-value]').textContent.startsWith('({x}, {y})')")
        assert float(page.get_attribute("[data-testid=pixel-value]", "data-value")) == values[y, x]
        assert page.inner_text("[data-testid=pixel-value]").endswith(" HU")


# ---- MPR ------------------------------------------------------------------------------------------

def test_mpr_views_follow_a_click_and_show_the_mask(page, screenshots):  # noqa: F811
    open_image(page, CT_NAME)
    page.click("[data-testid=layout-mpr]")
    for testid in ("view-j", "view-i"):
        page.wait_for_function(f"(document.querySelector('[data-testid={testid}]').dataset.loaded || '') !== ''")
    assert dataset(page, "view-j")["view"] == "coronal" and dataset(page, "view-i")["view"] == "sagittal"
    assert dataset(page, "viewport")["letters"] == "ALPR"  # DICOM axial: anterior up, patient's left on the right
    assert float(dataset(page, "view-j")["scaleBarMm"]) > 0 and float(dataset(page, "viewport")["scaleBarMm"]) > 0

    # a click on the coronal view at slice 5 takes the main view there and moves the sagittal crosshair
    sagittal_before = dataset(page, "view-i")["crosshair"]
    x0, y0, x1, y1 = (float(v) for v in dataset(page, "view-j")["box"].split(","))
    rows = CT_SHAPE[2]
    row = rows - 1 - 5  # superior up: the last slice is the top row
    canvas = page.locator("[data-testid=view-j] canvas").bounding_box()
    page.mouse.click(canvas["x"] + x0 + (x1 - x0) * 20.5 / CT_SHAPE[0], canvas["y"] + y0 + (y1 - y0) * (row + 0.5) / rows)
    page.wait_for_function("document.querySelector('[data-testid=slice-label]').dataset.k === '5'")
    page.wait_for_function(f"document.querySelector('[data-testid=view-i]').dataset.crosshair !== '{sagittal_before}'")
    wait_plane(page, 5, 0)

    # paint across the crosshair on the main view: the stroke shows in both other views
    cross_x, cross_y = (int(v) for v in dataset(page, "viewport")["crosshair"].split(","))
    page.click("[data-testid=tool-brush]")
    page.fill("[data-testid=brush-radius]", "2")
    edit(page, lambda: drag(page, [(cross_x - 4, cross_y), (cross_x + 4, cross_y), (cross_x, cross_y + 4)]))
    assert mask_pixels(page) > 0
    for testid in ("view-j", "view-i"):
        page.wait_for_function(f"Number(document.querySelector('[data-testid={testid}]').dataset.maskPixels || 0) > 0")
    page.screenshot(path=str(screenshots / "workbench-mpr.png"))

    page.click("[data-testid=layout-mpr]")  # back to one view
    assert page.is_hidden("[data-testid=side-views]")


def drag(page, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*screen(page, *points[0]))
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(*screen(page, x, y), steps=4)
    page.mouse.up()


def labels_shown(page) -> dict[str, int]:
    return json.loads(page.get_attribute("[data-testid=viewport]", "data-mask-labels"))


# ---- editing --------------------------------------------------------------------------------------

def test_brush_eraser_fill_lock_and_undo(page):
    open_image(page, "sphere phantom")
    page.click("[data-testid=tool-brush]")
    page.fill("[data-testid=brush-radius]", "1")
    ring = [(20 + 6 * np.cos(a), 20 + 6 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 25)]
    painted = edit(page, lambda: drag(page, ring))
    assert 30 < painted < 150
    filled = edit(page, lambda: page.click("[data-testid=fill-holes]"))
    assert filled > painted + 50  # the inside of the ring
    page.click("[data-testid=tool-eraser]")
    page.fill("[data-testid=brush-radius]", "2")
    erased = edit(page, lambda: drag(page, [(12, 20), (28, 20)]))
    assert erased < filled

    # structure 1 locked: structure 2's brush goes around it
    page.locator("[data-testid=label-item][data-value='1'] [data-testid=label-lock]").click()
    page.click("[data-testid=add-label]")
    page.click("[data-testid=tool-brush]")
    page.fill("[data-testid=brush-radius]", "3")
    edit(page, lambda: drag(page, [(14, 14), (26, 26)]))
    shown = labels_shown(page)
    assert shown["1"] == erased and shown["2"] > 0
    page.click("[data-testid=tool-eraser]")
    edit(page, lambda: drag(page, [(14, 20), (26, 20)]))
    assert labels_shown(page)["1"] == erased  # the eraser leaves it too

    # display: outlines only, a structure hidden; the label map is unchanged
    full = overlay_pixels(page)
    page.check("[data-testid=mask-outline]")
    assert 0 < overlay_pixels(page) < full
    page.uncheck("[data-testid=mask-outline]")
    page.locator("[data-testid=label-item][data-value='2'] [data-testid=label-hide]").click()
    assert overlay_pixels(page) < full and mask_pixels(page) == sum(labels_shown(page).values())

    # every edit was one step of the server's undo
    assert edit(page, lambda: page.click("[data-testid=undo]")) == sum(shown.values())
    assert edit(page, lambda: page.click("[data-testid=undo]")) == erased
    assert edit(page, lambda: page.click("[data-testid=undo]")) == filled


# ---- measurements -----------------------------------------------------------------------------------

def test_roi_statistics_and_length(page):
    open_image(page, "sphere phantom")
    page.locator("[data-testid=slice-slider]").fill(str(SPHERE_CENTRE[2]))
    wait_plane(page, SPHERE_CENTRE[2], 0)
    # the phantom's NIfTI is RAS: display flips both axes
    cx, cy = SHAPE[0] - 1 - SPHERE_CENTRE[0], SHAPE[1] - 1 - SPHERE_CENTRE[1]
    page.click("[data-testid=tool-brush]")
    page.fill("[data-testid=brush-radius]", "3")
    pixels = edit(page, lambda: drag(page, [(cx, cy), (cx + 1, cy)]))
    page.click("[data-testid=measure-roi]")
    page.wait_for_function("document.querySelector('[data-testid=measure-result]').dataset.label === '1'")
    result = dataset(page, "measure-result")
    assert 370 < float(result["mean"]) < 430  # the sphere's values, not the background's 20
    assert float(result["area"]) == pytest.approx(pixels * 1.0)
    assert float(result["volume"]) == pytest.approx(pixels * 2.0 / 1000)
    assert "mean" in page.inner_text("[data-testid=measure-result]")

    # threshold-limited paint: a stroke out across the sphere's edge keeps to the sphere's values
    page.click("[data-testid=add-label]")
    page.fill("[data-testid=wl-center]", "400")
    page.fill("[data-testid=wl-width]", "200")
    page.press("[data-testid=wl-width]", "Enter")
    page.check("[data-testid=brush-threshold]")
    edit(page, lambda: drag(page, [(cx - 16, cy), (cx + 16, cy)]))
    page.click("[data-testid=measure-roi]")
    page.wait_for_function("document.querySelector('[data-testid=measure-result]').dataset.label === '2'")
    inside = dataset(page, "measure-result")
    assert float(inside["mean"]) > 370 and 0 < float(inside["area"]) < 20 * 7  # the sphere's part of the 33x7 stroke

    page.click("[data-testid=tool-length]")
    drag(page, [(10, 10), (40, 10)])
    page.wait_for_function("document.querySelector('[data-testid=length-result]').dataset.mm")
    assert float(dataset(page, "length-result")["mm"]) == pytest.approx(30.0, abs=0.2)
    # moving to another slice drops the numbers: they were about the plane left behind
    page.keyboard.press("ArrowUp")
    page.wait_for_function("document.querySelector('[data-testid=measure-result]').textContent === ''")


# ---- video --------------------------------------------------------------------------------------------

def test_video_starts_on_its_first_picture_and_plays(page):
    open_image(page, "moving_disc.mp4")
    assert page.input_value("[data-testid=frame-slider]") == str(BLANK_FRAMES)
    page.fill("[data-testid=fps]", "20")
    page.click("[data-testid=play]")
    page.wait_for_function(f"Number(document.querySelector('[data-testid=slice-label]').dataset.t) > {BLANK_FRAMES + 2}")
    page.click("[data-testid=play]")
    stopped = page.get_attribute("[data-testid=slice-label]", "data-t")
    idle(page)
    page.wait_for_timeout(300)  # paused: the frame stays where it is
    assert page.get_attribute("[data-testid=slice-label]", "data-t") == stopped


# ---- stale answers ----------------------------------------------------------------------------------

def test_a_zero_shot_answer_for_the_image_left_behind_is_dropped(page):
    held = []
    page.route("**/classify", lambda route: held.append(route))
    open_image(page, "sphere phantom")
    page.click("[data-testid=zeroshot-run]")
    while not held:
        page.wait_for_timeout(50)
    open_image(page, CT_NAME)
    with page.expect_response("**/classify"):
        held[0].continue_()
    idle(page)
    page.wait_for_timeout(200)  # let the page handle the answer it got
    assert page.locator("[data-testid=zeroshot-bar]").count() == 0


def test_errors_read_as_product_messages(page):
    page.expected_errors.append("net::ERR_FAILED")  # Chromium logs the request the test cuts off
    page.locator("[data-testid=catalog-item]").first.wait_for()
    page.route("**/api/images/*", lambda route: route.abort())  # the server gone while the page stays
    page.locator("[data-testid=catalog-item]").first.click()
    page.wait_for_function("document.querySelector('[data-testid=status-line]').dataset.kind === 'error'")
    message = page.inner_text("[data-testid=status-line]")
    assert "cannot be reached" in message and "fetch" not in message.lower() and "Error" not in message
