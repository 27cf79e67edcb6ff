"""medfm.tasks.embed: one embedding per image, plane aggregation, batching and the on-disk cache."""

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from medfm.errors import MedfmError
from medfm.io import Image, load, save
from medfm.models.encoders.base import Encoder
from medfm.models.encoders.planes import MAX_PLANES, embed_image, sample_planes, to_rgb_uint8
from medfm.models.encoders.timm import build_timm
from medfm.tasks.embed import embed_paths


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A tiny timm backbone with saved (so hashed, so cacheable) random weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, path)
    return build_timm({"name": "tiny-resnet", "family": "timm", "architecture": "test_resnet"}, path)


class Counting(Encoder):
    """Passes through to another encoder, counting the planes it is asked to encode."""

    def __init__(self, inner: Encoder) -> None:
        self.inner, self.info, self.planes, self.calls = inner, inner.info, 0, []

    def encode_planes(self, planes):
        self.planes += len(planes)
        self.calls.append(len(planes))
        return self.inner.encode_planes(planes)


def volume(slices: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 30, (48, 40, slices)).astype(np.float32)


def unit_mean(rows: np.ndarray) -> np.ndarray:
    mean = rows.mean(axis=0)
    return mean / np.linalg.norm(mean)


def test_2d_image_is_its_one_plane(encoder):
    image = Image(volume(1)[:, :, 0])
    np.testing.assert_allclose(embed_image(image, encoder), encoder.encode_planes([image.frame()])[0], atol=1e-6)


def test_volume_is_the_renormalised_mean_of_evenly_spaced_slices(encoder):
    image = Image(volume(40))
    planes = sample_planes(image)
    assert len(planes) == MAX_PLANES
    # centres of 16 equal runs of 40 slices: 1, 3, 6, ... 38 -- never the first or the last slice
    chosen = [int((i + 0.5) * 40 / 16) for i in range(16)]
    assert chosen[0] == 1 and chosen[-1] == 38
    for plane, k in zip(planes, chosen):
        np.testing.assert_array_equal(plane, image.frame(k))
    expected = unit_mean(encoder.encode_planes([image.frame(k) for k in chosen]))
    embedding = embed_image(image, encoder)
    assert embedding.shape == (encoder.info.embed_dim,) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, expected, atol=1e-5)
    # fewer slices than the limit: all of them
    small = Image(volume(3))
    np.testing.assert_allclose(embed_image(small, encoder),
                               unit_mean(encoder.encode_planes([small.frame(k) for k in range(3)])), atol=1e-5)


def test_video_frames_are_aggregated_like_slices(encoder):
    frames = np.random.default_rng(2).integers(0, 256, (32, 24, 1, 5, 3), dtype=np.uint8)
    image = Image(frames)
    expected = unit_mean(encoder.encode_planes([image.frame(0, t) for t in range(5)]))
    np.testing.assert_allclose(embed_image(image, encoder, max_planes=8), expected, atol=1e-5)
    assert len(sample_planes(image, max_planes=2)) == 2


def test_window_scales_before_the_encoder(encoder):
    ct = Image(np.random.default_rng(3).integers(-1024, 2000, (40, 40, 2)).astype(np.int16))
    windowed = embed_image(ct, encoder, window=(-160, 240))
    by_hand = [to_rgb_uint8(ct.frame(k), (-160, 240)) for k in range(2)]
    np.testing.assert_allclose(windowed, unit_mean(encoder.encode_planes(by_hand)), atol=1e-5)
    assert not np.allclose(windowed, embed_image(ct, encoder), atol=1e-3)


def test_to_rgb_uint8_rule():
    plane = np.array([[0.0, 0.5], [np.nan, 2.0]])
    np.testing.assert_array_equal(to_rgb_uint8(plane)[:, :, 0], [[0, 64], [0, 255]])
    np.testing.assert_array_equal(to_rgb_uint8(np.full((2, 2), 7, np.int16)), np.zeros((2, 2, 3), np.uint8))
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[-2000, 0, 80, 3000]]), (-160, 240))[0, :, 0],
                                  [0, 102, 153, 255])
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb_uint8(rgba).max() == 0


def test_embed_paths_batches_across_files_and_matches_embed_image(encoder, tmp_path):
    paths = [save(Image(volume(1, seed=4)[:, :, 0]), tmp_path / "one.nii.gz"),
             save(Image(volume(20, seed=5)), tmp_path / "ct.nii.gz"),
             save(Image(np.random.default_rng(6).integers(0, 256, (30, 20, 1, 1, 3), np.uint8)),
                  tmp_path / "photo.png")]
    counting = Counting(encoder)
    seen = []
    embeddings = embed_paths(paths, counting, batch_size=8, cache=False,
                             progress=lambda done, total: seen.append((done, total)))

    assert embeddings.shape == (3, encoder.info.embed_dim)
    for row, path in zip(embeddings, paths):
        np.testing.assert_allclose(row, embed_image(load(path), encoder), atol=1e-5)
    assert counting.planes == 1 + 16 + 1 and max(counting.calls) <= 8
    assert seen[-1] == (3, 3) and [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_cache_by_content_hash(encoder, tmp_path):
    cache = tmp_path / "cache"
    first = save(Image(volume(4, seed=7)), tmp_path / "a.nii.gz")
    second = save(Image(volume(4, seed=8)), tmp_path / "b.nrrd")
    counting = Counting(encoder)
    embeddings = embed_paths([first, second], counting, cache=cache)
    assert counting.planes == 8
    stored = sorted(cache.rglob("*.npy"))
    assert len(stored) == 2 and not list(cache.rglob(".medfm-tmp-*"))

    again = Counting(encoder)
    np.testing.assert_array_equal(embed_paths([second, first], again, cache=cache), embeddings[::-1])
    assert again.planes == 0

    # a copy under another name hits; changed content or other settings miss
    copy = tmp_path / "copy.nii.gz"
    copy.write_bytes(first.read_bytes())
    save(Image(volume(4, seed=9)), second)
    third = Counting(encoder)
    result = embed_paths([copy, second], third, cache=cache)
    np.testing.assert_array_equal(result[0], embeddings[0])
    assert third.planes == 4 and not np.allclose(result[1], embeddings[1])
    fourth = Counting(encoder)
    embed_paths([first], fourth, cache=cache, max_planes=2)
    assert fourth.planes == 2


def test_random_weights_are_never_cached(tmp_path):
    random = build_timm({"name": "tiny-random", "family": "timm", "architecture": "test_resnet"}, None)
    path = save(Image(volume(1)[:, :, 0]), tmp_path / "a.nii.gz")
    embed_paths([path], random, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_bad_inputs_are_one_line_errors_naming_the_file(encoder, tmp_path):
    two_channels = save(Image(np.zeros((8, 8, 1, 1, 2), np.float32)), tmp_path / "two.nii.gz")
    with pytest.raises(MedfmError) as error:
        embed_paths([two_channels], encoder, cache=False)
    assert str(error.value).startswith(f"{two_channels}: a plane must be") and "\n" not in str(error.value)

    with pytest.raises(MedfmError, match=r"missing\.png: no such file"):
        embed_paths([tmp_path / "missing.png"], encoder, cache=tmp_path / "cache")
    with pytest.raises(MedfmError, match="empty plane"):
        embed_image(Image(np.zeros((0, 4), np.float32)), encoder)
    with pytest.raises(MedfmError, match="window must be"):
        embed_image(Image(np.zeros((4, 4), np.float32)), encoder, window=(10, 10))
    with pytest.raises(MedfmError, match="batch_size must be at least 1"):
        embed_paths([], encoder, batch_size=0)
