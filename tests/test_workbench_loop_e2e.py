"""The annotate → train → auto-segment loop in Chromium: versions marked final train a model from the
Train panel (a few seconds), "Next" opens the image without a final version that the model is least
sure of, and Auto-segment proposes a draft version there whose Dice against its known mask beats chance."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from browsertools import (  # noqa: F401  (browser, screenshots: fixtures)
    browser,
    http,
    idle,
    needs_chromium,
    screenshots,
    wait_job,
    workbench_page,
)
from servertools import png_data_url

from medfm.io import load
from medfm.io.synthetic import write_disc_phantoms
from medfm.server.display import Display

pytestmark = needs_chromium

IMAGES = 7
#: The Train panel's budget: a training of seconds (the page's budget is wall time, in minutes).
BUDGET_MINUTES = 0.3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server over seven 32×32 disc phantoms; the first four annotated (their known masks) and marked
    final, the fifth annotated as a draft, through the session API the page's tools use."""
    from tests.liveserver import start_server

    data_dir = tmp_path_factory.mktemp("workbench-loop")
    images, masks = write_disc_phantoms(data_dir / "seed", IMAGES, texture=0.5, size=32, seed=1)
    with start_server(data_dir) as live:
        base = live.url.rstrip("/")
        wait_job(base, http(base, "POST", "/api/ingest", {"path": "seed/images"}))
        listed = sorted(http(base, "GET", "/api/images")["images"], key=lambda image: image["id"])
        ids = [image["id"] for image in listed]
        known = {}
        for image_id, name in zip(ids, sorted(p.name for p in images.iterdir())):
            known[image_id] = np.asarray(load(masks / name).array)[:, :, 0, 0, 0] > 0
            if image_id in ids[:5]:
                shown = Display.of(load(images / name)).plane_to_display(known[image_id].T)
                session = http(base, "POST", "/api/sessions", {"image_id": image_id})["session"]
                http(base, "PUT", f"/api/sessions/{session}/planes", {"k": 0, "t": 0, "mask": png_data_url(shown)})
                version = http(base, "POST", f"/api/sessions/{session}/save", {"name": "segmentation"})["version"]
                if image_id in ids[:4]:
                    http(base, "PATCH", f"/api/images/{image_id}/annotations/segmentation/{version}", {"status": "final"})
        yield {"base": base, "data_dir": data_dir, "ids": ids, "known": known}


def test_train_next_and_auto_segment_propose_a_draft_above_chance(browser, server, screenshots):  # noqa: F811
    base, ids = server["base"], server["ids"]
    with workbench_page(browser, base) as page:
        # the user marks the fifth image's version final in the page
        page.click(f"[data-testid=catalog-item][data-image-id='{ids[4]}']")
        page.wait_for_function(f"document.body.dataset.imageId === '{ids[4]}' && document.body.dataset.session")
        idle(page)
        page.locator("[data-testid=annotation-item][data-version='1'] [data-testid=annotation-final]").click()
        page.wait_for_selector("[data-testid=annotation-item][data-version='1'][data-status=final]")

        page.fill("[data-testid=train-labels]", "1=disc")
        page.fill("[data-testid=train-budget]", str(BUDGET_MINUTES))
        page.click("[data-testid=train-start]")
        page.wait_for_selector("[data-testid=train-cancel]:not([hidden])")
        page.wait_for_selector("[data-testid=train-note][data-state=done]", timeout=300_000)
        note = page.text_content("[data-testid=train-note]")
        assert "validation Dice disc" in note and page.is_hidden("[data-testid=train-cancel]")
        assert page.input_value("[data-testid=seg-model]") == http(base, "GET", "/api/seg-models")["models"][0]["name"]

        model = page.input_value("[data-testid=seg-model]")
        chosen = http(base, "GET", f"/api/unlabelled/next?after={ids[4]}&model={model}")
        assert chosen["order"] == "least-confident" and chosen["image_id"] in ids[5:]
        page.click("[data-testid=next-unlabelled]")  # of the two without a final version, the one the model is less sure of
        page.wait_for_function(f"document.body.dataset.imageId === '{chosen['image_id']}' && document.body.dataset.session")
        idle(page)
        assert "least sure" in page.text_content("[data-testid=status-line]")
        page.click("[data-testid=auto-segment]")
        page.wait_for_selector("[data-testid=annotation-item][data-name=segmentation][data-version='1'][data-status=draft]")
        page.wait_for_function("document.querySelector('[data-testid=status-line]').textContent.includes('proposed segmentation v1')")
        idle(page)
        assert int(page.get_attribute("[data-testid=viewport]", "data-mask-pixels")) > 0  # loaded for correcting
        page.screenshot(path=str(screenshots / "loop-auto-segmented.png"))

    path = server["data_dir"] / "auto.nii.gz"
    with urllib.request.urlopen(f"{base}/api/images/{chosen['image_id']}/annotations/segmentation/1/file", timeout=60) as response:
        path.write_bytes(response.read())
    predicted = np.asarray(load(path).array)[:, :, 0, 0, 0] > 0
    reference = server["known"][chosen["image_id"]]
    dice = 2 * (predicted & reference).sum() / (predicted.sum() + reference.sum())
    chance = 2 * reference.sum() / (reference.sum() + reference.size)  # calling every pixel the disc
    assert dice > chance + 0.1, (dice, chance)


def test_a_training_cancelled_in_the_page_ends_and_keeps_no_model(browser, server):  # noqa: F811
    base = server["base"]
    before = [m["name"] for m in http(base, "GET", "/api/seg-models")["models"]]
    with workbench_page(browser, base) as page:
        page.fill("[data-testid=train-budget]", "5")
        page.click("[data-testid=train-start]")
        page.wait_for_selector("[data-testid=train-cancel]:not([hidden])")
        page.click("[data-testid=train-cancel]")
        page.wait_for_selector("[data-testid=train-note][data-state=cancelled]", timeout=120_000)
        assert "cancelled" in page.text_content("[data-testid=train-note]") and page.is_enabled("[data-testid=train-start]")
    listed = http(base, "GET", "/api/seg-models")
    assert [m["name"] for m in listed["models"]] == before and listed["training"] is None
    assert not list((server["data_dir"] / "models" / "seg").glob(".*.partial"))


def test_mc_dropout_next_auto_segmenting_a_selection_and_fine_tuning_from_the_page(browser, server):  # noqa: F811
    """After the first test's training: "Next" by MC-dropout disagreement opens the image the API ranks first;
    ticking two images and Auto-segment saves a draft on each (a job with progress); the Train panel fine-tunes
    the prompt segmenter into an adapter the server lists."""
    base, ids = server["base"], server["ids"]
    model = http(base, "GET", "/api/seg-models")["models"][0]["name"]
    with workbench_page(browser, base) as page:
        page.wait_for_function("document.querySelector('[data-testid=seg-model]').options.length > 0")
        page.select_option("[data-testid=next-measure]", "mc-dropout")
        chosen = http(base, "GET", f"/api/unlabelled/next?model={model}&measure=mc-dropout")
        assert chosen["measure"] == "mc-dropout" and chosen["image_id"] in ids[5:]
        page.click("[data-testid=next-unlabelled]")
        page.wait_for_function(f"document.body.dataset.imageId === '{chosen['image_id']}' && document.body.dataset.session")
        idle(page)
        assert "MC-dropout disagreement" in page.text_content("[data-testid=status-line]")

        before = {i: versions_of(base, i) for i in ids[5:]}
        for image_id in ids[5:]:
            page.check(f"[data-testid=catalog-item][data-image-id='{image_id}'] [data-testid=catalog-check]")
        assert page.text_content("[data-testid=auto-segment]") == "Auto-segment 2 selected"
        page.click("[data-testid=auto-segment]")
        page.wait_for_function("document.querySelector('[data-testid=status-line]').textContent.includes('on 2 images (drafts)')",
                               timeout=120_000)
        assert page.text_content("[data-testid=auto-segment]") == "Auto-segment"  # the selection is cleared
        for image_id in ids[5:]:
            added = [v for v in versions_of(base, image_id) if v not in before[image_id]]
            assert [(v[2], v[3]) for v in added] == [("draft", model)], (image_id, added)

        page.select_option("[data-testid=train-kind]", "finetune")
        assert page.is_visible("[data-testid=train-method]") and page.is_disabled("[data-testid=train-labels]")
        page.fill("[data-testid=train-budget]", "0.1")
        page.click("[data-testid=train-start]")
        page.wait_for_selector("[data-testid=train-note][data-state=done]", timeout=300_000)
        assert "fine-tuned adapter" in page.text_content("[data-testid=train-note]")
        (adapter,) = http(base, "GET", "/api/seg-models")["adapters"]
        assert adapter["method"] == "lora" and adapter["base_model"] == "medfm-interactive"
        page.wait_for_function("document.querySelector('[data-testid=prompt-adapter]').options.length === 2")
        page.select_option("[data-testid=prompt-adapter]", adapter["name"])  # the prompts use it at once, no restart
        page.wait_for_function("document.querySelector('[data-testid=status-line]').textContent"
                               f".includes('prompts now segment with adapter {adapter['name']}')")
        assert http(base, "GET", "/api/seg-models")["segmenter"] == {"name": "medfm-interactive", "adapter": adapter["name"]}
        page.select_option("[data-testid=prompt-adapter]", "")
        page.wait_for_function("document.querySelector('[data-testid=status-line]').textContent"
                               ".includes('prompts now segment with medfm-interactive')")
    assert http(base, "GET", "/api/seg-models")["segmenter"]["adapter"] is None


def versions_of(base: str, image_id: int) -> list[tuple[str, int, str, str]]:
    """``(name, version, status, author)`` of every saved version of an image."""
    listing = http(base, "GET", f"/api/images/{image_id}/annotations")["annotations"]
    return [(a["name"], v["version"], v["status"], v["author"]) for a in listing for v in a["versions"]]
