"""MedGRPO's cross-dataset reward normalisation and GRPO's group advantages, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.train.grpo_rewards import RewardNormaliser, group_advantages


def test_each_pairs_median_maps_to_a_half_and_its_upper_quartile_to_three_quarters():
    easy = [0.4, 0.5, 0.6, 0.7]  # median 0.55, p75 0.625
    hard = [0.05, 0.1, 0.14, 0.2]  # median 0.12, p75 0.155
    normaliser = RewardNormaliser().fit({"copesd/grounding": easy, "egosurgery/grounding": hard})
    assert normaliser.transform("copesd/grounding", [0.55])[0] == pytest.approx(0.5)
    assert normaliser.transform("egosurgery/grounding", [0.12])[0] == pytest.approx(0.5)
    assert normaliser.transform("copesd/grounding", [0.625])[0] == pytest.approx(0.75)
    assert normaliser.transform("egosurgery/grounding", [0.155])[0] == pytest.approx(0.75)
    # by hand: k = ln 3 / 0.035 for the hard pair
    k = math.log(3) / 0.035
    assert normaliser.transform("egosurgery/grounding", [0.2])[0] == pytest.approx(1 / (1 + math.exp(-k * 0.08)))


def test_a_hard_pairs_typical_answer_is_rewarded_like_an_easy_pairs():
    """The failure MedGRPO fixes: raw IoU rewards an easy set's median answer four times a hard set's."""
    rng = np.random.default_rng(0)
    easy, hard = rng.normal(0.5, 0.1, 500), rng.normal(0.12, 0.03, 500)
    normaliser = RewardNormaliser().fit({"easy": easy, "hard": hard})
    assert np.median(easy) / np.median(hard) > 3
    assert np.mean(normaliser.transform("easy", easy)) == pytest.approx(np.mean(normaliser.transform("hard", hard)), abs=0.02)
    scaled = normaliser.transform("hard", np.sort(hard))
    assert np.all(np.diff(scaled) >= 0) and 0 < scaled.min() and scaled.max() < 1


def test_a_flat_reference_gets_the_minimum_spread_rather_than_dividing_by_zero():
    normaliser = RewardNormaliser(min_spread=0.01).fit({"flat": [1.0, 1.0, 1.0]})
    assert normaliser.transform("flat", [1.0, 1.01])[1] == pytest.approx(0.75)


def test_group_advantages_are_standardised_within_the_group():
    advantages = group_advantages([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(advantages, [1.0, -1.0, -1.0, 1.0], atol=1e-5)
    assert not group_advantages([0.3, 0.3, 0.3]).any()


@pytest.mark.parametrize(("call", "message"), [
    (lambda: RewardNormaliser().fit({}), "at least one dataset-task pair"),
    (lambda: RewardNormaliser().fit({"a": [0.5]}), "a: reward normalisation needs at least 2 reference rewards; got 1"),
    (lambda: RewardNormaliser().fit({"a": [0.5, float("nan")]}), "a: rewards must be finite numbers"),
    (lambda: RewardNormaliser().fit({"a": [0.1, 0.2]}).transform("b", [0.1]), "no reward normalisation for 'b'; fitted pairs: a"),
    (lambda: group_advantages([1.0]), "at least 2 answers"),
])
def test_bad_input_is_refused_in_one_line(call, message):
    with pytest.raises(MedfmError, match=message):
        call()
