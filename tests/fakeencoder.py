"""A tiny image-text encoder for tests, and a way to reach it through the model registry.

Images: two brightness features (so that "bright" and "dark" prompts can be told apart)
beside a fixed random projection of the plane downsampled to 8x8. Text: the same two
features for the words "bright" / "dark", plus a hashed bag of words. No trained weights.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.models import registry
from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.models.encoders.planes import check_plane

DIM = 32


class FakeEncoder(Encoder):
    def __init__(self, name: str = "fake-clip", seed: int = 0) -> None:
        self.info = EncoderInfo(name, DIM, hashlib.sha256(f"{name}{seed}".encode()).hexdigest(), has_text=True)
        self.projection = np.random.default_rng(seed).standard_normal((64, DIM - 2)).astype(np.float32)

    def encode_planes(self, planes):
        rows = []
        for plane in planes:
            plane = check_plane(plane).astype(np.float32)
            grey = plane.mean(axis=2) if plane.ndim == 3 else plane
            ys = np.linspace(0, grey.shape[0] - 1, 8).astype(int)
            xs = np.linspace(0, grey.shape[1] - 1, 8).astype(int)
            small = grey[np.ix_(ys, xs)].reshape(-1) / 255.0
            brightness = float(grey.mean()) / 255.0
            rows.append(np.r_[3 * brightness, 3 * (1 - brightness), 0.3 * (small - small.mean()) @ self.projection])
        rows = np.asarray(rows, np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def encode_text(self, texts):
        rows = np.zeros((len(texts), DIM), np.float32)
        for row, text in enumerate(texts):
            words = text.lower().split()
            rows[row, 0] = 3.0 * ("bright" in words)
            rows[row, 1] = 3.0 * ("dark" in words)
            for word in words:
                rows[row, 2 + int(hashlib.md5(word.encode()).hexdigest(), 16) % (DIM - 2)] += 0.2
        if not np.all(rows.any(axis=1)):
            raise MedfmError("empty text")
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def fake_models(tmp_path_factory, monkeypatch):
    """``create_encoder("fake-clip")`` and ``create_encoder("other-clip")`` build FakeEncoders (other seeds)."""
    folder = tmp_path_factory.mktemp("configs")
    for name, seed in (("fake-clip", 0), ("other-clip", 1)):
        (folder / f"{name}.json").write_text(json.dumps({"family": "test_fake", "seed": seed}))
    monkeypatch.setattr(registry, "CONFIG_DIR", folder)
    monkeypatch.setitem(registry._BUILDERS, "test_fake", lambda config, weights: FakeEncoder(config["name"], config["seed"]))
    registry.reload_configs()  # neither the fake configs beyond the test, nor the real ones into it
    yield
    registry.reload_configs()
