"""The annotate → train → auto-segment loop through the API: training an automatic net or fine-tuning the
promptable segmenter on final versions only, as cancellable jobs, one at a time; the trained models and
adapters listed; an automatic segmentation saved as a draft that beats chance, on one image or a selection
(a job); the next image without a final version, by the model's mean entropy or MC-dropout disagreement;
bad requests refused in one line."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from servertools import make_client, png_data_url, wait_for_job
from torch import nn

from medfm.catalog import ingest, open_catalog
from medfm.errors import MedfmError
from medfm.io import Image, load
from medfm.io.synthetic import write_disc_phantoms
from medfm.models.adapters.file import read_adapter
from medfm.models.automatic import AutoSegmenter, Plan
from medfm.models.automatic.segmenter import WEIGHTS_FILE, dropout_at_inference
from medfm.models.registry import create_auto_segmenter, create_segmenter, sha256_of
from medfm.models.segmenters.base import SegmenterInfo
from medfm.server.display import Display
from medfm.server.jobs import FINISHED, Jobs
from medfm.tasks.auto_segment import auto_segment, uncertainty

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
    assert client.get("/api/unlabelled/next").json() == {"image_id": ids[5], "remaining": 2, "order": "catalog", "measure": None,
                                                         "uncertainty": None}
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
            "image_id": None, "remaining": 0, "order": "catalog", "measure": None, "uncertainty": None}


@pytest.mark.parametrize("measure", ["entropy", "mc-dropout"])
def test_next_with_a_model_opens_the_image_it_is_least_sure_of(loop, trained, measure):
    client, ids = loop["client"], loop["ids"]
    segmenter = create_auto_segmenter(loop["root"] / "models" / "seg" / "discs")
    # the two without a final version
    scores = {i: uncertainty(load(loop["paths"][i]), segmenter, measure=measure) for i in (ids[5], ids[6])}
    params = {"model": "discs"} if measure == "entropy" else {"model": "discs", "measure": measure}  # entropy by default
    answer = client.get("/api/unlabelled/next", params=params).json()
    assert answer == {"image_id": max(scores, key=scores.get), "remaining": 2, "order": "least-confident", "measure": measure,
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


def test_finetune_adapts_the_promptable_segmenter_on_final_versions_and_lists_the_adapter(loop, trained):
    client = loop["client"]
    answer = client.post("/api/train/finetune", json={"name": "discs-lora", "method": "lora", "rank": 2, "max_steps": 1,
                                                      "budget_minutes": 2})
    assert answer.status_code == 200, answer.text
    started = answer.json()
    assert {k: started[k] for k in ("kind", "adapter", "base_model")} == {
        "kind": "finetune", "adapter": "discs-lora", "base_model": "medfm-interactive"}
    job = wait_for_job(client, started["job"], timeout=600)
    assert job["state"] == "done" and job["kind"] == "finetune" and job["done"] == 99, job
    result = job["result"]
    assert result["adapter"] == "discs-lora" and result["steps"] == 1 and result["method"] == "lora" and result["rank"] == 2
    assert result["train_images"] + result["val_images"] == 5  # the draft of image 6 is left out
    path = loop["root"] / "models" / "adapters" / "discs-lora.safetensors"
    metadata = read_adapter(path, tensors=False)[1]
    assert (metadata["base_model"], metadata["method"]) == ("medfm-interactive", "lora")
    assert create_segmenter("medfm-interactive", adapter=path).info.weights_sha256 == sha256_of(path)  # loads over its base
    listed = client.get("/api/seg-models").json()
    (adapter,) = [a for a in listed["adapters"] if a["name"] == "discs-lora"]
    assert (adapter["name"], adapter["base_model"], adapter["method"], adapter["rank"], adapter["steps"]) == (
        "discs-lora", "medfm-interactive", "lora", 2, 1)
    assert adapter["validation_best"] == result["validation_best"] and listed["training"] is None


def test_prompts_switch_to_an_adapter_and_back_without_a_restart(loop, trained):
    from safetensors.torch import load_file, save_file

    client, root, image_id = loop["client"], loop["root"], loop["ids"][6]
    started = client.post("/api/train/finetune", json={"name": "switch-lora", "method": "lora", "rank": 2, "max_steps": 2,
                                                        "budget_minutes": 2}).json()
    job = wait_for_job(client, started["job"], timeout=600)
    assert job["state"] == "done", str(job)
    adapters = root / "models" / "adapters"
    base_sha = create_segmenter("medfm-interactive").info.weights_sha256
    adapter_sha = sha256_of(adapters / "switch-lora.safetensors")
    assert client.get("/api/seg-models").json()["segmenter"] == {"name": "medfm-interactive", "adapter": None}
    session = client.post("/api/sessions", json={"image_id": image_id}).json()["session"]
    assert client.post(f"/api/sessions/{session}/prompts", json={"box": [6, 6, 26, 26]}).status_code == 200

    switched = client.put("/api/segmenter/adapter", json={"adapter": "switch-lora"})
    assert switched.status_code == 200, switched.text
    assert switched.json() == {"name": "medfm-interactive", "adapter": "switch-lora"}
    assert client.get("/api/seg-models").json()["segmenter"]["adapter"] == "switch-lora"
    assert client.post(f"/api/sessions/{session}/prompts", json={"label": 2, "box": [4, 4, 28, 28]}).status_code == 200
    version = client.post(f"/api/sessions/{session}/save", json={"name": "switched"}).json()["version"]
    (sidecar,) = (root / "annotations" / str(image_id) / "switched").glob(f"v{version:04d}.json")
    provenance = json.loads(sidecar.read_text())["provenance"]
    assert provenance["weights_sha256"] == adapter_sha  # the label map's model: the one in use at saving
    planes = {s["label"]: s["planes"][0] for s in provenance["structures"]}
    assert planes[1]["weights_sha256"] == base_sha and "weights_sha256" not in planes[2]  # each plane says who made it

    tensors, metadata = load_file(str(adapters / "switch-lora.safetensors")), read_adapter(adapters / "switch-lora.safetensors", tensors=False)[1]
    save_file(tensors, str(adapters / "elsewhere.safetensors"), metadata={**metadata, "base_model": "medfm-clip-small"})
    for body, status, says in (({"adapter": "nope"}, 404, "no adapter 'nope' fine-tuned here"),
                               ({"adapter": "../up"}, 404, "no adapter '../up' fine-tuned here"),
                               ({"adapter": "elsewhere"}, 400, "medfm-clip-small")):
        refused = client.put("/api/segmenter/adapter", json=body)
        assert refused.status_code == status and says in refused.json()["detail"], refused.text
        assert "\n" not in refused.json()["detail"]
    assert client.get("/api/seg-models").json()["segmenter"]["adapter"] == "switch-lora"  # a refusal changes nothing
    back = client.put("/api/segmenter/adapter", json={"adapter": None})
    assert back.json() == {"name": "medfm-interactive", "adapter": None}
    client.delete(f"/api/sessions/{session}")
    (adapters / "elsewhere.safetensors").unlink()


def test_auto_segment_a_selection_as_a_job_saves_a_draft_on_each_and_never_touches_saved_work(loop, trained):
    client, ids, root = loop["client"], loop["ids"], loop["root"]
    chosen = [ids[5], ids[6], ids[0]]
    answer = client.post("/api/segment/auto/batch", json={"image_ids": [*chosen, ids[5]], "model": "discs", "name": "proposed"})
    assert answer.status_code == 200, answer.text
    assert {k: v for k, v in answer.json().items() if k != "job"} == {"kind": "auto-segment", "model": "discs", "images": 3}
    job = wait_for_job(client, answer.json()["job"], timeout=300)
    assert job["state"] == "done" and (job["done"], job["total"]) == (3, 3), job
    assert job["result"]["failed"] == [] and [s["image_id"] for s in job["result"]["saved"]] == chosen
    segmenter = create_auto_segmenter(root / "models" / "seg" / "discs")
    for image_id in chosen:
        listing = client.get(f"/api/images/{image_id}/annotations").json()["annotations"]
        (versions,) = [a["versions"] for a in listing if a["name"] == "proposed"]
        assert [(v["version"], v["status"], v["author"]) for v in versions] == [(1, "draft", "discs")]
        (sidecar,) = (root / "annotations" / str(image_id) / "proposed").glob("*.json")
        provenance = json.loads(sidecar.read_text())["provenance"]
        assert provenance["model"] == "discs" and provenance["weights_sha256"] == segmenter.info.weights_sha256
        file = client.get(f"/api/images/{image_id}/annotations/proposed/1/file")
        (root / "proposed.nii.gz").write_bytes(file.content)
        expected = auto_segment(load(loop["paths"][image_id]), segmenter).array[:, :, 0, 0, 0]
        assert np.array_equal(np.asarray(load(root / "proposed.nii.gz").array)[:, :, 0, 0, 0], expected)
    listing = client.get(f"/api/images/{ids[0]}/annotations").json()["annotations"]
    (final,) = [a["versions"] for a in listing if a["name"] == "segmentation"]
    assert final[0]["status"] == "final" and np.array_equal(saved_labels(loop, ids[0], 1), loop["masks"][ids[0]])


def handmade(unsure_of: str) -> AutoSegmenter:
    """A 1×1-convolution net with one activation, on images passed through unchanged: the feature after the
    activation is 1 on the image it is unsure of (``"dark"``, all 0, or ``"bright"``, all 1) and 0 on the other;
    the foreground logit is 4 × feature − 4, so the other image is called background with confidence, while on
    this one the classes tie (entropy) and dropout of the feature swings the logit (MC-dropout disagreement)."""
    network = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Conv2d(1, 2, 1))
    with torch.no_grad():
        network[0].weight.fill_(1.0 if unsure_of == "bright" else -1.0)
        network[0].bias.fill_(0.0 if unsure_of == "bright" else 1.0)
        network[2].weight.copy_(torch.tensor([0.0, 4.0]).reshape(2, 1, 1, 1))
        network[2].bias.copy_(torch.tensor([0.0, -4.0]))
    plan = Plan(dims=2, in_channels=1, labels={1: "thing"}, scale=1.0, patch_size=(16, 16), batch_size=1,
                normalisation="ct_clip", architecture="handmade", clip=(0.0, 1.0), mean=0.0, std=1.0)
    return AutoSegmenter(network, plan, SegmenterInfo("handmade", "0" * 64))


@pytest.mark.parametrize("measure", ["entropy", "mc-dropout"])
@pytest.mark.parametrize("unsure_of", ["dark", "bright"])
def test_each_measure_ranks_first_the_image_the_model_is_unsure_of(measure, unsure_of):
    images = {"dark": Image(np.zeros((16, 16), np.float32), np.eye(4)), "bright": Image(np.ones((16, 16), np.float32), np.eye(4))}
    segmenter = handmade(unsure_of)
    scores = {name: uncertainty(image, segmenter, measure=measure) for name, image in images.items()}
    assert max(scores, key=scores.get) == unsure_of, scores
    sure_of = "bright" if unsure_of == "dark" else "dark"
    if measure == "mc-dropout":  # no feature to drop on the other image: every pass agrees
        assert scores[sure_of] == 0 and scores[unsure_of] > 0.05
    else:
        assert scores[unsure_of] == pytest.approx(1.0, abs=1e-6) and scores[sure_of] < 0.2


def test_mc_dropout_injects_dropout_only_while_sampling_and_uses_a_nets_own_dropout_when_it_has_some():
    from monai.networks.nets import UNet

    segmenter, bright = handmade("bright"), np.ones((1, 16, 16, 1), np.float32)
    before = segmenter.probabilities(bright)
    with dropout_at_inference(segmenter.network) as how:
        assert how == "injected"
        assert not np.allclose(np.stack([segmenter.probabilities(bright) for _ in range(8)]), before)
    assert np.array_equal(segmenter.probabilities(bright), before)  # the hooks are gone
    trained_with_dropout = UNet(2, 1, 2, channels=(4, 8), strides=(2,), dropout=0.3).eval()
    with dropout_at_inference(trained_with_dropout) as how:
        assert how == "trained" and all(m.training for m in trained_with_dropout.modules() if isinstance(m, nn.Dropout))
        assert not any(m.training for m in trained_with_dropout.modules() if isinstance(m, nn.InstanceNorm2d))
    assert not any(m.training for m in trained_with_dropout.modules())
    image = Image(np.ones((16, 16), np.float32), np.eye(4))
    first, again = (uncertainty(image, segmenter, measure="mc-dropout", seed=3) for _ in range(2))
    assert first == again > 0  # seeded: the same draws each time


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


def test_a_finetune_blocks_a_training_and_a_cancelled_one_leaves_no_file(loop, trained):
    client = loop["client"]
    adapters = loop["root"] / "models" / "adapters"
    before = sorted(p.name for p in adapters.iterdir()) if adapters.is_dir() else []
    first = client.post("/api/train/finetune", json={"name": "long-lora", "budget_minutes": 5}).json()
    second = client.post("/api/train/seg", json={"name": "other", "budget_minutes": 1})
    assert second.status_code == 409 and "already running (long-lora)" in second.json()["detail"]
    assert client.get("/api/seg-models").json()["training"] == first == {
        "job": first["job"], "kind": "finetune", "adapter": "long-lora", "base_model": "medfm-interactive"}
    assert client.post(f"/api/jobs/{first['job']}/cancel").json()["state"] in ("cancelling", "cancelled")
    assert wait_for_job(client, first["job"], timeout=300)["state"] == "cancelled"
    assert sorted(p.name for p in adapters.iterdir()) == before
    assert client.get("/api/seg-models").json()["training"] is None


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/api/train/seg", {"budget_minutes": 0}, 400, "budget_minutes"),
    ("/api/train/seg", {"budget_minutes": 10_000}, 400, "budget_minutes"),
    ("/api/train/seg", {"max_steps": 0}, 400, "max_steps"),
    ("/api/train/seg", {"labels": {"0": "background"}}, 400, "labels"),
    ("/api/train/seg", {"labels": {"1": ""}}, 400, "labels"),
    ("/api/train/seg", {"architecture": "nope"}, 400, "architecture must be one of"),
    ("/api/train/seg", {"name": "../up"}, 400, "model name '../up' is not allowed"),
    ("/api/train/seg", {"name": "discs"}, 400, "a model named 'discs' exists already"),
    ("/api/segment/auto", {"image_id": 1, "model": "nope"}, 404, "no trained model 'nope'"),
    ("/api/segment/auto", {"image_id": 99_999, "model": "discs"}, 404, "no image 99999"),
    ("/api/segment/auto", {"image_id": 1, "model": "discs", "name": ".hidden"}, 400, "annotation name"),
    ("/api/segment/auto/batch", {"image_ids": [], "model": "discs"}, 400, "image_ids"),
    ("/api/segment/auto/batch", {"image_ids": [1, 99_999], "model": "discs"}, 404, "no image 99999"),
    ("/api/segment/auto/batch", {"image_ids": [1], "model": "nope"}, 404, "no trained model 'nope'"),
    ("/api/segment/auto/batch", {"image_ids": [1], "model": "discs", "name": ".hidden"}, 400, "annotation name"),
    ("/api/train/finetune", {"method": "nope"}, 400, "unknown fine-tuning method 'nope'"),
    ("/api/train/finetune", {"method": "vpt"}, 400, "--method vpt needs transformer blocks on tokens"),
    ("/api/train/finetune", {"rank": 0}, 400, "rank"),
    ("/api/train/finetune", {"budget_minutes": 0}, 400, "budget_minutes"),
    ("/api/train/finetune", {"name": "../up"}, 400, "adapter name '../up' is not allowed"),
])
def test_bad_requests_are_refused_in_one_line(loop, trained, path, body, status, says):
    response = loop["client"].post(path, json=body)
    assert response.status_code == status and says in response.json()["detail"], response.text
    assert "\n" not in response.json()["detail"]


def test_next_refuses_an_unknown_measure(loop, trained):
    response = loop["client"].get("/api/unlabelled/next", params={"model": "discs", "measure": "nope"})
    assert response.status_code == 400 and "measure must be one of entropy, mc-dropout" in response.json()["detail"]


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
    for path in ("/api/train/seg", "/api/train/finetune", "/api/segment/auto", "/api/segment/auto/batch", "/api/jobs/x/cancel"):
        response = loop["client"].post(path, json={}, headers={"Origin": "http://evil.example"})
        assert response.status_code == 403 and "cross-site" in response.json()["detail"], path
    response = loop["client"].put("/api/segmenter/adapter", json={"adapter": None}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and "cross-site" in response.json()["detail"]


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
    killed_adapter = tmp_path / "models" / "adapters" / ".killed.safetensors.partial"
    killed_adapter.mkdir(parents=True)
    (tmp_path / "models" / "adapters" / "damaged.safetensors").write_bytes(b"not safetensors")
    with make_client(tmp_path, data["url"]) as client:
        assert not leftover.exists() and not killed_adapter.exists() and client.get("/api/seg-models").json() == {
            "models": [], "adapters": [], "segmenter": {"name": "medfm-interactive", "adapter": None}, "training": None}


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


def test_finetune_final_only_on_the_command_line_learns_from_what_the_workbench_marked_final(loop, trained, tmp_path, capsys):
    from clitools import run_cli

    out = tmp_path / "adapter.safetensors"
    code, stdout, err = run_cli(["finetune", "medfm-interactive", "--data", str(loop["root"] / "annotations"), "--final-only",
                                 "--catalog", loop["url"], "--method", "dd-adapter", "--rank", "2", "--batch-size", "2",
                                 "--max-steps", "1", "-o", str(out)], capsys)
    assert code == 0, err
    assert json.loads(stdout)["train_images"] + json.loads(stdout)["val_images"] == 5 and out.is_file()
