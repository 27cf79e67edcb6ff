"""The README's main job end to end: ``medfm serve --demo`` in real headless Chromium.

A new user opens the printed URL and, without reading anything, finds the example studies,
segments the DICOM CT phantom, corrects it, saves it as DICOM SEG, sees similar cases from
the index the server built on its own, and segments through the frames of the example video.
"""

from __future__ import annotations

import pytest
from browsertools import (
    bright_centre, browser, click_display, edit, http, idle, mask_pixels,  # noqa: F401  (browser: the fixture)
    needs_chromium, open_image, screenshots, wait_plane, workbench_page,  # noqa: F401  (screenshots: the fixture)
)

pytestmark = needs_chromium

CT_SERIES = "medfm synthetic CT phantom"
VIDEO = "phantom_cine.mp4"


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """``medfm serve --demo`` on an empty data folder, its example catalog indexed."""
    from tests.liveserver import start_server

    with start_server(tmp_path_factory.mktemp("demo-data"), demo=True) as live:
        yield live


@pytest.fixture
def page(browser, demo_server):  # noqa: F811
    with workbench_page(browser, demo_server.url.rstrip("/")) as page:
        yield page


def test_segment_correct_save_dicom_seg_and_find_similar_cases(page, demo_server, screenshots):  # noqa: F811
    base = demo_server.url.rstrip("/")
    images = http(base, "GET", "/api/images")["images"]
    assert len(images) == 10 and page.locator("[data-testid=catalog-item]").count() == 10
    # the index the server builds in the background at start covers the whole example catalog
    assert _wait_indexed(base)

    open_image(page, CT_SERIES)
    start = page.get_attribute("[data-testid=slice-label]", "data-k")
    for _ in range(3):  # another slice: the phantom's bright cylinder runs through the volume
        page.keyboard.press("ArrowDown")
    wait_plane(page, int(start) - 3, 0)
    x, y, _ = bright_centre(page)
    clicked = edit(page, lambda: click_display(page, x, y))
    assert clicked > 0
    corrected = edit(page, lambda: click_display(page, x, y, ["Shift"]))
    assert corrected < clicked  # a negative click on the structure's centre takes it away

    page.locator("[data-testid=undo]").click()
    idle(page)
    assert mask_pixels(page) == clicked
    page.fill("[data-testid=save-name]", "cylinder")
    page.select_option("[data-testid=save-format]", "dicom-seg")
    page.click("[data-testid=save-button]")
    saved = page.locator("[data-testid=annotation-item][data-name=cylinder][data-version='1']")
    saved.wait_for()
    assert "DICOM SEG" in saved.inner_text()
    image_id = page.evaluate("document.body.dataset.imageId")
    (listing,) = http(base, "GET", f"/api/images/{image_id}/annotations")["annotations"]
    assert listing["versions"][0]["format"] == "dicom-seg"

    # the saved SEG reads back with highdicom onto the series, with the mask the browser showed
    import highdicom

    seg = highdicom.seg.segread(str(demo_server.data_dir / "annotations" / image_id / "cylinder" / "v0001.dcm"))
    assert int(seg.pixel_array.astype(bool).sum()) == clicked

    # the header follows the background indexing without a reload
    page.wait_for_function("document.querySelector('[data-testid=model-info]').textContent.includes('index: 10')")
    similar = page.locator("[data-testid=similar-item]")
    similar.first.wait_for()
    assert similar.count() >= 3
    page.screenshot(path=str(screenshots / "workbench-demo-ct.png"))


def test_video_frames_scroll_and_propagate(page):
    open_image(page, VIDEO)
    frames = page.locator("[data-testid=frame-slider]")
    assert frames.is_visible() and frames.get_attribute("max") == "23"
    frames.fill("12")
    wait_plane(page, 0, 12)
    x, y, _ = bright_centre(page)
    assert edit(page, lambda: click_display(page, x, y)) > 0
    edit(page, lambda: page.click("[data-testid=propagate]"))
    frames.fill("3")
    wait_plane(page, 0, 3)
    assert mask_pixels(page) > 0  # a frame nobody prompted, reached by propagation along t


def _wait_indexed(base: str, timeout_s: float = 60.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http(base, "GET", "/api/health")["index_size"] == 10:
            return True
        time.sleep(0.5)
    return False
