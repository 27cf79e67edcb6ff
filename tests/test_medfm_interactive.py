"""medfm_interactive: the Segmenter contract on generated planes, and the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.eval.seg_metrics import dice
from medfm.models.registry import create_segmenter, list_segmenters
from medfm.models.segmenters.medfm_interactive import build_medfm_interactive
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
