"""medfm_interactive: the Segmenter contract on generated planes, and the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.eval.seg_metrics import dice
from medfm.models.registry import create_segmenter, list_segmenters
from medfm.models.segmenters.medfm_interactive import (
    BACKGROUND_LOGIT,
    build_medfm_interactive,
)
from medfm.models.segmenters.prompt import Prompt, Scribble

CONFIG = list_segmenters()["medfm-interactive"]


@pytest.fixture(scope="module")
def random_segmenter():
    config = {key: value for key, value in CONFIG.items() if key != "weights"}
    return build_medfm_interactive({"name": "medfm-interactive", **config}, None)


def disk_plane(rows: int = 90, columns: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk on a noisy dark background: ``(rows, columns)`` uint16 plane and bool mask."""
    yy, xx = np.mgrid[0:rows, 0:columns]
    mask = (xx - 50) ** 2 + (yy - 40) ** 2 <= 20**2
    noise = np.random.default_rng(0).normal(0, 30, (rows, columns))
    return (np.where(mask, 900, 300) + noise).astype(np.uint16), mask


def test_every_prompt_kind_gives_plane_sized_logits(random_segmenter):
    plane, mask = disk_plane()
    random_segmenter.set_image(plane)
    prompts = [
        Prompt(points=[(50, 40)], point_labels=[1]),
        Prompt(boxes=[(30, 20, 70, 60)]),
        Prompt(points=[(50, 40), (5, 5)], point_labels=[1, 0], mask_input=mask),
        Prompt(scribbles=[Scribble([(45, 40), (55, 42)]), Scribble(mask=~mask, positive=False)]),
        Prompt(points=[(50, 40)], point_labels=[1], mask_input=np.zeros(mask.shape, np.float32)),
    ]
    logits = []
    for prompt in prompts:
        prediction = random_segmenter.predict(prompt)
        assert prediction.mask.shape == prediction.logits.shape == (90, 120)
        assert prediction.logits.dtype == np.float32
        assert np.array_equal(prediction.mask, prediction.logits > 0)
        assert 0.0 <= prediction.score <= 1.0
        logits.append(prediction.logits)
    # every kind of prompt reaches the decoder: even random weights answer each one differently
    for first in range(len(logits)):
        for second in range(first + 1, len(logits)):
            assert not np.allclose(logits[first], logits[second], atol=1e-4), (first, second)


def test_rgb_planes_and_the_no_image_error(random_segmenter):
    random_segmenter.reset_image()
    with pytest.raises(MedfmError, match="no image set"):
        random_segmenter.predict(Prompt(points=[(1, 1)], point_labels=[1]))
    random_segmenter.set_image(np.zeros((33, 47, 3), np.uint8))
    assert random_segmenter.predict(Prompt(boxes=[(2, 2, 20, 30)])).mask.shape == (33, 47)


def test_shipped_weights_load_verified_and_segment_a_disk():
    segmenter = create_segmenter("medfm-interactive")
    assert segmenter.info.weights_sha256 == CONFIG["weights"]["sha256"]
    plane, mask = disk_plane()
    segmenter.set_image(plane)
    for prompt in (Prompt(boxes=[(29, 19, 71, 61)]), Prompt(points=[(50, 40)], point_labels=[1])):
        predicted = segmenter.predict(prompt).mask
        assert dice(predicted, mask) > 0.85


def small_far_disk(rows: int = 300, columns: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A small bright disk near the top-right corner of a larger noisy RGB plane."""
    yy, xx = np.mgrid[0:rows, 0:columns]
    mask = (xx - 340) ** 2 + (yy - 50) ** 2 <= 14**2
    noise = np.random.default_rng(1).normal(0, 20, (rows, columns, 3))
    return np.clip(np.where(mask[..., None], 190, 60) + noise, 0, 255).astype(np.uint8), mask


def count_encodes(segmenter, monkeypatch) -> list[tuple[int, ...]]:
    """Record the input shape of every encoder run of ``segmenter``."""
    calls: list[tuple[int, ...]] = []
    encode = segmenter.net.encode

    def counted(pictures):
        calls.append(tuple(pictures.shape))
        return encode(pictures)

    monkeypatch.setattr(segmenter.net, "encode", counted)
    return calls


def test_zoom_maps_a_box_on_a_small_far_object_back_onto_the_plane():
    segmenter = create_segmenter("medfm-interactive")
    assert segmenter.zoom
    plane, mask = small_far_disk()
    segmenter.set_image(plane)
    box = segmenter.predict(Prompt(boxes=[(326, 36, 354, 64)]))
    click = segmenter.predict(Prompt(points=[(340, 50)], point_labels=[1]))
    for prediction in (box, click):
        assert prediction.mask.shape == (300, 400)
        assert dice(prediction.mask, mask) > 0.95  # without zoom-in: 0.88 (box) and 0.87 (click)
        # outside the crop around the disk every logit is background
        assert (prediction.logits[150:, :] == BACKGROUND_LOGIT).all() and (prediction.logits[:, :250] == BACKGROUND_LOGIT).all()


def test_crop_encoding_is_reused_by_clicks_inside_it_and_redone_outside(monkeypatch):
    # the shipped weights: the whole-plane decode that locates the object must find the disk, not random noise
    segmenter = create_segmenter("medfm-interactive")
    plane, previous = small_far_disk()  # the true mask stands for the previous one: inside the crop
    segmenter.set_image(plane)
    encodes = count_encodes(segmenter, monkeypatch)
    segmenter.predict(Prompt(boxes=[(326, 36, 354, 64)]))
    assert len(encodes) == 1  # the crop, at the working size
    for points, labels in (([(340, 50)], [1]), ([(340, 50), (330, 40)], [1, 0]), ([(340, 50), (20, 280)], [1, 0])):
        segmenter.predict(Prompt(points=points, point_labels=labels, mask_input=previous))
    assert len(encodes) == 1  # clicks inside the crop, and a negative click far away, decode only
    widened = segmenter.predict(Prompt(points=[(340, 50), (250, 120)], point_labels=[1, 1], mask_input=previous))
    assert len(encodes) == 2  # a positive click outside the crop widens it: encoded once more
    assert (widened.logits[:, :120] == BACKGROUND_LOGIT).all() and (widened.logits[:, 240:] != BACKGROUND_LOGIT).any()


def test_zoom_off_decodes_on_the_whole_plane_exactly_as_before(random_segmenter, monkeypatch):
    import torch
    import torch.nn.functional as F

    from medfm.models.preprocess import prepare_plane, robust_window
    from medfm.models.segmenters.interactive_net import render_prompt_maps

    plane, mask = small_far_disk()
    assert torch.equal(prepare_plane(plane, 128, robust_window(plane)), prepare_plane(plane, 128))
    monkeypatch.setattr(random_segmenter, "zoom", False)
    random_segmenter.set_image(plane)
    encodes = count_encodes(random_segmenter, monkeypatch)
    with torch.inference_mode():
        features = random_segmenter.net.encode(prepare_plane(plane, 128)[None])
        for prompt, maps in (
            (Prompt(boxes=[(326, 36, 354, 64)]), render_prompt_maps(128, mask.shape, boxes=[(326, 36, 354, 64)])),
            (Prompt(points=[(340, 50)], point_labels=[1], mask_input=mask),
             render_prompt_maps(128, mask.shape, np.array([[340.0, 50.0]]), np.array([1]),
                                previous_probability=F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None],
                                                                   size=(128, 128), mode="area")[0, 0].numpy())),
        ):
            expected = F.interpolate(random_segmenter.net.decode(features, maps[None]), size=mask.shape, mode="bilinear",
                                     align_corners=False)[0, 0].numpy()
            assert np.array_equal(random_segmenter.predict(prompt).logits, expected)
    assert len(encodes) == 1  # only the reference's: no crop is encoded with zoom off


@pytest.mark.parametrize(("prompt", "message"), [
    (Prompt(boxes=[(326, 36, 420, 64)]), "extends outside the 400x300 plane"),
    (Prompt(points=[(340, 50)], point_labels=[1], mask_input=np.zeros((10, 10), bool)), "mask_input has shape"),
    (Prompt(points=[(340, 50)], point_labels=[]), "1 points but 0 point labels"),
])
def test_bad_prompts_are_refused_in_one_line_with_zoom_on(random_segmenter, prompt, message):
    assert random_segmenter.zoom
    random_segmenter.set_image(small_far_disk()[0])
    with pytest.raises(MedfmError, match=message) as refused:
        random_segmenter.predict(prompt)
    assert "\n" not in str(refused.value)
