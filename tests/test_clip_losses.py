"""CLIP, ConVIRT, SigLIP and DHN-NCE losses against hand-computed values on tiny tensors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medfm.models.losses import clip_loss, convirt_loss, dhn_nce_loss, siglip_loss

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


# Cosines of three images (rows) with three texts (columns); image = I and text = S.T give image @ text.T = S.
SIMILARITIES = np.array([[0.9, 0.5, -0.2], [0.1, 0.7, 0.6], [0.3, -0.4, 0.8]])


def _dhn_nce_by_hand(logits: np.ndarray, beta1: float, beta2: float) -> float:
    """The paper's sum of both directions, each a mean over anchors of −log(e^{l_ii} / Σ_{j≠i} w_ij e^{l_ij})."""
    def direction(rows: np.ndarray, beta: float) -> float:
        n, total = len(rows), 0.0
        for i in range(n):
            others = [rows[i, j] for j in range(n) if j != i]
            weights = [(n - 1) * np.exp(beta * x) / sum(np.exp(beta * y) for y in others) for x in others]
            total += -np.log(np.exp(rows[i, i]) / sum(w * np.exp(x) for w, x in zip(weights, others)))
        return total / n
    return direction(logits, beta1) + direction(logits.T, beta2)


def _dhn_nce(similarities: np.ndarray, scale: float, **betas) -> torch.Tensor:
    return dhn_nce_loss(torch.eye(len(similarities), dtype=torch.float64), torch.tensor(similarities.T), scale, **betas)


@pytest.mark.parametrize(("scale", "beta1", "beta2"), [(1.0, 0.15, 0.15), (5.0, 0.5, 2.0), (10.0, 0.0, 1.0)])
def test_dhn_nce_matches_hand_computation(scale, beta1, beta2):
    expected = _dhn_nce_by_hand(scale * SIMILARITIES, beta1, beta2)
    assert _dhn_nce(SIMILARITIES, scale, beta1=beta1, beta2=beta2).item() == pytest.approx(expected, rel=1e-9)


def test_dhn_nce_with_two_pairs_has_one_negative_whose_weight_is_one():
    # Each anchor's only negative gets weight 1 whatever β: row losses are l_ij − l_ii in both directions.
    s = np.array([[0.8, 0.3], [-0.1, 0.6]])
    expected = ((0.3 - 0.8) + (-0.1 - 0.6)) / 2 + ((-0.1 - 0.8) + (0.3 - 0.6)) / 2
    for beta in (0.0, 0.15, 3.0):
        assert _dhn_nce(s, 1.0, beta1=beta, beta2=beta).item() == pytest.approx(expected)


def test_dhn_nce_at_beta_zero_is_decoupled_infonce():
    logits = 4.0 * SIMILARITIES
    off = ~np.eye(3, dtype=bool)

    def decoupled(rows):
        return np.mean([-rows[i, i] + np.log(np.exp(rows[i][off[i]]).sum()) for i in range(3)])

    expected = decoupled(logits) + decoupled(logits.T)
    assert _dhn_nce(SIMILARITIES, 4.0, beta1=0.0, beta2=0.0).item() == pytest.approx(expected)
    # Unlike InfoNCE, the positive is not in the denominator: CLIP's loss is log(1 + e^{-(decoupled terms)}) larger.
    assert _dhn_nce(SIMILARITIES, 4.0, beta1=0.0, beta2=0.0).item() < 2 * clip_loss(
        torch.eye(3, dtype=torch.float64), torch.tensor(SIMILARITIES.T), 4.0).item()


def test_dhn_nce_grows_with_hardness_and_weights_the_hard_negative():
    values = [_dhn_nce(SIMILARITIES, 5.0, beta1=b, beta2=b).item() for b in (0.0, 0.15, 0.5, 1.0)]
    assert values == sorted(values) and values[-1] > values[0] + 0.1
    # Image 1's hard negative is text 2 (0.6, close to its positive 0.7): its gradient grows with β1.
    grads = []
    for beta in (0.0, 1.0):
        text = torch.tensor(SIMILARITIES.T, requires_grad=True)
        dhn_nce_loss(torch.eye(3, dtype=torch.float64), text, 5.0, beta1=beta, beta2=0.0).backward()
        grads.append(text.grad[2, 1].item())  # d loss / d cos(image 1, text 2)
    assert grads[1] > grads[0] > 0


def test_dhn_nce_gradients_are_finite_at_large_scale_and_with_rows_of_only_positives():
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(6, 8, generator=generator), dim=1).requires_grad_()
    text = F.normalize(torch.randn(6, 8, generator=generator), dim=1).requires_grad_()
    positives = torch.eye(6, dtype=torch.bool)
    positives[:3, :3] = True  # three images share one caption
    value = dhn_nce_loss(image, text, 100.0, beta1=0.15, beta2=0.15, positives=positives)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(image.grad).all() and torch.isfinite(text.grad).all()
    everything = torch.ones(6, 6, dtype=torch.bool)  # no negatives anywhere: nothing to learn, not NaN
    assert dhn_nce_loss(image, text, 100.0, positives=everything).item() == 0.0


def test_dhn_nce_prefers_aligned_pairs_and_goes_below_zero_when_they_dominate():
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(16, 8, generator=generator), dim=1)
    shuffled = image[torch.randperm(16, generator=generator)]
    aligned = dhn_nce_loss(image, image, 10.0).item()
    assert aligned < 0.0 < dhn_nce_loss(image, shuffled, 10.0).item() - 10.0  # no positive in the denominator: no floor at 0


def test_dhn_nce_marked_positives_are_not_negatives():
    # Two images with one shared caption: marked as positives, the pair is not pushed apart.
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    marked = torch.eye(3, dtype=torch.bool)
    marked[0, 1] = marked[1, 0] = True
    # Unmarked, images 0 and 1 each have a negative as close as their positive (e^{5} among the negatives).
    assert dhn_nce_loss(image, text, 5.0, positives=marked).item() < dhn_nce_loss(image, text, 5.0).item() - 1.0
