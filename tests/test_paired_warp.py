"""The paired warp of medfm-interactive's and the grounding head's training: one geometry for picture and targets."""

from __future__ import annotations

import numpy as np
import torch

from medfm.train.paired_warp import warp_pair


def test_the_picture_and_its_targets_move_together_and_the_targets_stay_soft() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:48, :48]
    masks = []
    for _ in range(16):  # an off-centre square each, so that any flip, shift or rotation moves it
        row, column = rng.integers(4, 20, 2)
        masks.append((y >= row) & (y < row + 14) & (x >= column) & (x < column + 10))
    targets = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
    pictures = targets.repeat(1, 3, 1, 1) * 0.8 + 0.1  # the square bright on dark
    out_pictures, out_targets = warp_pair(pictures, targets, rng)
    assert out_pictures.shape == pictures.shape and out_targets.shape == targets.shape
    assert 0 <= out_pictures.min() and out_pictures.max() <= 1
    moved = (out_targets > 0.5) != (targets > 0.5)
    assert moved.flatten(1).any(1).float().mean() > 0.5  # most samples were warped
    for picture, target in zip(out_pictures, out_targets):
        inside, outside = picture[0][target[0] > 0.9], picture[0][target[0] < 0.1]
        assert inside.min() > outside.max(), "the picture's square is where the warped target is"
    soft = (out_targets > 0.01) & (out_targets < 0.99)
    assert soft.any(), "targets are resampled bilinearly, not thresholded"
