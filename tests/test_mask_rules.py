"""The rules written once: the mask reader, the box around a mask, and Dice on the training path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

import medfm
from medfm.errors import MedfmError
from medfm.eval.seg_metrics import dice
from medfm.io.label_maps import mask_foreground, read_mask
from medfm.models.segmenters.prompt import mask_box


def _disk(shape: tuple[int, int] = (40, 50), centre: tuple[int, int] = (18, 22), radius: int = 9) -> np.ndarray:
    """``(rows, columns)`` bool disk."""
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2


def test_zero_one_png_is_the_mask_not_an_empty_one(tmp_path):
    # the training reader thresholded at 127, which emptied every 0/1 mask
    truth = _disk()
    PILImage.fromarray(truth.astype(np.uint8)).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.shape == (50, 40, 1) and mask.dtype == bool
    assert np.array_equal(mask[:, :, 0].T, truth)


def test_zero_255_png_and_its_jpeg_with_halos_give_the_drawn_mask(tmp_path):
    truth = _disk()
    PILImage.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "m.png")
    PILImage.fromarray(truth.astype(np.uint8) * 255).convert("RGB").save(tmp_path / "m.jpg", quality=75)
    stored = np.asarray(PILImage.open(tmp_path / "m.jpg"))
    halo = (stored.max(axis=2) > 0) & ~truth
    assert halo.sum() > 20 and len(np.unique(stored)) > 2  # compression noise outside the disk
    assert np.array_equal(read_mask(tmp_path / "m.png")[:, :, 0].T, truth)
    from_jpeg = read_mask(tmp_path / "m.jpg")[:, :, 0].T
    assert not (from_jpeg & halo).any()  # the halo stays out...
    assert dice(from_jpeg, truth) > 0.98  # ...and the disk comes back


def test_label_valued_masks_keep_every_label(tmp_path):
    labels = np.zeros((30, 20, 4), np.uint8)
    labels[5:10, 5:10, 1], labels[12:20, 2:8, 2], labels[20:25, 10:15, 3] = 1, 2, 3
    medfm.save(medfm.Image(labels), tmp_path / "labels.nii.gz")
    assert np.array_equal(read_mask(tmp_path / "labels.nii.gz"), labels != 0)
    plane = np.zeros((30, 20), np.uint8)
    plane[2:6, 2:6], plane[10:14, 10:14] = 1, 2  # the robustness reader kept only label 2 (above half the maximum)
    PILImage.fromarray(plane).save(tmp_path / "labels.png")
    assert np.array_equal(read_mask(tmp_path / "labels.png")[:, :, 0].T, plane != 0)


def test_colour_masks_count_their_brightest_channel_and_the_rule_is_documented():
    red = np.zeros((4, 4, 3), np.uint8)
    red[1:3, 1:3, 0] = 255
    assert np.array_equal(mask_foreground(red.max(axis=-1)), red[..., 0] > 0)
    assert mask_foreground(np.array([0, 1, 2, 100], np.uint8)).tolist() == [False, True, True, True]
    assert mask_foreground(np.array([0, 3, 100, 140, 255], np.uint8)).tolist() == [False, False, False, True, True]
    assert mask_foreground(np.array([0.0, 0.2, 1.0])).tolist() == [False, True, True]


def test_a_mask_on_another_grid_or_with_several_frames_is_refused(tmp_path):
    PILImage.fromarray(_disk().astype(np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(MedfmError, match=r"m.png: mask is 50x40 but its image is 40x50"):
        read_mask(tmp_path / "m.png", (40, 50))
    assert read_mask(tmp_path / "m.png", (50, 40)).shape == (50, 40, 1)
    medfm.save(medfm.Image(np.zeros((4, 5, 1, 3), np.uint8)), tmp_path / "frames.nii.gz")
    with pytest.raises(MedfmError, match="frames.nii.gz: has 3 frames; a mask has one"):
        read_mask(tmp_path / "frames.nii.gz")


def test_mask_box_is_columns_then_rows_with_a_margin_inside_the_plane():
    mask = np.zeros((10, 8), bool)  # (rows, columns)
    mask[3:7, 2:5] = True
    assert mask_box(mask) == (2.0, 3.0, 4.0, 6.0)
    assert mask_box(mask, margin=3) == (0.0, 0.0, 7.0, 9.0)
    with pytest.raises(MedfmError, match="non-empty"):
        mask_box(np.zeros((4, 4), bool))


def test_training_validation_scores_with_the_one_dice_and_skips_empty_masks():
    import torch

    from medfm.models.segmenters.interactive_net import InteractiveNet
    from medfm.train import interactive

    assert interactive.dice is dice and dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    size = interactive.SIZE
    masks = np.zeros((2, size, size), bool)
    masks[0, 40:80, 50:90] = True  # masks[1] vanished at the working size: no box or click can be simulated
    cache = {"pictures": np.zeros((2, size, size, 3), np.uint8), "masks": masks, "sources": np.array(["a", "b"]),
             "is_val": np.array([True, True])}
    torch.manual_seed(0)
    scores = interactive.validate(InteractiveNet(), cache)
    assert set(scores) == {"a/box", "a/click"}
