"""The workbench's Generate, Report and Ask panels in Chromium, against a live server with a tiny
generator and an index of captioned cases (the shipped encoder)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from browsertools import (  # noqa: F401  (browser, screenshots: the fixtures)
    browser, http, idle, needs_chromium, open_image, screenshots, wait_job, workbench_page,
)
from test_generators import SIZE, TINY, write_classes

from medfm.io import Image, save
from medfm.io.dicom.sr import read_report_sr

pytestmark = [needs_chromium, pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")]

#: How long an answer that needs the shipped encoder may take on a slow, shared machine (the first one
#: also encodes the router's label texts).
ANSWER_MS = 180_000
CAPTIONS = {"bright": "Large mass in the liver. Small pleural effusion.", "dark": "Normal brain without hemorrhage."}


def _png(path: Path, level: int, seed: int) -> None:
    save(Image((level + np.random.default_rng(seed).integers(0, 40, (32, 32))).astype(np.uint8)), path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.liveserver import start_server
    from medfm.train.generator import train_generator

    data_dir = tmp_path_factory.mktemp("workbench-panels")
    torch.set_num_threads(1)
    (data_dir / "generators").mkdir()
    train_generator(write_classes(data_dir / "training"), data_dir / "generators" / "tiny", size=SIZE, network=TINY,
                    max_steps=10, batch_size=4)
    cases = data_dir / "seed" / "cases"
    cases.mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(4):
        kind = "bright" if i % 2 == 0 else "dark"
        _png(cases / f"{kind}_case{i}.png", 190 if kind == "bright" else 15, i)
        rows.append(f"{kind}_case{i}.png,{CAPTIONS[kind]}")
    (cases / "manifest.csv").write_text("\n".join(rows) + "\n")
    _png(data_dir / "seed" / "query_bright.png", 200, 99)
    _png(data_dir / "seed" / "query_dark.png", 10, 98)
    with start_server(data_dir) as live:
        base = live.url.rstrip("/")
        wait_job(base, http(base, "POST", "/api/ingest", {"path": "seed"}))
        wait_job(base, http(base, "POST", "/api/index/build", {}), timeout=300)
        yield base


@pytest.fixture
def page(browser, server):
    with workbench_page(browser, server) as page:
        yield page


def _settled(page, panel: str) -> int:
    return int(page.get_attribute(f"[data-testid={panel}]", "data-settled") or 0)


def test_generated_images_are_shown_marked_synthetic_and_open_in_the_viewer(page):
    page.wait_for_function("document.querySelector('[data-testid=generate-generator]').options.length > 1")
    offered = page.eval_on_selector_all("[data-testid=generate-generator] option", "options => options.map(o => o.value)")
    assert offered == ["medfm-gen-fetal-us-64", "medfm-gen-fetal-us-pairs-64", "medfm-gen-medpix-ct-mr-64", "tiny"]  # the shipped generators, and the data folder's
    page.select_option("[data-testid=generate-generator]", "tiny")
    page.select_option("[data-testid=generate-class]", "dark")
    page.fill("[data-testid=generate-n]", "2")
    page.click("[data-testid=generate-run]")
    items = page.locator("[data-testid=generated-item]")
    page.wait_for_function("document.querySelectorAll('[data-testid=generated-item]').length === 2", timeout=ANSWER_MS)
    assert [items.nth(i).get_attribute("data-condition") for i in range(2)] == ["dark", "dark"]
    assert page.locator("[data-testid=generated-item] [data-testid=synthetic-badge]", has_text="SYNTHETIC").count() == 2
    # the catalog list marks them too, and only them (the catalog reloads once the job is done)
    page.wait_for_function("document.querySelectorAll('[data-testid=catalog-item] [data-testid=synthetic-badge]').length === 2")
    synthetic = page.locator("[data-testid=catalog-item]", has=page.locator("[data-testid=synthetic-badge]"))
    assert sorted(synthetic.nth(i).get_attribute("data-image-id") for i in range(2)) == sorted(
        items.nth(i).get_attribute("data-image-id") for i in range(2))
    assert page.locator("[data-testid=catalog-item]").count() > 2
    image_id = items.first.get_attribute("data-image-id")
    items.first.click()
    page.wait_for_function(f"document.body.dataset.imageId === '{image_id}' && document.body.dataset.session")
    idle(page)
    assert page.inner_text("[data-testid=image-title]").startswith("SYNTHETIC")


def test_report_sentences_link_to_their_cases_and_download_as_sr(page, tmp_path: Path):
    open_image(page, "query_bright")
    page.click("[data-testid=report-run]")
    page.locator("[data-testid=report-sentence]").first.wait_for(timeout=ANSWER_MS)
    source = page.locator("[data-testid=report-source]").first
    assert re.search(r"case .*case\d", source.inner_text())
    # the draft as edited goes into the SR
    page.locator("[data-testid=report-sentence-text]").first.fill("Edited finding.")
    with page.expect_download() as download:
        page.click("[data-testid=report-sr]")
    download.value.save_as(tmp_path / "report.dcm")
    sentences = read_report_sr(tmp_path / "report.dcm")
    assert sentences[0] == "Edited finding." and pydicom.dcmread(tmp_path / "report.dcm").Modality == "SR"
    case_id = source.get_attribute("data-image-id")
    source.click()
    page.wait_for_function(f"document.body.dataset.imageId === '{case_id}'")
    idle(page)
    assert page.locator("[data-testid=report-sentence]").count() == 0  # the draft was about the image left
    # its unsaved edits stayed with it, and come back with it
    open_image(page, "query_bright")
    page.wait_for_function("document.querySelector('[data-testid=report-panel]').dataset.dirty === 'true'")
    assert page.inner_text("[data-testid=report-sentence-text] >> nth=0") == "Edited finding."
    assert page.locator("[data-testid=report-source]").first.get_attribute("data-image-id") == case_id


def test_ask_answers_with_evidence_that_opens(page, screenshots):
    open_image(page, "query_dark")
    page.fill("[data-testid=ask-question]", "Is it bright or dark?")
    page.click("[data-testid=ask-run]")
    page.wait_for_function("document.querySelector('[data-testid=ask-answer]').dataset.answer", timeout=ANSWER_MS)
    # the page shows the API's answer: a choice, or "cannot tell" below the encoder's calibrated similarity
    # (which these synthetic images may fall under); without abstention the API names one of the choices
    asked = """async ([id, abstain]) => (await (await import('./js/api.js')).api('/ask', {method: 'POST',
        body: {image_ids: [Number(id)], question: 'Is it bright or dark?', abstain}})).answer"""
    image_id = page.evaluate("document.body.dataset.imageId")
    assert page.get_attribute("[data-testid=ask-answer]", "data-answer") == page.evaluate(asked, [image_id, True])
    assert page.evaluate(asked, [image_id, False]) in ("bright", "dark")
    evidence = page.locator("[data-testid=ask-evidence-item]")
    evidence.first.wait_for()
    case_id = evidence.first.get_attribute("data-image-id")
    assert case_id != page.evaluate("document.body.dataset.imageId")
    page.screenshot(path=screenshots / "workbench_ask.png")
    evidence.first.click()
    page.wait_for_function(f"document.body.dataset.imageId === '{case_id}'")


@pytest.mark.parametrize("panel, route, start, shown", [
    ("report-panel", "**/api/report", lambda page: page.click("[data-testid=report-run]"), "[data-testid=report-sentence]"),
    ("ask-panel", "**/api/ask", lambda page: (page.fill("[data-testid=ask-question]", "Is it bright or dark?"),
                                              page.click("[data-testid=ask-run]")), "[data-testid=ask-evidence-item]"),
])
def test_an_answer_for_the_image_left_behind_is_dropped(page, panel, route, start, shown):
    held = []
    page.route(route, lambda request_route: held.append(request_route))
    open_image(page, "query_bright")
    start(page)
    page.wait_for_function(f"document.body.dataset.imageId && document.querySelector('[data-testid={panel}] button[type]').disabled")
    open_image(page, "query_dark")
    before = _settled(page, panel)
    assert len(held) == 1, "the request was not held"  # routed while the page opened the other image
    held[0].continue_()
    page.wait_for_function(f"Number(document.querySelector('[data-testid={panel}]').dataset.settled || 0) > {before}",
                           timeout=ANSWER_MS)
    assert page.locator(shown).count() == 0
    assert page.inner_text("[data-testid=ask-answer]") == ""


def test_an_edited_report_saved_as_a_version_is_there_after_a_reload(page, tmp_path: Path):
    panel = "document.querySelector('[data-testid=report-panel]').dataset"
    open_image(page, "dark_case3")
    page.wait_for_function("document.querySelector('[data-testid=report-versions]').dataset.imageId === document.body.dataset.imageId")
    assert page.locator("[data-testid=report-version]").count() == 0
    page.fill("[data-testid=save-author]", "Dr. Ada")
    page.click("[data-testid=report-run]")
    page.locator("[data-testid=report-sentence]").first.wait_for(timeout=ANSWER_MS)
    page.locator("[data-testid=report-sentence-text]").first.fill("Edited finding, kept.")
    page.wait_for_function(f"{panel}.dirty === 'true'")
    page.click("[data-testid=report-save]")
    page.wait_for_function(f"{panel}.shownVersion === '1' && {panel}.dirty === 'false'")
    page.locator("[data-testid=report-version][data-version='1']").wait_for()

    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    open_image(page, "dark_case3")
    page.wait_for_function(f"{panel}.shownVersion === '1'")  # the newest saved version shows on opening
    assert page.inner_text("[data-testid=report-sentence-text] >> nth=0") == "Edited finding, kept."
    saved = page.locator("[data-testid=report-version]")
    assert saved.count() == 1 and saved.first.get_attribute("data-status") == "draft" and "Dr. Ada" in saved.first.inner_text()

    # loading over unsaved edits asks first; cancelling keeps them
    page.locator("[data-testid=report-sentence-text]").first.fill("Edited again.")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    saved.first.click()
    page.wait_for_function(f"{panel}.dirty === 'true'")
    assert asked and "not saved" in asked[0]
    assert page.inner_text("[data-testid=report-sentence-text] >> nth=0") == "Edited again."
    # marking final saves the edits first, as v2
    page.click("[data-testid=report-final]")
    page.wait_for_function(f"{panel}.shownVersion === '2' && {panel}.shownStatus === 'final'")
    page.wait_for_function("document.querySelector('[data-testid=report-version]').dataset.status === 'final'")
    assert [saved.nth(i).get_attribute("data-version") for i in range(saved.count())] == ["2", "1"]
    with page.expect_download() as download:
        page.click("[data-testid=report-sr]")
    assert download.value.suggested_filename.endswith("-v0002.dcm")
    download.value.save_as(tmp_path / "v2.dcm")
    assert read_report_sr(tmp_path / "v2.dcm")[0] == "Edited again."
