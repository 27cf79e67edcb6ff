"""Propagation through volumes and videos, with a deterministic fake segmenter on a sphere phantom."""

from __future__ import annotations

import numpy as np
import pytest

from fakesegmenter import ThresholdSegmenter
from medfm.errors import MedfmError
from medfm.io.image import Image
from medfm.models.segmenters import Prompt
from medfm.tasks.segment import PropagationRule, measure, propagate, segment

CENTRE, RADIUS = (20, 24, 15), 8  # i, j, k


def _sphere(shape=(40, 48, 30), centre=CENTRE, radius=RADIUS) -> np.ndarray:
    grid = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def _slices(mask: np.ndarray, min_area: int = 10) -> list[int]:
    """Slices k where the (I, J, K) mask has at least ``min_area`` voxels."""
    return [k for k in range(mask.shape[2]) if mask[:, :, k].sum() >= min_area]


@pytest.fixture
def phantom() -> Image:
    return Image(_sphere().astype(np.float32), np.diag([0.5, 0.5, 2.0, 1.0]))


def test_propagation_covers_the_sphere_and_stops_outside(phantom: Image) -> None:
    click = Prompt(points=[(CENTRE[0], CENTRE[1])], point_labels=[1])  # x = i, y = j
    result = propagate(phantom, ThresholdSegmenter(), {CENTRE[2]: [click]})
    labels = result.array[..., 0, 0]
    sphere = _sphere()
    assert result.shape[:4] == phantom.shape[:4] and np.array_equal(result.affine, phantom.affine)
    assert _slices(labels > 0, 1) == _slices(sphere)  # every slice with a sizeable section, no more
    assert labels[sphere].mean() > 0.97 and not labels[~sphere].any()
    record = result.provenance.to_dict()
    assert record["model"] == "fake-threshold" and record["weights_sha256"] == "0" * 64 and record["medfm_version"]
    assert record["prompts"][0]["points"] == [[20, 24]] and record["prompts"][0]["slice_index"] == 15
    assert record["parameters"] == {"axis": "k", "rule": PropagationRule().to_dict()}
    assert [p["slice_index"] for p in record["structures"][0]["planes"]] == _slices(sphere)
    assert measure(result)[0]["volume_mm3"] == pytest.approx((labels > 0).sum() * 0.5 * 0.5 * 2.0)


def test_propagation_stops_on_a_low_score(phantom: Image) -> None:
    class Unsure(ThresholdSegmenter):
        def _decode(self, embedding, prompt, shape):
            prediction = super()._decode(embedding, prompt, shape)
            prediction.score = 0.2 if prompt.mask_input is not None else 1.0  # propagated planes are "unsure"
            return prediction

    result = propagate(phantom, Unsure(), {15: [Prompt(boxes=[(10, 14, 30, 34)])]})
    assert _slices(result.array[..., 0, 0] > 0, 1) == [15]
    assert len(propagate(phantom, Unsure(), {15: [Prompt(boxes=[(10, 14, 30, 34)])]}, rule=PropagationRule(min_score=0.1)).provenance.structures[0]["planes"]) > 10


def test_prompts_on_a_slice_override_propagation_and_reencode_only_what_changed(phantom: Image) -> None:
    segmenter = ThresholdSegmenter()
    first = propagate(phantom, segmenter, {15: [Prompt(points=[(20, 24)], point_labels=[1])]})
    encoded = segmenter.encoded
    # the user corrects slice 19: only the left half there; 20..22 now follow slice 19
    fix = Prompt(boxes=[(12, 16, 20, 32)])
    second = propagate(phantom, segmenter, {15: [Prompt(points=[(20, 24)], point_labels=[1])], 19: [fix]})
    # planes 15..18 keep their windows and come from the cache; 19..22 follow the fix, in new windows
    assert segmenter.encoded - encoded <= 4
    plane = second.array[:, :, 19, 0, 0]
    assert plane[:21].any() and not plane[21:].any()
    assert np.array_equal(first.array[:, :, :18], second.array[:, :, :18])
    assert not np.array_equal(first.array[:, :, 20], second.array[:, :, 20])


def test_several_labels_make_one_label_map() -> None:
    two = _sphere(radius=5) | _sphere(centre=(8, 10, 15), radius=4)
    image = Image(two.astype(np.float32))
    prompts = {15: [Prompt(boxes=[(14, 18, 26, 30)], label=1, label_name="big"),
                    Prompt(points=[(8, 10)], point_labels=[1], label=2, label_name="small")]}
    labels = propagate(image, ThresholdSegmenter(), prompts).array[..., 0, 0]
    assert np.array_equal(np.unique(labels), [0, 1, 2])
    assert np.array_equal(labels == 1, _sphere(radius=5) & (labels > 0))
    assert _slices(labels == 2, 1) == _slices(_sphere(centre=(8, 10, 15), radius=4))


def test_video_propagates_along_frames() -> None:
    frames = np.stack([_sphere((40, 48, 30))[:, :, k] for k in range(30)], axis=2)[:, :, None, :]  # (I, J, 1, T)
    video = Image(frames.astype(np.float32))
    result = propagate(video, ThresholdSegmenter(), {15: [Prompt(points=[(20, 24)], point_labels=[1], frame_index=15)]}, axis="t")
    assert [t for t in range(30) if result.array[:, :, 0, t].sum() >= 1] == _slices(_sphere())


def test_segment_puts_each_prompt_on_its_plane(phantom: Image) -> None:
    result = segment(phantom, [Prompt(boxes=[(10, 14, 30, 34)], slice_index=12), Prompt(points=[(20, 24)], point_labels=[1], slice_index=16, label=3)],
                     ThresholdSegmenter())
    labels = result.array[..., 0, 0]
    assert np.array_equal(labels[:, :, 12] == 1, _sphere()[:, :, 12]) and labels[:, :, 16].max() == 3
    assert not labels[:, :, [11, 13, 15, 17]].any()


def test_bad_planes_and_axes_are_refused(phantom: Image) -> None:
    click = Prompt(points=[(20, 24)], point_labels=[1])
    with pytest.raises(MedfmError, match=r"slice 30 is outside the image \(slices 0 to 29\)"):
        propagate(phantom, ThresholdSegmenter(), {30: [click]})
    with pytest.raises(MedfmError, match="axis must be one of k, t"):
        propagate(phantom, ThresholdSegmenter(), {3: [click]}, axis="z")
    with pytest.raises(MedfmError, match="no prompt given"):
        propagate(phantom, ThresholdSegmenter(), {})
    with pytest.raises(MedfmError, match="filed under slice_index 4 says slice_index 5"):
        propagate(phantom, ThresholdSegmenter(), {4: [Prompt(points=[(1, 1)], point_labels=[1], slice_index=5)]})


def test_propagation_stops_where_the_intensity_changes_though_the_model_keeps_finding_something() -> None:
    # a bright disc on slices 10..14 and a dim disc of the same shape beyond: a box-following
    # model finds a disc on every slice; the structure is only the bright one
    shape, centre = (40, 40, 25), (20, 20)
    grid = np.mgrid[: shape[0], : shape[1]]
    disc = ((grid[0] - centre[0]) ** 2 + (grid[1] - centre[1]) ** 2) <= 36
    volume = np.zeros(shape, np.float32)
    volume[disc, :] = 10.0
    volume[disc, 10:15] = 100.0
    image = Image(volume)

    class FindsTheDisc(ThresholdSegmenter):
        def _decode(self, embedding, prompt, shape):
            prediction = super()._decode(embedding, prompt, shape)
            prediction.mask = embedding > 0  # whatever is not background, bright or dim
            prediction.logits = np.where(prediction.mask, 5.0, -5.0).astype(np.float32)
            prediction.score = 0.95
            return prediction

    box = Prompt(boxes=[(13, 13, 27, 27)])
    kept = propagate(image, FindsTheDisc(), {12: [box]}).array[..., 0, 0]
    assert _slices(kept > 0, 1) == [10, 11, 12, 13, 14]
    leaked = propagate(image, FindsTheDisc(), {12: [box]}, rule=PropagationRule(max_intensity_shift=float("inf"))).array[..., 0, 0]
    assert _slices(leaked > 0, 1) == list(range(25))


@pytest.mark.parametrize("field,value", [("min_score", -1), ("margin", float("nan")), ("context", "2"), ("min_area", True)])
def test_a_bad_rule_is_refused_in_one_line(field: str, value) -> None:
    with pytest.raises(MedfmError, match=f"propagation rule: {field} must be a number >= 0"):
        PropagationRule(**{field: value})
