"""A tiny deterministic segmenter for tests: bright pixels inside the prompt's boxes.

It implements the real :class:`Segmenter` interface (so the base class's checks, cache
and errors are exercised) and counts how many planes it had to encode.
"""

from __future__ import annotations

import numpy as np
import pytest

from medfm.models import registry
from medfm.models.segmenters import Prediction, Prompt, Segmenter, SegmenterInfo


class ThresholdSegmenter(Segmenter):
    """Pixels above ``threshold`` inside the union of the boxes (x1, y1 inclusive), else
    within ``reach`` pixels of a positive point or scribble pixel; score 1 when any."""

    def __init__(self, threshold: float = 0.5, reach: int = 6) -> None:
        super().__init__(SegmenterInfo("fake-threshold", "0" * 64))
        self.threshold, self.reach, self.encoded = threshold, reach, 0

    def _encode(self, plane: np.ndarray) -> np.ndarray:
        self.encoded += 1
        return plane.astype(np.float64) if plane.ndim == 2 else plane.astype(np.float64).mean(axis=2)

    def _decode(self, embedding: np.ndarray, prompt: Prompt, shape: tuple[int, int]) -> Prediction:
        region = np.zeros(shape, bool)
        for x0, y0, x1, y1 in prompt.boxes:
            region[int(np.ceil(y0)):int(y1) + 1, int(np.ceil(x0)):int(x1) + 1] = True
        clicks = [p for p, label in zip(prompt.points, prompt.point_labels) if label == 1]
        clicks += [p for s in prompt.scribbles if s.positive for p in s.sample_points(shape)]
        if not prompt.boxes:
            for x, y in clicks:
                r, c = int(round(y)), int(round(x))
                region[max(r - self.reach, 0):r + self.reach + 1, max(c - self.reach, 0):c + self.reach + 1] = True
        mask = region & (embedding > self.threshold)
        return Prediction(mask, np.where(mask, 1.0, -1.0).astype(np.float32), float(mask.any()))


@pytest.fixture
def fake_segmenter(monkeypatch):
    """``create_segmenter("fake-threshold")`` builds a :class:`ThresholdSegmenter`."""
    monkeypatch.setitem(registry._BUILDERS, "test_threshold", lambda config, weights: ThresholdSegmenter())
    monkeypatch.setattr(registry, "list_segmenters", lambda: {"fake-threshold": {"family": "test_threshold", "kind": "segmenter"}})
    yield
