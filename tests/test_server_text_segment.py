"""Segmentation from words in a workbench session (POST /api/sessions/{id}/text-prompts), with a fake
image-text encoder whose similarity map is the plane's brightness and the fake threshold segmenter."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fakeencoder import FakeEncoder, fake_models  # noqa: F401  (the fixture)
from fakesegmenter import ThresholdSegmenter
from servertools import make_client, make_data, mask_of

from medfm.models import registry
from medfm.tasks.text_segment import MAX_TEXT_CHARS


class BrightnessMapEncoder(FakeEncoder):
    """The fake encoder with a similarity map: the plane's mean brightness on an 8×8 grid, whatever the text."""

    def similarity_map(self, plane: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
        grey = plane.mean(axis=2) if plane.ndim == 3 else plane
        cells = [np.array_split(band, 8, axis=1) for band in np.array_split(grey.astype(np.float32), 8, axis=0)]
        return np.array([[cell.mean() for cell in band] for band in cells], np.float32)


@pytest.fixture
def models(fake_models):  # noqa: F811  (the fixture)
    """``map-clip`` (a :class:`BrightnessMapEncoder`), ``fake-clip`` (no similarity map) and the ``fake-threshold`` segmenter."""
    (registry.CONFIG_DIR / "map-clip.json").write_text(json.dumps({"family": "test_map"}))
    (registry.CONFIG_DIR / "fake-threshold.json").write_text(json.dumps({"family": "test_threshold", "kind": "segmenter"}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._BUILDERS, "test_map", lambda config, weights: BrightnessMapEncoder(config["name"]))
        patch.setitem(registry._BUILDERS, "test_threshold", lambda config, weights: ThresholdSegmenter())
        registry.reload_configs()
        yield


@pytest.fixture
def data(tmp_path, models):
    return make_data(tmp_path)


def _client(tmp_path, data, encoder: str = "map-clip"):
    return make_client(tmp_path, data["url"], encoder=encoder, segmenter="fake-threshold")


def test_words_segment_the_active_structure_on_the_plane_as_one_undoable_step(tmp_path, data):
    with _client(tmp_path, data) as client:
        session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        answer = client.post(f"/api/sessions/{session}/text-prompts", json={
            "text": "  the  bright disc ", "k": 2, "label": 3, "label_name": "disc", "saliency": True})
        assert answer.status_code == 200, answer.text
        result = answer.json()
        # the disc (radius 12 about the centre of 48×48) is where the map is bright: the box surrounds it
        x0, y0, x1, y1 = result["box"]
        assert 8 <= x0 < 16 and 32 < x1 <= 40 and 8 <= y0 < 16 and 32 < y1 <= 40, result["box"]
        mask = mask_of(result)
        assert set(np.unique(mask)) == {0, 3} and result["labels"]["3"]["name"] == "disc"
        assert (mask == 3).sum() == (int(x1) - int(np.ceil(x0)) + 1) * (int(y1) - int(np.ceil(y0)) + 1)
        assert result["k"] == 2 and result["can_undo"] and result["score"] == 1.0
        from PIL import Image as PILImage

        saliency = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(result["saliency"].split(",", 1)[1]))))
        assert saliency.shape == (48, 48) and saliency.max() == 255 and saliency[24, 24] > saliency[2, 2]
        # the current plane only
        assert not mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": 1}).json()).any()
        undone = client.post(f"/api/sessions/{session}/undo").json()
        assert undone["k"] == 2 and not mask_of(undone).any() and not undone["can_undo"]
        assert (mask_of(client.post(f"/api/sessions/{session}/redo").json()) == 3).sum() == (mask == 3).sum()
        # a saved label map says which words gave the box, as the CLI's does; a click says nothing of the kind
        client.post(f"/api/sessions/{session}/prompts", json={"k": 0, "label": 1, "points": [[24, 24]], "point_labels": [1]})
        state = client.app.state.medfm
        prompts = state.sessions.get(session).label_image(state.segmenter.info).provenance.prompts
        by_label = {prompt["label"]: prompt for prompt in prompts}
        assert len(by_label[3]["boxes"]) == 1 and not by_label[3]["points"]
        assert by_label[3]["text_prompt"]["text"] == "the bright disc"
        assert by_label[3]["text_prompt"]["encoder"] == "map-clip"
        assert "text_prompt" not in by_label[1]


@pytest.mark.parametrize(("text", "message"), [
    ("   ", "the text prompt is empty"),
    ("polyp " * 40, f"at most {MAX_TEXT_CHARS} are accepted"),
    ("x" * (2 * MAX_TEXT_CHARS + 1), "text: String should have at most"),
])
def test_empty_or_too_long_words_are_refused_and_nothing_changes(tmp_path, data, text, message):
    with _client(tmp_path, data) as client:
        session = client.post("/api/sessions", json={"image_id": data["photo"]}).json()["session"]
        answer = client.post(f"/api/sessions/{session}/text-prompts", json={"text": text})
        assert answer.status_code == 400 and message in answer.json()["detail"], answer.text
        assert not client.get(f"/api/sessions/{session}/mask").json()["can_undo"]


def test_an_encoder_without_similarity_maps_and_a_locked_structure_are_refused(tmp_path, data):
    with _client(tmp_path, data, encoder="fake-clip") as client:
        session = client.post("/api/sessions", json={"image_id": data["photo"]}).json()["session"]
        answer = client.post(f"/api/sessions/{session}/text-prompts", json={"text": "red square"})
        assert answer.status_code == 400 and "gives no similarity map" in answer.json()["detail"]
        locked = client.post(f"/api/sessions/{session}/text-prompts", json={"text": "red square", "label": 2, "locked": [2]})
        assert locked.status_code == 400 and "structure 2 is locked" in locked.json()["detail"]
        assert client.post("/api/sessions/0123abc/text-prompts", json={"text": "red square"}).status_code == 404


def test_a_cross_site_request_is_refused(tmp_path, data):
    with _client(tmp_path, data) as client:
        session = client.post("/api/sessions", json={"image_id": data["photo"]}).json()["session"]
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
            answer = client.post(f"/api/sessions/{session}/text-prompts", json={"text": "red square"}, headers=headers)
            assert answer.status_code == 403 and "cross-site request refused" in answer.json()["detail"]
        assert not client.get(f"/api/sessions/{session}/mask").json()["can_undo"]


@pytest.mark.parametrize(("logit", "found"), [(6.0, True), (-6.0, False)])
def test_the_grounding_head_shipped_for_the_encoder_gives_the_box(tmp_path, data, logit, found):
    """With medfm-clip-small and a (constant) grounding head registered for its weights, the head's map decides."""
    import shutil

    from grounders import constant_head_state, grounder_config

    from medfm.models.registry import save_weights

    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("medfm-clip-small", "medfm-interactive"):  # the head's text encoder and the segmenter whose features it reads
        shutil.copy(registry.WEIGHTS_DIR / f"{name}.safetensors", weights)
        shutil.copy(Path(registry.__file__).parent / "configs" / f"{name}.json", registry.CONFIG_DIR)
    registry.reload_configs()
    head = save_weights(constant_head_state(logit), weights / "test-grounding.safetensors")
    config = grounder_config("test-grounding", head)
    (registry.CONFIG_DIR / "test-grounding.json").write_text(json.dumps({k: v for k, v in config.items() if k != "name"}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "WEIGHTS_DIR", weights)
        registry.reload_configs()
        with _client(tmp_path, data, encoder="medfm-clip-small") as client:
            session = client.post("/api/sessions", json={"image_id": data["photo"]}).json()["session"]
            answer = client.post(f"/api/sessions/{session}/text-prompts", json={"text": "red square", "label": 2})
            if not found:
                assert answer.status_code == 400 and answer.json()["detail"].startswith("'red square' not found"), answer.text
                assert not client.get(f"/api/sessions/{session}/mask").json()["can_undo"]
                return
            assert answer.status_code == 200, answer.text
            assert answer.json()["box"] == [0, 0, 29, 39]  # the whole 30×40 photo
            state = client.app.state.medfm
            prompts = state.sessions.get(session).label_image(state.segmenter.info).provenance.prompts
            record = {prompt["label"]: prompt for prompt in prompts}[2]["text_prompt"]
            assert record["grounder"] == "test-grounding" and record["method"] == "grounding head → box"
    registry.reload_configs()
