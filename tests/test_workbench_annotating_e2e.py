"""Annotating in Chromium: saved versions grouped by structure name (newest first) with author, time and draft/final status
(mark final, delete, load, which asks first over unsaved changes); structures named from the
SNOMED CT list in the server's palette; smoothing; and the review of a propagation's planes."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image as PILImage
from browsertools import (  # noqa: F401  (browser: the fixture)
    browser, bright_centre, click_display, edit, http, mask_pixels, needs_chromium, open_image, screenshots, wait_job, wait_plane,
    workbench_page,
)
from test_workbench_e2e import SHAPE, SPHERE_CENTRE, write_seed
from test_workbench_v2_e2e import drag

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.liveserver import start_server

    data_dir = tmp_path_factory.mktemp("workbench-versions")
    write_seed(data_dir / "seed")
    with start_server(data_dir) as live:
        base = live.url.rstrip("/")
        wait_job(base, http(base, "POST", "/api/ingest", {"path": "seed"}))
        yield base


@pytest.fixture
def page(browser, server):
    with workbench_page(browser, server) as page:
        yield page


def version(page, name: str, number: int):
    return page.locator(f"[data-testid=annotation-item][data-name='{name}'][data-version='{number}']")


def draw_and_save(page, name: str) -> int:
    """Clicks the sphere on its centre slice, saves as `name`; returns the mask's pixels."""
    page.locator("[data-testid=slice-slider]").fill(str(SPHERE_CENTRE[2]))
    page.wait_for_function(f"document.querySelector('[data-testid=viewport]').dataset.loadedPlane.startsWith('{SPHERE_CENTRE[2]},0,')")
    x, y, _ = bright_centre(page)
    pixels = edit(page, lambda: click_display(page, x, y))
    page.fill("[data-testid=save-name]", name)
    page.click("[data-testid=save-button]")
    page.wait_for_function(f"document.querySelector('[data-testid=save-status]').textContent.includes('saved {name}')")
    return pixels


def saved_versions(server: str, image_id: str, name: str) -> list[dict]:
    """The versions of annotation `name` the server lists (other tests save other names on the same image)."""
    return next(a["versions"] for a in http(server, "GET", f"/api/images/{image_id}/annotations")["annotations"] if a["name"] == name)


def save_structures(server: str, image_id: str, name: str, squares: dict[int, tuple[str, int]]) -> dict:
    """Saves, through the API, version of annotation `name` holding a square per label:
    `{label: (structure name, square's corner)}` on the sphere's centre plane."""
    session = http(server, "POST", "/api/sessions", {"image_id": int(image_id)})["session"]
    k = SPHERE_CENTRE[2]
    empty = http(server, "GET", f"/api/sessions/{session}/mask?k={k}")["mask"]
    width, height = PILImage.open(io.BytesIO(base64.b64decode(empty.split(",", 1)[1]))).size
    plane = np.zeros((height, width), np.uint8)
    for label, (structure, corner) in squares.items():
        http(server, "POST", f"/api/sessions/{session}/labels", {"label": label, "name": structure})
        plane[corner:corner + 6, corner:corner + 6] = label
    buffer = io.BytesIO()
    PILImage.fromarray(plane).save(buffer, format="PNG")
    http(server, "PUT", f"/api/sessions/{session}/planes",
         {"k": k, "mask": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()})
    saved = http(server, "POST", f"/api/sessions/{session}/save", {"name": name, "author": "Dr. Grace"})
    http(server, "DELETE", f"/api/sessions/{session}")
    return saved


def test_versions_are_grouped_by_structure_each_newest_first(browser, server):  # noqa: F811
    with workbench_page(browser, server) as page:
        page.locator("[data-testid=catalog-item]", has_text="sphere phantom").first.wait_for()
        image_id = page.locator("[data-testid=catalog-item]", has_text="sphere phantom").first.get_attribute("data-image-id")
    save_structures(server, image_id, "abdomen", {1: ("liver", 4)})
    save_structures(server, image_id, "abdomen", {1: ("liver", 4), 2: ("spleen", 20)})
    save_structures(server, image_id, "second-opinion", {1: ("spleen", 30)})
    with workbench_page(browser, server) as page:
        open_image(page, "sphere phantom")
        page.locator("[data-testid=annotation-group][data-structure=spleen]").wait_for()
        listed = page.evaluate("""() => [...document.querySelectorAll('[data-testid=annotation-list] li')]
            .map((li) => li.dataset.testid === 'annotation-group' ? `# ${li.dataset.structure}` : `${li.dataset.structure}: ${li.dataset.name} v${li.dataset.version}`)""")
        mine = [line for line in listed if "liver" in line or "spleen" in line]
        assert mine == ["# liver", "liver: abdomen v2", "liver: abdomen v1",
                        "# spleen", "spleen: second-opinion v1", "spleen: abdomen v2"]
        item = page.locator("[data-testid=annotation-item][data-structure=spleen][data-name=abdomen][data-version='2']")
        assert "abdomen v2" in item.inner_text() and "Dr. Grace" in item.inner_text()
        item.click()  # a version listed under a structure loads whole, every structure in it
        page.wait_for_function("document.querySelector('[data-testid=status-line]').textContent === 'loaded abdomen v2'")
        names = "[...document.querySelectorAll('[data-testid=label-item] input[type=text]')].map((i) => i.value).sort().join()"
        page.wait_for_function(f"{names} === 'liver,spleen'")


def test_versions_show_author_and_status_and_can_be_marked_final_and_deleted(page, server, screenshots):  # noqa: F811
    open_image(page, "sphere phantom")
    page.fill("[data-testid=save-author]", "Dr. Ada")
    page.locator("[data-testid=save-author]").dispatch_event("change")
    draw_and_save(page, "tumour")
    draw_and_save(page, "tumour")
    version(page, "tumour", 2).wait_for()
    assert page.locator("[data-testid=annotation-group][data-structure='structure 1']").count() == 1
    assert "Dr. Ada" in version(page, "tumour", 1).inner_text()
    assert version(page, "tumour", 1).get_attribute("data-status") == "draft"

    version(page, "tumour", 1).locator("[data-testid=annotation-final]").click()
    page.wait_for_selector("[data-testid=annotation-item][data-name=tumour][data-version='1'][data-status=final]")
    page.screenshot(path=str(screenshots / "workbench-versions.png"))
    assert version(page, "tumour", 1).locator("[data-testid=annotation-delete]").is_disabled()
    image_id = page.evaluate("document.body.dataset.imageId")
    tumour = saved_versions(server, image_id, "tumour")
    assert [v["status"] for v in tumour] == ["final", "draft"]
    assert tumour[0]["author"] == "Dr. Ada"

    page.once("dialog", lambda dialog: dialog.accept())
    version(page, "tumour", 2).locator("[data-testid=annotation-delete]").click()
    page.wait_for_function("!document.querySelector(\"[data-testid=annotation-item][data-name=tumour][data-version='2']\")")
    assert [v["version"] for v in saved_versions(server, image_id, "tumour")] == [1]
    # the author is remembered for the next visit
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.input_value("[data-testid=save-author]") == "Dr. Ada"


def test_loading_a_version_over_unsaved_work_asks_first(page):
    open_image(page, "sphere phantom")
    saved = draw_and_save(page, "lesion")
    version(page, "lesion", 1).wait_for()
    x, y, _ = bright_centre(page)
    changed = edit(page, lambda: click_display(page, x + 3, y, modifiers=["Shift"]))  # unsaved now
    session = page.evaluate("document.body.dataset.session")

    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.dismiss()))
    version(page, "lesion", 1).click()
    page.wait_for_function("document.querySelector('[data-testid=status-line]').textContent.includes('kept your unsaved drawing')")
    assert messages and "not saved" in messages[0]
    assert page.evaluate("document.body.dataset.session") == session and mask_pixels(page) == changed  # nothing lost

    page.once("dialog", lambda dialog: dialog.accept())
    version(page, "lesion", 1).click()
    page.wait_for_function(f"document.body.dataset.session !== '{session}'")
    page.wait_for_function(f"document.querySelector('[data-testid=viewport]').dataset.maskPixels === '{saved}'")

    # with nothing unsaved, loading asks nothing
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    session = page.evaluate("document.body.dataset.session")
    version(page, "lesion", 1).click()
    page.wait_for_function(f"document.body.dataset.session !== '{session}'")
    assert asked == []


def test_structures_take_the_servers_palette_and_coded_names(page, server):
    palette = http(server, "GET", "/api/terminology")["palette"]
    open_image(page, "sphere phantom")
    page.click("[data-testid=add-label]")
    swatches = page.locator("[data-testid=label-item] [data-testid=label-color]")
    assert [swatches.nth(i).input_value() for i in range(2)] == palette[:2]
    options = page.evaluate("[...document.querySelectorAll('[data-testid=structure-terms] option')].map(o => o.value)")
    assert "Liver" in options and "Neoplasm" in options
    name = page.locator("[data-testid=label-item]").nth(1).locator("[data-testid=label-name]")
    name.fill("neoplasm")  # the coded list, whatever the case
    name.press("Enter")
    code = page.locator("[data-testid=label-item]").nth(1).locator("[data-testid=label-code]")
    page.wait_for_function("document.querySelectorAll('[data-testid=label-code]')[1].textContent === 'SCT 108369006'")
    assert page.locator("[data-testid=label-item]").nth(1).locator("[data-testid=label-name]").input_value() == "neoplasm"  # as typed
    draw_and_save(page, "coded")  # draws structure 2, the active one
    image_id = page.evaluate("document.body.dataset.imageId")
    session = http(server, "POST", "/api/sessions", {"image_id": int(image_id), "annotation": {"name": "coded", "version": 1}})
    assert session["labels"]["2"]["code"]["code"] == "108369006" and session["labels"]["2"]["color"] == palette[1]
    name.fill("my own name")  # a free-text name drops the code
    name.press("Enter")
    page.wait_for_function("document.querySelectorAll('[data-testid=label-code]')[1].textContent === ''")
    assert code.text_content() == ""


def test_smoothing_takes_a_brush_spike_off_in_one_undoable_step(page):
    open_image(page, "sphere phantom")
    draw_and_save(page, "smooth-me")
    x, y, _ = bright_centre(page)
    drawn = mask_pixels(page)
    page.click("[data-testid=tool-brush]")
    page.fill("[data-testid=brush-radius]", "0")
    spiked = edit(page, lambda: drag(page, [(x, y), (x + 25, y)]))  # a one-pixel line out of the structure
    assert spiked > drawn
    smoothed = edit(page, lambda: page.click("[data-testid=smooth]"))
    assert smoothed < spiked - 5
    assert "smoothed" in page.inner_text("[data-testid=status-line]")
    assert edit(page, lambda: page.click("[data-testid=undo]")) == spiked


def test_a_propagation_shows_each_planes_score_and_steps_through_the_low_ones(page, server, screenshots):  # noqa: F811
    open_image(page, "sphere phantom")
    draw_and_save(page, "propagated")
    assert page.is_hidden("[data-testid=review-panel]")
    edit(page, lambda: page.click("[data-testid=propagate]"))
    page.wait_for_selector("[data-testid=review-panel]:not([hidden])")
    bars = page.locator("[data-testid=review-plane]")
    session = page.evaluate("document.body.dataset.session")
    planes = http(server, "GET", f"/api/sessions/{session}/propagation?label=1")["planes"]
    assert bars.count() == len(planes) >= 3
    assert [bars.nth(i).get_attribute("data-low") for i in range(bars.count())] == [str(p["low"]).lower() for p in planes]
    # the HUD shows the score of a reviewed plane; a bar takes the viewer to its plane
    hud = page.locator("[data-testid=slice-label]")
    assert float(hud.get_attribute("data-score")) == next(p["score"] for p in planes if p["k"] == SPHERE_CENTRE[2])
    first = planes[0]
    bars.nth(0).click()
    wait_plane(page, first["k"], 0)
    assert "score" in hud.inner_text()
    page.screenshot(path=str(screenshots / "workbench-propagation-review.png"))
    # stepping: with a threshold of 1 every plane is low, so "low ▶" walks plane by plane
    page.fill("[data-testid=review-below]", "1")
    page.press("[data-testid=review-below]", "Enter")
    page.wait_for_function("[...document.querySelectorAll('[data-testid=review-plane]')].every(b => b.dataset.low === 'true')")
    page.click("[data-testid=review-next-low]")
    wait_plane(page, planes[1]["k"], 0)
    page.click("[data-testid=review-prev-low]")
    wait_plane(page, first["k"], 0)
    assert SHAPE[2] > planes[-1]["k"]


def test_the_brush_paints_in_an_mpr_side_view_through_the_slices_it_crosses(page, server):
    open_image(page, "sphere phantom")
    page.click("[data-testid=layout-mpr]")
    page.wait_for_function("(document.querySelector('[data-testid=view-j]').dataset.loaded || '') !== ''")
    page.click("[data-testid=tool-brush]")
    page.fill("[data-testid=brush-radius]", "1")
    box = page.locator("[data-testid=view-j] canvas").bounding_box()
    x0, y0, x1, y1 = (float(v) for v in page.get_attribute("[data-testid=view-j]", "data-box").split(","))
    width = SHAPE[0]

    def at(column: float, row: float) -> tuple[float, float]:
        return box["x"] + x0 + (x1 - x0) * (column + 0.5) / width, box["y"] + y0 + (y1 - y0) * (row + 0.5) / SHAPE[2]

    def stroke() -> None:  # top to bottom of the coronal view: every slice, one column
        page.mouse.move(*at(width / 2, 0))
        page.mouse.down()
        page.mouse.move(*at(width / 2, SHAPE[2] - 1), steps=12)
        page.mouse.up()

    assert edit(page, stroke) > 0  # the main view's slice is one of those crossed
    page.wait_for_function("Number(document.querySelector('[data-testid=view-j]').dataset.maskPixels || 0) >= 3 * "
                           f"{SHAPE[2]}")
    session = page.evaluate("document.body.dataset.session")

    def labelled(k: int) -> int:
        plane = http(server, "GET", f"/api/sessions/{session}/mask?k={k}")
        return int((np.asarray(PILImage.open(io.BytesIO(base64.b64decode(plane["mask"].split(",", 1)[1])))) > 0).sum())

    assert all(labelled(k) > 0 for k in (0, SHAPE[2] // 2, SHAPE[2] - 1))
    assert edit(page, lambda: page.click("[data-testid=undo]")) == 0  # one step for every slice
    assert labelled(0) == 0
