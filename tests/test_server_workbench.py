"""The workbench v2 API: raw planes for windowing in the browser, reformatted (MPR) views,
opening windows, edited planes with locks, filled holes and ROI statistics."""

from __future__ import annotations


import numpy as np
import pytest
from pydicom.dataset import Dataset
from servertools import disc_volume, make_client, make_data, mask_of, png_data_url, wait_for_job

from medfm.io import Image
from medfm.io.dicom.scan import describe
from medfm.io.windowing import initial_window
from medfm.server.display import Display, first_content_frame, raw_plane


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("workbench-api")
    return {"root": root, **make_data(root)}


@pytest.fixture(scope="module")
def client(data: dict):
    with make_client(data["root"], data["url"]) as client:
        yield client


def raw(client, image_id: int, **params) -> np.ndarray:
    response = client.get(f"/api/images/{image_id}/raw", params=params)
    assert response.status_code == 200, response.text
    height, width = (int(v) for v in response.headers["x-medfm-shape"].split(","))
    dtype = {"int16": "<i2", "uint16": "<u2", "float32": "<f4"}[response.headers["x-medfm-dtype"]]
    return np.frombuffer(response.content, dtype).reshape(height, width)


# ---- windows and raw planes -----------------------------------------------------------------

def test_a_dicom_header_window_comes_first_then_the_modality_preset_then_percentiles():
    header = Dataset()
    header.WindowCenter = ["-600", "40"]
    header.WindowWidth = ["1500", "400"]
    metadata, _ = describe(header)
    assert initial_window(Image(np.zeros((4, 4, 2)), modality="CT", metadata=metadata)) == (-600.0, 1500.0, "header")
    assert initial_window(Image(np.zeros((4, 4, 2)), modality="CT")) == (40.0, 400.0, "preset")
    center, width, source = initial_window(Image(np.arange(64.0).reshape(4, 4, 4), modality="MR"))
    assert source == "auto" and 0 < width < 64 and 0 < center < 63


def test_raw_plane_is_the_display_plane_in_the_images_units(client, data):
    details = client.get(f"/api/images/{data['ct']}").json()
    assert details["units"] == "HU" and details["window"] == {"center": 40.0, "width": 400.0, "source": "preset"}
    auto = details["auto_window"]  # the window from the values: it spans air to bone
    assert auto["center"] - auto["width"] / 2 < -500 and auto["center"] + auto["width"] / 2 > 500
    plane = raw(client, data["ct"], index=1)
    from medfm.io import load

    image = load(data["root"] / "images" / "ct")
    expected = Display.of(image).plane_to_display(image.frame(1, 0))
    assert plane.shape == (details["display"]["height"], details["display"]["width"])
    np.testing.assert_array_equal(plane, expected)  # HU values, not 8-bit grey
    assert plane.min() < -500 and plane.max() > 500
    disc = raw(client, data["disc"], axis="k", index=1)
    assert disc.dtype == np.float32 and set(np.unique(disc)) == {10.0, 200.0}


def test_raw_planes_refuse_colour_images_and_planes_outside(client, data):
    assert "colour" in client.get(f"/api/images/{data['photo']}/raw").json()["detail"]
    assert client.get(f"/api/images/{data['disc']}/raw", params={"index": 99}).status_code == 400
    assert "axis" in client.get(f"/api/images/{data['disc']}/raw", params={"axis": "x"}).json()["detail"]


def test_a_video_starts_on_its_first_frame_that_is_not_blank():
    frames = np.zeros((32, 24, 1, 10, 3), np.uint8)
    frames[..., :2, :] = 7  # a uniform grey lead-in is blank too
    frames[5:9, 5:9, 0, 4:] = 200
    assert first_content_frame(Image(frames)) == 4
    assert first_content_frame(Image(np.zeros((8, 8, 1, 3)))) == 0


# ---- MPR --------------------------------------------------------------------------------------

def test_views_from_the_affine_have_names_letters_and_spacing(client, data):
    views = client.get(f"/api/images/{data['disc']}").json()["views"]  # a RAS NIfTI, spacing 1, 1, 2
    assert {axis: view["name"] for axis, view in views.items()} == {"k": "axial", "j": "coronal", "i": "sagittal"}
    assert views["k"]["letters"] == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    assert views["j"]["letters"] == {"right": "L", "left": "R", "bottom": "I", "top": "S"}
    assert views["i"]["letters"] == {"right": "P", "left": "A", "bottom": "I", "top": "S"}
    assert views["j"]["spacing"] == [1.0, 2.0] and (views["j"]["width"], views["j"]["height"]) == (48, 6)
    photo = client.get(f"/api/images/{data['photo']}").json()
    assert list(photo["views"]) == ["k"] and photo["views"]["k"]["letters"] is None


def test_reformatted_planes_agree_with_the_volume():
    volume = np.arange(4 * 3 * 5, dtype=np.int16).reshape(4, 3, 5)
    image = Image(volume, np.eye(4))
    coronal = Display.of(image, axis=1)
    data, dtype = raw_plane(image, coronal, 2, 0)
    plane = np.frombuffer(data, "<i2").reshape(coronal.height, coronal.width)
    assert dtype == "int16" and plane.shape == (5, 4)
    np.testing.assert_array_equal(plane, volume[::-1, 2, ::-1].T)  # superior up, patient's left on the right


def test_the_mask_shows_in_reformatted_planes(client, data):
    session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
    painted = np.zeros((48, 48), np.uint8)
    painted[10:20, 30:40] = 3
    assert client.put(f"/api/sessions/{session}/planes", json={"k": 2, "mask": png_data_url(painted)}).status_code == 200
    coronal = client.get(f"/api/sessions/{session}/mask", params={"axis": "j", "index": 48 - 1 - 15}).json()
    labels = mask_of(coronal)
    assert labels.shape == (6, 48)
    assert set(np.unique(labels)) == {0, 3} and (labels == 3).sum() == 10  # one row of the square, on slice 2 only
    assert np.nonzero((labels == 3).any(axis=1))[0].tolist() == [6 - 1 - 2]


# ---- editing ---------------------------------------------------------------------------------

def test_a_painted_plane_is_one_undoable_step_and_locked_structures_stay(client, data):
    session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
    first = np.zeros((48, 48), np.uint8)
    first[5:15, 5:15] = 1
    state = client.put(f"/api/sessions/{session}/planes", json={"k": 1, "mask": png_data_url(first)}).json()
    np.testing.assert_array_equal(mask_of(state), first)
    assert state["can_undo"] and state["labels"]["1"]["name"] == "label 1"
    # structure 1 locked: a brush of structure 2 over it and an eraser on it change nothing of it
    second = first.copy()
    second[0:10, 0:10] = 2
    second[12:15, 12:15] = 0
    state = client.put(f"/api/sessions/{session}/planes", json={"k": 1, "mask": png_data_url(second), "locked": [1]}).json()
    shown = mask_of(state)
    assert (shown == 1).sum() == 100 and (shown == 2).sum() == 100 - 25
    # a prompt on a locked structure is refused; a prompt for another one leaves it alone
    refused = client.post(f"/api/sessions/{session}/prompts",
                          json={"k": 1, "label": 1, "points": [[24, 24]], "point_labels": [1], "locked": [1]})
    assert refused.status_code == 400 and "locked" in refused.json()["detail"]
    state = client.post(f"/api/sessions/{session}/prompts",
                        json={"k": 1, "label": 4, "box": [0, 0, 47, 47], "locked": [1]}).json()
    assert (mask_of(state) == 1).sum() == 100
    for expected in (shown, first):
        state = client.post(f"/api/sessions/{session}/undo").json()
        assert "mask" in state, state
        np.testing.assert_array_equal(mask_of(state), expected)


def test_propagation_leaves_locked_structures_alone(client, data):
    session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
    centre = np.zeros((48, 48), np.uint8)
    centre[20:28, 20:28] = 2  # inside the disc on every slice but the one prompted
    for k in (0, 1, 3, 4, 5):
        client.put(f"/api/sessions/{session}/planes", json={"k": k, "mask": png_data_url(centre)})
    client.post(f"/api/sessions/{session}/prompts", json={"k": 2, "label": 1, "points": [[24, 24]], "point_labels": [1]})
    refused = client.post(f"/api/sessions/{session}/propagate", json={"label": 1, "locked": [1]})
    assert refused.status_code == 400 and "locked" in refused.json()["detail"]
    wait_for_job(client, client.post(f"/api/sessions/{session}/propagate", json={"label": 1, "locked": [2]}).json()["job"])
    for k in (0, 4):
        plane = mask_of(client.get(f"/api/sessions/{session}/mask", params={"k": k}).json())
        assert (plane == 2).sum() == 64 and (plane == 1).sum() > 0  # carried around the locked square, not over it


def test_fill_holes_and_refusals_of_bad_masks(client, data):
    session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
    ring = np.zeros((48, 48), np.uint8)
    ring[10:30, 10:30] = 1
    ring[15:25, 15:25] = 0
    client.put(f"/api/sessions/{session}/planes", json={"k": 0, "mask": png_data_url(ring)})
    state = client.post(f"/api/sessions/{session}/fill-holes", json={"k": 0, "label": 1}).json()
    assert state["filled"] == 100 and (mask_of(state) == 1).sum() == 400
    wrong = client.put(f"/api/sessions/{session}/planes", json={"k": 0, "mask": png_data_url(np.zeros((10, 10)))})
    assert wrong.status_code == 400 and "10x10" in wrong.json()["detail"]
    junk = client.put(f"/api/sessions/{session}/planes", json={"k": 0, "mask": "data:image/png;base64,AAAA"})
    assert junk.status_code == 400 and "PNG" in junk.json()["detail"]


# ---- measurements --------------------------------------------------------------------------------

def test_roi_statistics_in_the_images_units(client, data):
    session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
    square = np.zeros((48, 48), np.uint8)
    square[0:4, 0:5] = 1  # a corner: background only (value 10)
    for k in (0, 1, 2):
        client.put(f"/api/sessions/{session}/planes", json={"k": k, "mask": png_data_url(square)})
    stats = client.get(f"/api/sessions/{session}/measure", params={"label": 1, "k": 1}).json()
    assert stats["plane"] == {"voxels": 20, "mean": 10.0, "sd": 0.0, "area_mm2": 20.0}
    assert stats["structure"]["voxels"] == 60 and stats["structure"]["volume_ml"] == pytest.approx(60 * 2 / 1000)
    centre = np.zeros((48, 48), np.uint8)
    centre[22:26, 22:26] = 1
    client.put(f"/api/sessions/{session}/planes", json={"k": 3, "mask": png_data_url(centre)})
    stats = client.get(f"/api/sessions/{session}/measure", params={"label": 1, "k": 3}).json()
    assert stats["plane"]["mean"] == pytest.approx(disc_volume()[22:26, 22:26, 3].mean())
    assert stats["structure"]["mean"] == pytest.approx((60 * 10 + 16 * 200) / 76)
    empty = client.get(f"/api/sessions/{session}/measure", params={"label": 1, "k": 5}).json()
    assert empty["plane"] == {"voxels": 0, "mean": None, "sd": None, "area_mm2": 0.0}
