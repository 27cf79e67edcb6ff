"""The catalog panel in Chromium: patient → study → series groups without patient names unless
asked, sorting, pages of a catalog longer than one page, rename and delete."""

from __future__ import annotations


import numpy as np
import pytest
from browsertools import browser, http, needs_chromium, open_image, screenshots, wait_job, workbench_page  # noqa: F401  (fixtures)

pytestmark = needs_chromium

SERIES = [("Roe^Richard", "MRN-1", "1.2.826.0.1.3680043.8.498.11", "head plain"),
          ("Roe^Richard", "MRN-1", "1.2.826.0.1.3680043.8.498.12", "follow-up"),
          ("Poe^Paula", "MRN-2", "1.2.826.0.1.3680043.8.498.13", "abdomen")]
PHOTOS = 52  # with the 3 series, two pages of 50


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from medfm.io.synthetic import phantom, write_dicom_series
    from PIL import Image as PILImage
    from tests.liveserver import start_server

    data_dir = tmp_path_factory.mktemp("workbench-catalog")
    seed = data_dir / "seed"
    for number, (name, patient_id, study, description) in enumerate(SERIES, start=1):
        write_dicom_series(phantom((16, 16, 3)), seed / f"s{number}", patient_name=name, patient_id=patient_id,
                           study_uid=study, series_description=description, series_number=number, seed=number)
    for n in range(PHOTOS):
        PILImage.fromarray(np.full((12, 12), n, np.uint8)).save(seed / f"photo{n:02d}.png")
    with start_server(data_dir) as live:
        base = live.url.rstrip("/")
        wait_job(base, http(base, "POST", "/api/ingest", {"path": "seed"}), timeout=300)
        yield base


@pytest.fixture
def page(browser, server):
    with workbench_page(browser, server) as page:
        page.locator("[data-testid=catalog-item]").first.wait_for()
        yield page


def names(page) -> list[str]:
    return page.locator("[data-testid=catalog-name]").all_text_contents()


def wait_range(page, text: str) -> None:
    page.wait_for_function(f"document.querySelector('[data-testid=catalog-range]').textContent === '{text}'")


def test_series_are_grouped_by_patient_and_study_without_names_until_asked(page, screenshots):  # noqa: F811
    total = PHOTOS + len(SERIES)
    wait_range(page, f"1–50 of {total}")
    patients = page.locator("[data-testid=catalog-patient]").all_text_contents()
    assert len(patients) == 3 and patients[-1] == "No patient (files)"
    assert page.locator("[data-testid=catalog-study]").count() == 3
    assert names(page)[:3] and set(names(page)[:3]) == {"head plain", "follow-up", "abdomen"}
    body = page.text_content("body").casefold()
    assert not any(secret in body for secret in ("roe", "poe", "mrn-"))
    # the two series of one patient sit under one patient header
    roe = page.locator("[data-testid=catalog-item]", has_text="head plain").get_attribute("data-patient")
    assert page.locator("[data-testid=catalog-item]", has_text="follow-up").get_attribute("data-patient") == roe
    page.screenshot(path=str(screenshots / "workbench-catalog-groups.png"))
    page.check("[data-testid=catalog-phi]")
    page.wait_for_function("document.querySelector('[data-testid=catalog-patient]').textContent.includes('Richard')"
                           " || document.querySelectorAll('[data-testid=catalog-patient]')[1].textContent.includes('Richard')")
    assert "Paula" in page.text_content("[data-testid=catalog-list]")
    page.uncheck("[data-testid=catalog-phi]")
    page.wait_for_function("!document.querySelector('[data-testid=catalog-list]').textContent.includes('Richard')")


def test_pages_and_sorting_come_from_the_server(page):
    total = PHOTOS + len(SERIES)
    wait_range(page, f"1–50 of {total}")
    assert page.locator("[data-testid=catalog-item]").count() == 50
    page.click("[data-testid=catalog-next]")
    wait_range(page, f"51–{total} of {total}")
    assert page.locator("[data-testid=catalog-item]").count() == total - 50
    page.select_option("[data-testid=catalog-sort]", "name")
    wait_range(page, f"1–50 of {total}")  # a new order starts at the first page
    shown = names(page)
    assert shown == sorted(shown, key=str.casefold) and shown[0] == "abdomen"
    page.click("[data-testid=catalog-order]")
    page.wait_for_function("document.querySelector('[data-testid=catalog-name]').textContent === 'photo51.png'")
    page.fill("[data-testid=catalog-filter]", "photo4")
    wait_range(page, "1–10 of 10")
    assert page.is_hidden("[data-testid=catalog-pager]")
    # the modality menu offers the whole catalog's modalities, whatever the page shows
    assert page.evaluate("[...document.querySelectorAll('[data-testid=modality-filter] option')].map(o => o.value)") == ["", "CT", "OT"]
    page.fill("[data-testid=catalog-filter]", "")
    page.select_option("[data-testid=modality-filter]", "CT")
    wait_range(page, "1–3 of 3")


def test_rename_and_delete_from_the_list(page, server):
    page.select_option("[data-testid=catalog-sort]", "name")
    # the list that arrives while a rename is open waits for it, so the rename here starts either side of it
    item = page.locator("[data-testid=catalog-item]", has_text="abdomen")
    item.locator("[data-testid=catalog-rename]").click()
    page.fill("[data-testid=catalog-name-input]", "abdomen arterial")
    page.press("[data-testid=catalog-name-input]", "Enter")
    page.locator("[data-testid=catalog-name]", has_text="abdomen arterial").wait_for()
    image_id = page.locator("[data-testid=catalog-item]", has_text="abdomen arterial").get_attribute("data-image-id")
    assert http(server, "GET", f"/api/images/{image_id}")["name"] == "abdomen arterial"

    # the open image cannot be deleted from under its unsaved work
    open_image(page, "follow-up")
    page.locator("[data-testid=catalog-item]", has_text="follow-up").locator("[data-testid=catalog-delete]").click()
    page.wait_for_function("document.querySelector('[data-testid=status-line]').textContent.includes('is open')")
    assert page.locator("[data-testid=catalog-item]", has_text="follow-up").count() == 1

    before = http(server, "GET", "/api/images")["total"]
    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.locator("[data-testid=catalog-item]", has_text="photo07.png").locator("[data-testid=catalog-delete]").click()
    page.wait_for_timeout(300)
    assert dialogs and "photo07.png" in dialogs[0] and http(server, "GET", "/api/images")["total"] == before  # cancelled
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("[data-testid=catalog-item]", has_text="photo07.png").locator("[data-testid=catalog-delete]").click()
    page.wait_for_function("![...document.querySelectorAll('[data-testid=catalog-name]')].some(n => n.textContent === 'photo07.png')")
    assert http(server, "GET", "/api/images")["total"] == before - 1
    page.wait_for_function(f"document.querySelector('[data-testid=catalog-count]').textContent === '{before - 1} images'")
