"""Segment by words in Chromium, against a live server with the shipped image-text encoder and segmenter."""

from __future__ import annotations

import numpy as np
import pytest
from browsertools import browser, http, idle, mask_pixels, needs_chromium, open_image, wait_job, workbench_page  # noqa: F401

from medfm.io import Image, save

pytestmark = [needs_chromium, pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")]

#: How long the first answer may take on a slow, shared machine (it loads both shipped models).
ANSWER_MS = 180_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.liveserver import start_server

    data_dir = tmp_path_factory.mktemp("workbench-text")
    y, x = np.mgrid[:90, :120]
    picture = np.empty((90, 120, 3))
    picture[:] = (225, 180, 160)
    picture[(y - 45) ** 2 + (x - 60) ** 2 < 22**2] = (110, 70, 50)  # a brown disc on beige skin, as in test_text_segment
    picture = (picture + np.random.default_rng(0).normal(0, 8, picture.shape)).clip(0, 255).astype(np.uint8)
    (data_dir / "seed").mkdir()
    save(Image(picture.transpose(1, 0, 2)[:, :, None, None, :]), data_dir / "seed" / "lesion.png")
    save(Image(np.full((120, 90, 1, 1, 3), 40, np.uint8)), data_dir / "seed" / "plain.png")
    with start_server(data_dir) as live:
        base = live.url.rstrip("/")
        wait_job(base, http(base, "POST", "/api/ingest", {"path": "seed"}))
        yield base


def test_words_put_a_mask_on_the_plane_undo_takes_it_away_and_a_late_answer_stays_with_its_image(browser, server):  # noqa: F811  (the fixture)
    with workbench_page(browser, server) as page:
        open_image(page, "lesion")
        assert mask_pixels(page) == 0
        page.fill("[data-testid=text-prompt]", "skin lesion")
        page.click("[data-testid=text-prompt-run]")
        page.wait_for_function("document.querySelector('[data-testid=text-prompt-form]').dataset.settled === '1'", timeout=ANSWER_MS)
        idle(page)
        assert mask_pixels(page) > 0
        x0, y0, x1, y1 = map(float, page.get_attribute("[data-testid=text-prompt-form]", "data-box").split(","))
        assert 0 <= x0 < x1 <= 119 and 0 <= y0 < y1 <= 89
        assert page.is_visible("[data-testid=text-saliency]")
        page.click("[data-testid=undo]")
        page.wait_for_selector("[data-testid=viewport][data-mask-pixels='0']")
        idle(page)
        assert page.is_enabled("[data-testid=redo]")
        # an answer that comes after another image was opened is not painted there, but is in its own image's drawing
        held = []
        page.route("**/text-prompts", lambda route: held.append(route))
        with page.expect_request("**/text-prompts"):
            page.click("[data-testid=text-prompt-run]")
        plain = page.locator("[data-testid=catalog-item]", has_text="plain").first
        plain.click()
        page.wait_for_function(f"document.body.dataset.imageId === '{plain.get_attribute('data-image-id')}'")
        for _ in range(400):  # a condition, not a pause: Playwright hands the held request over while it waits
            if held:
                break
            page.wait_for_timeout(50)
        held[0].continue_()
        page.wait_for_function("document.querySelector('[data-testid=text-prompt-form]').dataset.settled === '2'", timeout=ANSWER_MS)
        idle(page)
        assert mask_pixels(page) == 0 and not page.is_visible("[data-testid=text-saliency]")
        open_image(page, "lesion")
        page.wait_for_selector("[data-testid=viewport]:not([data-mask-pixels='0'])")
        assert page.is_enabled("[data-testid=undo]")
