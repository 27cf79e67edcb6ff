"""CLIP, ConVIRT and SigLIP losses against hand-computed values on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from medfm.models.losses import clip_loss, convirt_loss, siglip_loss

# Two orthogonal unit pairs: cos(image_i, text_j) = 1 if i == j else 0.
ALIGNED = torch.eye(2)


def test_clip_loss_matches_hand_computation():
    # With scale s, each row's logits are (s, 0): cross-entropy log(1 + e^-s) in both directions.
    assert clip_loss(ALIGNED, ALIGNED, 2.0).item() == pytest.approx(math.log(1 + math.exp(-2.0)))


def test_clip_loss_asymmetric_case():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    text = torch.eye(2)
    # logits = [[1, 0], [1, 0]]; image→text rows: CE(row0, 0) = log(1+e^-1), CE(row1, 1) = log(1+e).
    i2t = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2
    # text→image rows (columns of logits): [1, 1] and [0, 0]: each CE = log 2.
    t2i = math.log(2)
    assert clip_loss(image, text, 1.0).item() == pytest.approx((i2t + t2i) / 2)
    assert convirt_loss(image, text, 1.0, weight=0.75).item() == pytest.approx(0.75 * i2t + 0.25 * t2i)
    assert convirt_loss(image, text, 1.0, weight=1.0).item() == pytest.approx(i2t)


def test_siglip_loss_matches_hand_computation():
    # Positives have logit s + b, negatives b: -(2 log σ(s+b) + 2 log σ(-b)) / 2.
    s, b = 3.0, -1.0
    expected = -(2 * math.log(1 / (1 + math.exp(-(s + b)))) + 2 * math.log(1 / (1 + math.exp(b)))) / 2
    assert siglip_loss(ALIGNED, ALIGNED, s, b).item() == pytest.approx(expected)


@pytest.mark.parametrize("loss", ["clip", "convirt", "siglip"])
def test_aligned_pairs_beat_shuffled_pairs(loss):
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(16, 8, generator=generator), dim=1)
    shuffled = image[torch.randperm(16, generator=generator)]

    def value(text):
        if loss == "siglip":
            return siglip_loss(image, text, 10.0, -5.0).item()
        return (clip_loss if loss == "clip" else convirt_loss)(image, text, 10.0).item()

    assert value(image) < 0.5 * value(shuffled)


def test_positives_matrix_treats_duplicate_captions_as_matches():
    # Two images with one shared caption: marking both as positives removes the penalty.
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    both = torch.ones(2, 2, dtype=torch.bool)
    assert clip_loss(image, text, 5.0).item() == pytest.approx(math.log(2))
    assert clip_loss(image, text, 5.0, both).item() == pytest.approx(math.log(2))  # soft target (½, ½) = softmax
    assert siglip_loss(image, text, 5.0, 0.0, both).item() < siglip_loss(image, text, 5.0, 0.0).item()
