"""Rewards for GRPO-style reinforcement fine-tuning of a vision-language model on several datasets.

medfm runs no RL loop itself; these are the two pieces a recipe (TRL's ``GRPOTrainer``, verl, a
hand-written loop) needs from the medical side, written once and tested:

- :class:`RewardNormaliser`: MedGRPO's cross-dataset reward normalisation (Su et al., CVPR 2026,
  arXiv 2512.06581). Raw rewards are not comparable across dataset–task pairs (a median IoU of 0.5
  on one grounding set, 0.12 on another), so plain GRPO over-fits the easy pairs and abandons the
  hard ones. Each pair's rewards go through a logistic centred on that pair's median reward of a
  reference model (the SFT model before RL), so every pair's median maps to 0.5. MedGRPO sets the
  logistic's steepness per pair from the reference rewards' spread; medfm's rule is that the pair's
  75th percentile maps to 0.75 (``k = ln 3 / (p75 - median)``), so the middle half of every pair's
  reference rewards spans 0.25–0.75.
- :func:`group_advantages`: GRPO's group-relative advantage (Shao et al., 2024, DeepSeekMath): each
  of the G answers to one prompt scores ``(r - mean) / (std + eps)`` against its own group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medfm.errors import MedfmError

#: The quantile that the logistic maps to 0.75 (its mirror, the 25th, then maps to about 0.25).
UPPER_QUANTILE = 0.75


@dataclass(frozen=True)
class Logistic:
    """One dataset–task pair's normalisation: ``1 / (1 + exp(-steepness * (reward - median)))``."""

    median: float
    steepness: float

    def __call__(self, rewards: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.steepness * (rewards - self.median)))


class RewardNormaliser:
    """Fit on a reference model's rewards per dataset–task key, then map new rewards of that key to (0, 1)."""

    def __init__(self, min_spread: float = 1e-3) -> None:
        self.min_spread = min_spread
        self.logistics_: dict[str, Logistic] = {}

    def fit(self, reference_rewards: Mapping[str, Sequence[float]]) -> RewardNormaliser:
        """``reference_rewards``: ``{key: rewards of the reference model on that pair}``, two or more each.
        A pair whose upper half is flat (every reward equal, say) gets the spread ``min_spread``."""
        if not reference_rewards:
            raise MedfmError("reward normalisation needs the reference rewards of at least one dataset-task pair")
        logistics = {}
        for key, rewards in reference_rewards.items():
            values = _finite(rewards, key)
            if len(values) < 2:
                raise MedfmError(f"{key}: reward normalisation needs at least 2 reference rewards; got {len(values)}")
            median = float(np.median(values))
            spread = max(float(np.quantile(values, UPPER_QUANTILE)) - median, self.min_spread)
            logistics[key] = Logistic(median, math.log(UPPER_QUANTILE / (1 - UPPER_QUANTILE)) / spread)
        self.logistics_ = logistics
        return self

    def transform(self, key: str, rewards: Sequence[float]) -> np.ndarray:
        """``rewards`` of pair ``key`` on the common scale: the pair's reference median gives 0.5."""
        if key not in self.logistics_:
            known = ", ".join(sorted(self.logistics_)) or "none (call fit first)"
            raise MedfmError(f"no reward normalisation for {key!r}; fitted pairs: {known}")
        return self.logistics_[key](_finite(rewards, key))


def group_advantages(rewards: Sequence[float], eps: float = 1e-6) -> np.ndarray:
    """GRPO's advantages of the G answers to one prompt: ``(r - mean) / (std + eps)`` within the group;
    all zeros when the group agrees (nothing to learn from it)."""
    values = _finite(rewards, "group")
    if len(values) < 2:
        raise MedfmError(f"a GRPO group needs at least 2 answers to one prompt; got {len(values)}")
    return (values - values.mean()) / (values.std() + eps)


def _finite(rewards: Sequence[float], key: str) -> np.ndarray:
    values = np.asarray(rewards, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise MedfmError(f"{key}: rewards must be finite numbers")
    return values
