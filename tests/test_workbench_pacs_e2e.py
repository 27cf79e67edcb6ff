"""The workbench's PACS panel end to end: real headless Chromium, a real ``medfm serve --pacs``, a real Orthanc.

A clinician's round trip without leaving the browser: search the PACS (no patient data on the
page), retrieve a CT series, see it open, click the bright structure, save the mask as DICOM
SEG and send it back; Orthanc then holds a SEG series in that study referencing the CT series.
"""

from __future__ import annotations

import pytest
from browsertools import (  # noqa: F401  (browser, screenshots: fixtures)
    browser, bright_centre, click_display, edit, http, idle, mask_pixels, needs_chromium, screenshots, workbench_page,
)
from orthanc import PATIENT_ID, PATIENT_NAME, SHAPE, Orthanc, orthanc, upload_study  # noqa: F401  (orthanc: the fixture)

from medfm.io.dicomweb import DicomWeb

pytestmark = needs_chromium

#: What of the patient must never reach the page: the DICOM name, as it is or formatted, and the patient ID.
PATIENT_DATA = (PATIENT_NAME, "Jane", "DOE", PATIENT_ID)


@pytest.fixture(scope="module")
def server(orthanc: Orthanc, tmp_path_factory):  # noqa: F811
    """The base URL of a live server with an empty catalog, connected to the Orthanc."""
    from tests.liveserver import start_server

    with start_server(tmp_path_factory.mktemp("pacs-workbench"), extra_args=("--pacs", orthanc.dicomweb_url)) as live:
        yield live.url.rstrip("/")


def assert_no_patient_data(page, api_responses) -> None:
    shown = page.content() + page.inner_text("body")
    for text in PATIENT_DATA:
        assert text not in shown, f"{text!r} is on the page"
    for response in api_responses:
        body = response.text()
        for text in PATIENT_DATA:
            assert text not in body, f"{text!r} in the answer to {response.url}"


def test_search_retrieve_segment_and_send_back(browser, server, orthanc: Orthanc, tmp_path, screenshots):  # noqa: F811  (fixtures)
    assert http(server, "GET", "/api/health")["pacs"] is True
    study = upload_study(orthanc, tmp_path / "ct")

    with workbench_page(browser, server) as page:
        api_responses = []
        page.on("response", lambda r: api_responses.append(r) if "/api/" in r.url and "json" in r.headers.get("content-type", "") else None)

        # the panel appears because health says a PACS is configured; search CT studies of the day
        panel = page.locator("[data-testid=pacs-panel]")
        panel.wait_for(state="visible")
        page.select_option("[data-testid=pacs-modality]", "CT")
        page.fill("[data-testid=pacs-date]", "2026-01-01")
        page.click("[data-testid=pacs-search]")
        ours = page.locator(f"[data-testid=pacs-study][data-study-uid='{study.study_uid}']")
        ours.wait_for()
        assert "2026-01-01" in ours.inner_text() and "CT" in ours.inner_text()
        assert f"{SHAPE[2]} images" in ours.inner_text() and "1 series" in ours.inner_text()

        # expand it to its series, retrieve the series
        ours.locator("[data-testid=pacs-expand]").click()
        series = ours.locator(f"[data-testid=pacs-series][data-series-uid='{study.series_uid}']")
        series.wait_for()
        assert "synthetic phantom" in series.inner_text()
        page.locator("[data-testid=pacs-panel]").screenshot(path=str(screenshots / "workbench-pacs.png"))
        assert any("/api/pacs/studies?" in r.url for r in api_responses)
        assert_no_patient_data(page, api_responses)
        series.locator("[data-testid=pacs-retrieve-series]").click()

        # the job runs, the catalog lists the pulled image and the viewer opens it
        page.wait_for_function("document.body.dataset.imageId && document.body.dataset.session")
        image_id = page.evaluate("document.body.dataset.imageId")
        page.locator(f"[data-testid=catalog-item][data-image-id='{image_id}']").wait_for()
        page.wait_for_function("document.querySelector('[data-testid=viewport]').dataset.loadedPlane !== undefined")
        idle(page)
        assert "synthetic phantom" in page.inner_text("[data-testid=image-title]")
        assert "retrieved 1 image" in page.text_content("[data-testid=pacs-progress]")

        # a CT opens at the soft-tissue window: the window from its values sets the cylinder apart
        page.select_option("[data-testid=wl-preset]", "auto")
        page.wait_for_function("!document.querySelector('[data-testid=viewport]').dataset.loadedPlane.endsWith(',40,400')")
        # click the bright cylinder: a mask of about its section
        x, y, bright = bright_centre(page)
        assert bright > 100
        assert mask_pixels(page) == 0
        pixels = edit(page, lambda: click_display(page, x, y))
        assert pixels > 0.3 * bright, (pixels, bright)

        # save as DICOM SEG, then send that version to the PACS
        page.fill("[data-testid=save-name]", "cylinder")
        page.select_option("[data-testid=save-format]", "dicom-seg")
        page.click("[data-testid=save-button]")
        page.wait_for_function("document.querySelector('[data-testid=save-status]').textContent.includes('saved cylinder v1')")
        saved = page.locator("[data-testid=annotation-item][data-name=cylinder][data-version='1']")
        session = page.evaluate("document.body.dataset.session")
        with page.expect_response(lambda r: r.url.endswith("/api/pacs/push")) as pushed:
            saved.locator("[data-testid=pacs-push]").click()
        assert pushed.value.ok, pushed.value.text()
        page.wait_for_function("document.querySelector('[data-testid=status-line]').textContent.includes('sent to PACS')")
        assert page.get_attribute("[data-testid=status-line]", "data-kind") == "info"
        assert saved.locator("[data-testid=pacs-push]").inner_text() == "Sent ✓"
        assert page.evaluate("document.body.dataset.session") == session  # the button did not also load the version
        idle(page)
        page.screenshot(path=str(screenshots / "workbench-pacs-sent.png"))
        assert_no_patient_data(page, api_responses)
        answer = pushed.value.json()

    # Orthanc now holds the SEG in that study, referencing the retrieved series
    pacs = DicomWeb(orthanc.dicomweb_url)
    (seg_series,) = pacs.search_series(study.study_uid, modality="SEG")
    assert seg_series["series_uid"] == answer["series_uid"]
    from highdicom.seg import segread

    (back,) = pacs.retrieve(study.study_uid, tmp_path / "back", seg_series["series_uid"])
    seg = segread(back)
    assert seg.SOPInstanceUID == answer["sop_instance_uid"]
    assert seg.StudyInstanceUID == study.study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series_uid
