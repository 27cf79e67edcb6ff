"""Smoke tests of interactive training on generated shapes (no shared data)."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from medfm.models.segmenters.interactive_net import PROMPT_CHANNELS, InteractiveNet
from medfm.train.interactive import SIZE, augment, build_cache, first_prompt, generate_shape, train


def test_generated_shapes_are_pictures_with_an_object():
    picture, mask = generate_shape(np.random.default_rng(3))
    assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and 30 < mask.sum() < SIZE * SIZE * 0.8


def test_first_prompts_and_augmentation_keep_the_object():
    rng = np.random.default_rng(0)
    _, mask = generate_shape(rng)
    for _ in range(30):
        prompt = first_prompt(mask, rng)
        assert prompt["box"] is not None or prompt["points"] or prompt["positive"] is not None
        for (x, y), label in zip(prompt["points"], prompt["labels"]):
            assert mask[int(y), int(x)] == bool(label)
    pictures = torch.rand(4, 3, SIZE, SIZE)
    masks = torch.from_numpy(np.stack([mask] * 4).astype(np.float32))[:, None]
    out_pictures, out_masks = augment(pictures, masks, rng)
    assert out_pictures.shape == pictures.shape and out_masks.shape == masks.shape
    assert (out_masks.flatten(1).sum(1) >= 16).all()


def test_decoder_takes_cached_features_and_prompt_maps():
    net = InteractiveNet(widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1)).eval()
    features = net.encode(torch.rand(2, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4]
    assert net.decode(features, torch.zeros(2, PROMPT_CHANNELS, 64, 64)).shape == (2, 1, 32, 32)


def test_training_runs_checkpoints_and_resumes(tmp_path):
    torch.set_num_threads(1)
    cache = build_cache(None, tmp_path / "cache.npz", shapes=12)
    assert cache["pictures"].shape == (12, SIZE, SIZE, 3) and not cache["is_val"].any()
    out = tmp_path / "run"
    train(out, minutes=0.03, resume=False, cache_path=tmp_path / "cache.npz", data_root=None, batch_size=2, log=lambda _: None)
    first = torch.load(out / "checkpoint.pt", weights_only=False)
    assert first["step"] >= 1
    train(out, minutes=0.06, resume=True, cache_path=tmp_path / "cache.npz", data_root=None, batch_size=2, log=lambda _: None)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] > first["step"]
    weights = load_file(out / "medfm-interactive.safetensors")
    assert set(weights) == set(InteractiveNet().state_dict())
