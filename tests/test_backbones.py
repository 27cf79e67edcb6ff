"""The KAN (MedViTV2-style) and DCT-attention (DCT-HistoTransformer-style) ViT backbones: their blocks
against hand-computed values, their place in timm's ViT, and pretraining them into an encoder folder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from medfm.errors import MedfmError
from medfm.models import create_encoder
from medfm.models.encoders.backbone import ARCHITECTURES, Backbone, DEFAULT_INPUT
from medfm.models.encoders.dct_attention import DctAttention, dct_matrix, low_frequencies
from medfm.models.encoders.kan import KanLinear, KanMlp
from medfm.train.pretrain import pretrain
from medfm.train.pretrain_data import pretraining_inputs


def test_the_dct_matrix_is_scipys_orthonormal_dct_ii():
    x = np.random.default_rng(0).normal(size=7)
    np.testing.assert_allclose(dct_matrix(7).double().numpy() @ x, scipy.fft.dct(x, norm="ortho"), atol=1e-6)
    np.testing.assert_allclose(dct_matrix(7) @ dct_matrix(7).T, np.eye(7), atol=1e-6)


def test_low_frequencies_of_a_token_map():
    tokens = torch.randn(2, 64, 5)
    low = low_frequencies(tokens, 3)
    grid = tokens.view(2, 8, 8, 5).numpy()
    expected = scipy.fft.dctn(grid, axes=(1, 2), norm="ortho")[:, :3, :3].reshape(2, 9, 5)
    np.testing.assert_allclose(low.numpy(), expected, atol=1e-5)
    # a pattern of frequency (6, 7) never reaches the keys and values of the lowest 4 x 4
    pattern = torch.outer(dct_matrix(8)[6], dct_matrix(8)[7]).reshape(1, 64, 1).expand(2, 64, 5)
    torch.testing.assert_close(low_frequencies(tokens + 3 * pattern, 4), low_frequencies(tokens, 4), atol=1e-5, rtol=0)
    assert not torch.allclose(low_frequencies(tokens + 3 * pattern, 8), low_frequencies(tokens, 8), atol=1e-2)
    with pytest.raises(MedfmError, match="square grid of patch tokens; got 50 tokens"):
        low_frequencies(torch.randn(1, 50, 5), 2)


def test_dct_attention_output_and_its_refusal_of_masks():
    attention = DctAttention(12, num_heads=3)
    assert attention(torch.randn(2, 49, 12)).shape == (2, 49, 12)
    with pytest.raises(MedfmError, match="takes no mask"):
        attention(torch.randn(1, 49, 12), is_causal=True)


def test_kan_linear_is_a_sum_of_gaussian_bumps_on_the_normalised_input():
    layer = KanLinear(2, 1, grid_size=4)  # grid -2, -2/3, 2/3, 2: bump width 3/4
    with torch.no_grad():
        layer.base.weight.zero_()
        layer.base.bias.zero_()
        layer.spline.weight.zero_()
        layer.spline.weight[0, 2] = 1.0  # feature 0, grid point 2/3
    x = torch.tensor([[3.0, 1.0]])  # layer-normalised: [1, -1]
    assert layer(x).item() == pytest.approx(math.exp(-((1 - 2 / 3) * 0.75) ** 2), rel=1e-4)
    assert KanMlp(8, 16)(torch.randn(3, 5, 8)).shape == (3, 5, 8)


@pytest.mark.parametrize("arch", ["kan-vit-tiny", "dct-vit-tiny"])
def test_the_new_backbones_are_timm_vits_with_their_blocks(arch):
    from timm.models.vision_transformer import VisionTransformer

    backbone = Backbone(arch, **DEFAULT_INPUT)
    assert isinstance(backbone.trunk, VisionTransformer) and ARCHITECTURES[arch]["width"] == backbone.embed_dim
    block = backbone.trunk.blocks[0]
    assert isinstance(block.mlp if arch == "kan-vit-tiny" else block.attn, KanMlp if arch == "kan-vit-tiny" else DctAttention)
    assert backbone(torch.rand(2, 3, 112, 112)).shape == (2, 192)
    assert backbone.masks_tokens == (arch == "kan-vit-tiny")


def images(folder, count=6):
    from PIL import Image as PILImage

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in range(count):
        PILImage.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"i{n}.png")
    return folder


def test_mae_pretrains_the_kan_vit_and_refuses_the_dct_vit(tmp_path):
    data = pretraining_inputs(images(tmp_path / "data"))
    pretrain(data, tmp_path / "kan", method="mae", arch="kan-vit-tiny", batch_size=4, max_steps=1)
    encoder = create_encoder(str(tmp_path / "kan"))
    assert encoder.encode_planes([np.zeros((40, 40), np.uint8)]).shape == (1, 192)
    with pytest.raises(MedfmError, match="takes any subset of them .*got 'dct-vit-tiny'"):
        pretrain(data, tmp_path / "dct", method="mae", arch="dct-vit-tiny", batch_size=4, max_steps=1)
    pretrain(data, tmp_path / "dct", method="barlow", arch="dct-vit-tiny", batch_size=4, max_steps=1)
    assert create_encoder(str(tmp_path / "dct")).info.embed_dim == 192
