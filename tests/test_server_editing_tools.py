"""Smoothing a structure (one undoable step, other structures untouched), painting on an MPR
view's plane, and reviewing a propagation plane by plane (scores, low-confidence planes marked),
in a session and through the API."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fakesegmenter import ThresholdSegmenter
from medfm.errors import MedfmError
from medfm.io import Image
from medfm.models.segmenters import Prediction, Prompt
from medfm.server.routes.sessions import review
from medfm.server.sessions import SegmentationSession
from servertools import make_client, make_data, mask_of, png_data_url


def jagged_session() -> SegmentationSession:
    """A 40x40x5 volume whose structure 1 is a square with a one-pixel spike, next to structure 2."""
    session = SegmentationSession(1, Image(np.zeros((40, 40, 5), np.float32), np.eye(4)))
    for k in range(5):
        plane = np.zeros((40, 40), np.uint8)
        plane[10:30, 10:30] = 1
        plane[19, 30:36] = 1  # a spike a smooth outline has not
        plane[10:30, 31:33] = 2
        session.replace_plane(k, 0, plane)
    return session


def test_smoothing_takes_the_spike_off_and_leaves_other_structures(tmp_path):
    session = jagged_session()
    before = session.plane(2, 0).copy()
    changed = session.smooth(2, 0, 1, sigma=1.0)
    after = session.plane(2, 0)
    assert changed > 0 and not after[19, 34] and after[20, 20] == 1  # the spike's tip gone, the body kept
    assert np.array_equal(after == 2, before == 2)  # the neighbour is untouched
    assert np.array_equal(session.plane(3, 0), before)  # one plane only
    session.undo()
    assert np.array_equal(session.plane(2, 0), before)
    with pytest.raises(MedfmError, match="locked"):
        session.smooth(2, 0, 1, sigma=1.0, locked=frozenset({1}))
    with pytest.raises(MedfmError, match="sigma"):
        session.smooth(2, 0, 1, sigma=50)


def test_smoothing_a_whole_structure_is_one_step_over_every_plane():
    session = jagged_session()
    before = session.labels.copy()
    session.smooth(0, 0, 1, sigma=1.0, whole=True)
    assert all(not session.plane(k, 0)[19, 34] for k in range(5))
    session.undo()
    assert np.array_equal(session.labels, before)


class DimmerIsLessSure(ThresholdSegmenter):
    """Scores 0.6 on planes whose brightest pixel is under 180, else 0.95."""

    def _decode(self, embedding: np.ndarray, prompt: Prompt, shape: tuple[int, int]) -> Prediction:
        prediction = super()._decode(embedding, prompt, shape)
        return Prediction(prediction.mask, prediction.logits, 0.6 if embedding.max() < 180 else 0.95)


def test_a_propagation_reports_each_planes_score_and_marks_the_low_ones():
    volume = np.full((40, 40, 7), 10.0, np.float32)
    volume[12:28, 12:28, :] = 200.0
    volume[12:28, 12:28, 4] = 150.0  # a plane the model is less sure of
    session = SegmentationSession(1, Image(volume, np.eye(4)))
    segmenter, lock = DimmerIsLessSure(threshold=50), threading.RLock()
    session.interact(segmenter, lock, 3, 0, 1, Prompt(boxes=[(11, 11, 28, 28)]))
    session.propagate(segmenter, lock, 1, "k")
    planes = review(session, 1, 0.8)["planes"]
    assert [plane["k"] for plane in planes] == list(range(7))
    assert [plane["k"] for plane in planes if plane["low"]] == [4]
    assert planes[4]["score"] == 0.6 and planes[3]["score"] == 0.95
    assert review(session, 2, 0.8)["planes"] == []  # never propagated


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("smooth")
    data = make_data(root)
    with make_client(root, data["url"]) as client:
        client.data = data
        yield client


def test_the_api_smooths_and_reviews(client):
    session = client.post("/api/sessions", json={"image_id": client.data["disc"]}).json()["session"]
    client.post(f"/api/sessions/{session}/prompts", json={"k": 2, "box": [10, 10, 38, 38]})
    drawn = mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": 2}).json())
    answer = client.post(f"/api/sessions/{session}/smooth", json={"k": 2, "label": 1, "sigma": 2.0}).json()
    assert answer["changed"] == int((mask_of(answer) != drawn).sum()) and answer["can_undo"]
    for body, says in (({"sigma": 0}, "sigma"), ({"sigma": 11}, "sigma"), ({"sigma": "nan"}, "sigma"), ({"label": 0}, "label")):
        response = client.post(f"/api/sessions/{session}/smooth", json={"k": 2, **body})
        assert response.status_code == 400 and says in response.json()["detail"]
    job = client.post(f"/api/sessions/{session}/propagate", json={"label": 1, "axis": "k"}).json()["job"]
    from servertools import wait_for_job

    result = wait_for_job(client, job)["result"]
    planes = result["review"]["planes"]
    assert len(planes) >= 3 and all(0 <= p["score"] <= 1 and p["low"] == (p["score"] < 0.8) for p in planes)
    again = client.get(f"/api/sessions/{session}/propagation", params={"label": 1, "below": 1.0}).json()
    assert [p["k"] for p in again["planes"]] == [p["k"] for p in planes] and all(p["low"] for p in again["planes"])
    assert client.get(f"/api/sessions/{session}/propagation", params={"below": 2}).status_code == 400


@pytest.mark.parametrize("axis", ["j", "i"])
def test_painting_an_mpr_plane_changes_the_slices_it_crosses_in_one_step(client, axis):
    image = client.data["disc"]
    view = client.get(f"/api/images/{image}").json()["views"][axis]
    session = client.post("/api/sessions", json={"image_id": image}).json()["session"]
    client.post(f"/api/sessions/{session}/prompts", json={"k": 2, "label": 2, "box": [10, 10, 38, 38]})  # structure 2, locked below
    before = {k: mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": k}).json()) for k in range(6)}
    painted = np.zeros((view["height"], view["width"]), np.uint8)
    painted[:, 5:40] = 1  # every slice of the view, columns 5 to 39
    response = client.put(f"/api/sessions/{session}/planes", json={"axis": axis, "index": 20, "t": 0, "mask": png_data_url(painted),
                                                                  "locked": [2]})
    assert response.status_code == 200, response.text
    shown = mask_of(response.json())
    assert np.array_equal(shown == 1, (painted == 1) & (shown != 2))  # the view shows what was painted, locked pixels kept
    after = {k: mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": k}).json()) for k in range(6)}
    assert all((after[k] == 1).sum() > 0 for k in range(6))  # the plane crosses every slice
    assert all(np.array_equal(after[k] == 2, before[k] == 2) for k in range(6))
    client.post(f"/api/sessions/{session}/undo")  # one step for all of them
    assert all(np.array_equal(mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": k}).json()), before[k]) for k in range(6))
    wrong = client.put(f"/api/sessions/{session}/planes", json={"axis": axis, "index": 20, "mask": png_data_url(painted[:, :10])})
    assert wrong.status_code == 400
    outside = client.put(f"/api/sessions/{session}/planes", json={"axis": axis, "index": 99, "mask": png_data_url(painted)})
    assert outside.status_code == 400 and "outside" in outside.json()["detail"]
