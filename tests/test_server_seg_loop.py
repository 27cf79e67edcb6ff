"""The annotate → train → auto-segment loop through the API: training on final versions only, as a
cancellable job, one at a time; the trained models listed; an automatic segmentation saved as a draft
that beats chance; the next image without a final version; bad requests refused in one line."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from servertools import make_client, png_data_url, wait_for_job

from medfm.catalog import ingest, open_catalog
from medfm.errors import MedfmError
from medfm.io import Image, load
from medfm.io.synthetic import write_disc_phantoms
from medfm.models.automatic.segmenter import WEIGHTS_FILE
from medfm.models.registry import create_auto_segmenter
from medfm.server.display import Display
from medfm.server.jobs import FINISHED, Jobs
from medfm.tasks.auto_segment import uncertainty

#: Tiny discs, few steps: a training of seconds that still beats calling everything foreground.
IMAGES, STEPS = 7, 20


def disc_catalog(root: Path) -> dict:
    """A catalog of ``IMAGES`` 32×32 disc phantoms; their masks (0/1, as medfm reads them) by image id."""
    images, masks = write_disc_phantoms(root / "discs", IMAGES, texture=0.5, size=32, seed=1)
    url = f"sqlite:///{root / 'catalog.db'}"
    ingest([images], url, progress=False)
    with open_catalog(url) as catalog:
        ids = sorted((r.id, Path(r.source_path).name) for r in catalog.query())
    return {"url": url, "ids": [i for i, _ in ids], "paths": {i: images / name for i, name in ids}, "displays": {i: Display.of(load(images / name)) for i, name in ids},
            "masks": {i: (np.asarray(load(masks / name).array)[:, :, 0, 0, 0] > 0).astype(np.uint8) for i, name in ids}}


def annotate(client, data: dict, image_id: int, mask: np.ndarray, name: str = "segmentation", final: bool = True) -> int:
    """Draw ``mask`` (on the image's (I, J) grid) in a session as the workbench shows it, save it, mark it final;
    returns the version."""
    session = client.post("/api/sessions", json={"image_id": image_id}).json()["session"]
    shown = data["displays"][image_id].plane_to_display(mask.T)  # a plane is (rows, columns) = (J, I)
    response = client.put(f"/api/sessions/{session}/planes", json={"k": 0, "t": 0, "mask": png_data_url(shown)})
    assert response.status_code == 200, response.text
    version = client.post(f"/api/sessions/{session}/save", json={"name": name}).json()["version"]
    if final:
        assert client.patch(f"/api/images/{image_id}/annotations/{name}/{version}", json={"status": "final"}).status_code == 200
    client.delete(f"/api/sessions/{session}")
    return version


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("loop")
    data = disc_catalog(root)
    with make_client(root, data["url"]) as client:
        ids = data["ids"]
        for image_id in ids[:5]:
            annotate(client, data, image_id, data["masks"][image_id])
        annotate(client, data, ids[5], np.zeros((32, 32), np.uint8), final=False)  # a draft: not learnt from
        yield {"client": client, "root": root, **data}


@pytest.fixture(scope="module")
def trained(loop) -> dict:
    client = loop["client"]
    answer = client.post("/api/train/seg", json={"name": "discs", "budget_minutes": 2, "max_steps": STEPS,
                                                 "labels": {"1": "disc"}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "discs"
    job = wait_for_job(client, answer.json()["job"], timeout=600)
    assert job["state"] == "done", job
    return job


def test_training_learns_from_final_versions_only_and_lists_the_model(loop, trained):
    result = trained["result"]
    assert result["model"] == "discs" and result["steps"] == STEPS and trained["done"] == 99
    assert result["train_images"] + result["val_images"] == 5  # the draft of image 6 is left out
    listed = loop["client"].get("/api/seg-models").json()
    assert listed["training"] is None
    (model,) = listed["models"]
    assert model["name"] == "discs" and model["labels"] == {"1": "disc"} and model["plan"]["dims"] == 2
    assert model["validation"]["1"]["dice"] == result["validation"]["1"]["dice"]
    assert (loop["root"] / "models" / "seg" / "discs" / WEIGHTS_FILE).is_file()
    assert np.array_equal(saved_labels(loop, loop["ids"][0], 1), loop["masks"][loop["ids"][0]])  # learnt as drawn


def saved_labels(loop, image_id: int, version: int) -> np.ndarray:
    """(I, J) label values of a saved version of ``segmentation``."""
    file = loop["client"].get(f"/api/images/{image_id}/annotations/segmentation/{version}/file")
    path = loop["root"] / f"read-{image_id}-{version}.nii.gz"
    path.write_bytes(file.content)
    return np.asarray(load(path).array)[:, :, 0, 0, 0]


def test_auto_segment_saves_a_draft_that_beats_chance_and_never_touches_a_final_version(loop, trained):
    client, ids, masks = loop["client"], loop["ids"], loop["masks"]
    answer = client.post("/api/segment/auto", json={"image_id": ids[6], "model": "discs", "name": "segmentation"})
    assert answer.status_code == 200, answer.text
    saved = answer.json()
    assert saved["status"] == "draft" and saved["version"] == 1 and saved["author"] == "discs"
    assert 0.5 <= saved["confidence"]["1"] <= 1
    predicted = saved_labels(loop, ids[6], 1) > 0
    reference = masks[ids[6]] > 0
    chance = dice(np.ones_like(reference), reference)  # calling every pixel the disc
    assert dice(predicted, reference) > chance + 0.15, (dice(predicted, reference), chance)
    # on an image with a final version: a new draft beside it
    again = client.post("/api/segment/auto", json={"image_id": ids[0], "model": "discs", "name": "segmentation"}).json()
    listing = client.get(f"/api/images/{ids[0]}/annotations").json()["annotations"]
    versions = {v["version"]: v["status"] for a in listing if a["name"] == "segmentation" for v in a["versions"]}
    assert versions == {1: "final", again["version"]: "draft"} and again["version"] == 2
    session = client.post("/api/sessions", json={"image_id": ids[6], "annotation": {"name": "segmentation", "version": 1}}).json()
    assert session["labels"]["1"]["name"] == "disc"  # opens for editing with the model's label names


def test_next_goes_to_the_following_image_without_a_final_version_and_round(loop):
    client, ids = loop["client"], loop["ids"]
    assert client.get("/api/unlabelled/next").json() == {"image_id": ids[5], "remaining": 2, "order": "catalog", "uncertainty": None}
    assert client.get("/api/unlabelled/next", params={"after": ids[5]}).json()["image_id"] == ids[6]
    assert client.get("/api/unlabelled/next", params={"after": ids[6]}).json()["image_id"] == ids[5]


def test_next_offers_the_open_image_only_when_it_is_the_last_without_a_final_version(tmp_path):
    data = disc_catalog(tmp_path)
    with make_client(tmp_path, data["url"]) as client:
        *labelled, last = data["ids"]
        for image_id in labelled:
            annotate(client, data, image_id, data["masks"][image_id])
        assert client.get("/api/unlabelled/next", params={"after": last}).json()["image_id"] == last
        annotate(client, data, last, data["masks"][last])
        assert client.get("/api/unlabelled/next", params={"after": last}).json() == {
            "image_id": None, "remaining": 0, "order": "catalog", "uncertainty": None}


def test_next_with_a_model_opens_the_image_it_is_least_sure_of(loop, trained):
    client, ids = loop["client"], loop["ids"]
    segmenter = create_auto_segmenter(loop["root"] / "models" / "seg" / "discs")
    scores = {i: uncertainty(load(loop["paths"][i]), segmenter) for i in (ids[5], ids[6])}  # the two without a final version
    answer = client.get("/api/unlabelled/next", params={"model": "discs"}).json()
    assert answer == {"image_id": max(scores, key=scores.get), "remaining": 2, "order": "least-confident",
                      "uncertainty": pytest.approx(max(scores.values()), abs=1e-5)}
    assert 0 < answer["uncertainty"] < 1
    missing = client.get("/api/unlabelled/next", params={"model": "nope"})
    assert missing.status_code == 404 and "no trained model 'nope'" in missing.json()["detail"]


class FixedProbabilities:
    """A stand-in segmenter whose class probabilities for every pixel are ``probabilities``."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities_ = np.array(probabilities, np.float32)

    def probabilities(self, pixels: np.ndarray, spacing=None, flips: bool = False) -> np.ndarray:
        return np.broadcast_to(self.probabilities_[:, None, None, None], (len(self.probabilities_), *pixels.shape[1:])).copy()


@pytest.mark.parametrize(("probabilities", "expected"), [([0.5, 0.5], 1.0), ([1 / 3] * 3, 1.0), ([1.0, 0.0], 0.0),
                                                         ([0.9, 0.1], 0.469)])
def test_uncertainty_is_the_mean_entropy_over_that_of_a_uniform_guess(probabilities, expected):
    image = Image(np.zeros((8, 6), np.float32), np.eye(4))
    assert uncertainty(image, FixedProbabilities(probabilities)) == pytest.approx(expected, abs=1e-3)


def test_one_training_at_a_time_and_a_cancelled_one_leaves_no_folder(loop, trained):
    client = loop["client"]
    first = client.post("/api/train/seg", json={"name": "long", "budget_minutes": 5}).json()
    second = client.post("/api/train/seg", json={"name": "other", "budget_minutes": 1})
    assert second.status_code == 409 and "already running" in second.json()["detail"]
    assert client.get("/api/seg-models").json()["training"] == first
    assert client.post(f"/api/jobs/{first['job']}/cancel").json()["state"] in ("cancelling", "cancelled")
    assert wait_for_job(client, first["job"], timeout=300)["state"] == "cancelled"
    assert sorted(p.name for p in (loop["root"] / "models" / "seg").iterdir()) == ["discs"]
    assert client.get("/api/seg-models").json()["training"] is None


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/api/train/seg", {"budget_minutes": 0}, 400, "budget_minutes"),
    ("/api/train/seg", {"budget_minutes": 10_000}, 400, "budget_minutes"),
    ("/api/train/seg", {"max_steps": 0}, 400, "max_steps"),
    ("/api/train/seg", {"labels": {"0": "background"}}, 400, "labels"),
    ("/api/train/seg", {"labels": {"1": ""}}, 400, "labels"),
    ("/api/train/seg", {"architecture": "nope"}, 400, "architecture must be one of"),
    ("/api/train/seg", {"name": "../up"}, 400, "model name '../up' is not allowed"),
    ("/api/train/seg", {"name": "discs"}, 400, "exists already"),
    ("/api/segment/auto", {"image_id": 1, "model": "nope"}, 404, "no trained model 'nope'"),
    ("/api/segment/auto", {"image_id": 99_999, "model": "discs"}, 404, "no image 99999"),
    ("/api/segment/auto", {"image_id": 1, "model": "discs", "name": ".hidden"}, 400, "annotation name"),
])
def test_bad_requests_are_refused_in_one_line(loop, trained, path, body, status, says):
    response = loop["client"].post(path, json=body)
    assert response.status_code == status and says in response.json()["detail"], response.text
    assert "\n" not in response.json()["detail"]


def test_training_needs_final_versions_of_two_images(tmp_path):
    data = disc_catalog(tmp_path)
    with make_client(tmp_path, data["url"]) as client:
        assert "no saved annotations" in client.post("/api/train/seg", json={}).json()["detail"]
        annotate(client, data, data["ids"][0], data["masks"][data["ids"][0]], final=False)
        refused = client.post("/api/train/seg", json={})
        assert refused.status_code == 400 and "marked final" in refused.json()["detail"]
        annotate(client, data, data["ids"][1], data["masks"][data["ids"][1]])
        refused = client.post("/api/train/seg", json={})
        assert refused.status_code == 400 and "at least 2 labelled images" in refused.json()["detail"]


def test_changes_from_another_site_are_refused(loop):
    for path in ("/api/train/seg", "/api/segment/auto", "/api/jobs/x/cancel"):
        response = loop["client"].post(path, json={}, headers={"Origin": "http://evil.example"})
        assert response.status_code == 403 and "cross-site" in response.json()["detail"], path


def test_a_job_stops_at_its_next_progress_report_once_cancelled():
    jobs, started, release = Jobs(workers=1), threading.Event(), threading.Event()

    def work(progress):
        started.set()
        release.wait(5)
        progress(1, 2)
        return "finished"

    running = jobs.submit("test", work)
    queued = jobs.submit("test", lambda progress: "never")
    started.wait(5)
    assert jobs.cancel(queued)["state"] == "cancelling" and jobs.cancel(running)["state"] == "cancelling"
    release.set()
    assert ended(jobs, running) == "cancelled" and ended(jobs, queued) == "cancelled"
    finished = jobs.submit("test", lambda progress: "ok")
    assert ended(jobs, finished) == "done" and jobs.cancel(finished)["state"] == "done"
    with pytest.raises(MedfmError, match="no job 'nope'"):
        jobs.cancel("nope")
    jobs.shutdown()


def ended(jobs: Jobs, job: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while (state := jobs.get(job)["state"]) not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.01)
    return state


def test_a_killed_training_is_removed_at_start_and_a_damaged_model_is_not_offered(tmp_path):
    data = disc_catalog(tmp_path)
    leftover = tmp_path / "models" / "seg" / ".killed.partial"
    leftover.mkdir(parents=True)
    (leftover / "checkpoint.pt").write_bytes(b"half")
    (tmp_path / "models" / "seg" / "damaged").mkdir()
    (tmp_path / "models" / "seg" / "damaged" / "config.json").write_text("{")
    with make_client(tmp_path, data["url"]) as client:
        assert not leftover.exists() and client.get("/api/seg-models").json() == {"models": [], "training": None}


def test_train_seg_final_only_on_the_command_line_learns_from_what_the_workbench_marked_final(loop, trained, tmp_path, capsys):
    from clitools import run_cli

    annotations = str(loop["root"] / "annotations")
    code, out, _ = run_cli(["train", "seg", annotations, "--final-only", "--catalog", loop["url"], "--max-steps", "1",
                            "--plan", "batch_size=2", "-o", str(tmp_path / "model")], capsys)
    assert code == 0 and json.loads(out)["train_images"] + json.loads(out)["val_images"] == 5
    drafts = tmp_path / "drafts"
    shutil.copytree(loop["root"] / "annotations" / str(loop["ids"][5]), drafts / str(loop["ids"][5]))  # a draft only
    code, _, err = run_cli(["train", "seg", str(drafts), "--final-only", "--catalog", loop["url"], "-o", str(tmp_path / "m2")], capsys)
    assert code != 0 and "holds no annotation version marked final" in err and not (tmp_path / "m2").exists()
