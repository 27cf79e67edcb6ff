"""The prompt schema and the Segmenter contract: round trips, world coordinates, one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fakesegmenter import ThresholdSegmenter
from medfm.errors import MedfmError
from medfm.io.image import Image
from medfm.models.segmenters import Prompt, Scribble

PLANE = np.zeros((30, 40), np.float32)  # (rows, columns)
PLANE[10:20, 5:25] = 1.0


def _ready() -> ThresholdSegmenter:
    segmenter = ThresholdSegmenter()
    segmenter.set_image(PLANE)
    return segmenter


def test_prompt_json_round_trip_keeps_every_field_and_array() -> None:
    prompt = Prompt(
        points=[(3.5, 4.0)], point_labels=[0], boxes=[(1.0, 2.0, 9.0, 8.0)],
        scribbles=[Scribble(points=[(0, 0), (5, 3)], positive=False), Scribble(mask=np.eye(4, dtype=bool))],
        mask_input=np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4), label=3, label_name="liver",
        slice_index=7, frame_index=2,
    )
    back = Prompt.from_json(prompt.to_json())
    assert back.to_json() == prompt.to_json()
    assert back.points == [(3.5, 4.0)] and back.boxes == [(1.0, 2.0, 9.0, 8.0)] and back.label_name == "liver"
    assert np.array_equal(back.mask_input, prompt.mask_input) and back.mask_input.dtype == np.float32
    assert np.array_equal(back.scribbles[1].mask, np.eye(4, dtype=bool)) and back.scribbles[0].positive is False


def test_from_world_maps_ras_millimetres_through_the_affine() -> None:
    affine = np.array([[-0.5, 0, 0, 10], [0, -0.5, 0, 20], [0, 0, 2.0, -30], [0, 0, 0, 1]])
    image = Image(np.zeros((40, 30, 12)), affine)
    world = [affine @ [4, 6, 5, 1], affine @ [10.5, 2, 5.2, 1]]
    prompt = Prompt.from_world([w[:3] for w in world], image, label=2)
    assert prompt.points == [(4.0, 6.0), (10.5, 2.0)] and prompt.point_labels == [1, 1]
    assert prompt.slice_index == 5 and prompt.label == 2
    with pytest.raises(MedfmError, match="several slices"):
        Prompt.from_world([(affine @ [1, 1, 1, 1])[:3], (affine @ [1, 1, 3, 1])[:3]], image)
    with pytest.raises(MedfmError, match="outside the image"):
        Prompt.from_world([(affine @ [45, 1, 1, 1])[:3]], image)


def test_scribble_points_follow_the_stroke() -> None:
    stroke = Scribble(points=[(0, 0), (20, 0), (20, 10)])
    drawn = stroke.to_mask((15, 25))
    assert drawn[0, :21].all() and drawn[:11, 20].all() and drawn.sum() == 31
    clicks = stroke.sample_points((15, 25), count=5)
    assert clicks[0] == (0.0, 0.0) and clicks[-1] == (20.0, 10.0) and len(clicks) == 5


def test_predict_before_set_image_is_a_clear_error() -> None:
    with pytest.raises(MedfmError, match=r"no image set; call set_image"):
        ThresholdSegmenter().predict(Prompt(points=[(1, 1)], point_labels=[1]))
    segmenter = _ready()
    segmenter.reset_image()
    with pytest.raises(MedfmError, match="no image set"):
        segmenter.predict(Prompt(points=[(1, 1)], point_labels=[1]))


def test_embeddings_are_cached_by_content() -> None:
    segmenter = _ready()
    segmenter.set_image(PLANE.copy())  # same content, another array
    assert segmenter.encoded == 1
    segmenter.set_image(PLANE + 1)
    segmenter.set_image(PLANE)
    assert segmenter.encoded == 2
    prediction = segmenter.predict(Prompt(boxes=[(0, 0, 39, 29)]))
    assert prediction.mask.shape == (30, 40) and prediction.mask.sum() == 200 and prediction.logits.dtype == np.float32


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (Prompt(), "empty prompt"),
        (Prompt(points=[(40, 5)], point_labels=[1]), r"point \(40, 5\) is outside the 40x30 plane"),
        (Prompt(points=[(5, -1)], point_labels=[1]), "outside"),
        (Prompt(points=[(float("nan"), 5)], point_labels=[1]), "outside"),
        (Prompt(points=[(5, 5)], point_labels=[]), "1 points but 0 point labels"),
        (Prompt(points=[(5, 5)], point_labels=[2]), "must be 1 .positive. or 0"),
        (Prompt(boxes=[(5, 5, 5, 20)]), "zero-area box"),
        (Prompt(boxes=[(9, 5, 2, 20)]), "reversed"),
        (Prompt(boxes=[(0, 0, 40, 29)]), "extends outside"),
        (Prompt(scribbles=[Scribble(mask=np.ones((29, 40), bool))]), r"scribble mask has shape \(29, 40\); the plane is \(30, 40\)"),
        (Prompt(scribbles=[Scribble(mask=np.zeros((30, 40), bool))]), "scribble mask is empty"),
        (Prompt(scribbles=[Scribble(points=[(1, 1), (50, 1)])]), "scribble point"),
        (Prompt(boxes=[(0, 0, 9, 9)], mask_input=np.zeros((3, 3))), "mask_input has shape"),
        (Prompt(boxes=[(0, 0, 9, 9)], label=0), "label must be an integer from 1"),
    ],
)
def test_bad_prompts_are_refused_in_one_line(prompt: Prompt, message: str) -> None:
    with pytest.raises(MedfmError, match=message) as caught:
        _ready().predict(prompt)
    assert "\n" not in str(caught.value)


def test_bad_planes_are_refused() -> None:
    with pytest.raises(MedfmError, match="a plane must be"):
        ThresholdSegmenter().set_image(np.zeros((4, 4, 2)))
