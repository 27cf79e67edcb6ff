"""Segmentation metrics against hand-computed values, MONAI's own functions and plastimatch."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest

import medfm
from medfm.errors import MedfmError
from medfm.eval.seg_metrics import (
    METRICS,
    average_surface_distance,
    dice,
    hausdorff_distance,
    iou,
    mean_over_labels,
    relative_volume_difference,
    score_label_maps,
    score_masks,
    surface_dice,
    volume_difference,
)


def box(shape, lo, hi):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return mask


def ellipsoid(shape, centre, radius_mm, spacing):
    grid = np.indices(shape, dtype=np.float64)
    distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing))
    return (distance2 <= radius_mm**2).astype(np.uint8)


def blobs(seed, shape):
    """A few overlapping random ellipsoids: irregular surfaces for cross-checks."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(3):
        centre = rng.uniform(0.3, 0.7, len(shape)) * np.array(shape)
        radius = rng.uniform(0.1, 0.25) * min(shape)
        mask |= ellipsoid(shape, centre, radius, np.ones(len(shape))).astype(bool)
    return mask


def test_dice_iou_and_volumes_of_overlapping_boxes_by_hand():
    ref = box((20, 20, 10), (2, 2, 2), (12, 12, 6))  # 10*10*4 = 400 voxels
    pred = box((20, 20, 10), (7, 2, 2), (17, 12, 6))  # 400 voxels, 200 shared
    assert dice(pred, ref) == pytest.approx(2 * 200 / 800)
    assert iou(pred, ref) == pytest.approx(200 / 600)
    bigger = box((20, 20, 10), (2, 2, 2), (12, 12, 8))  # 600 voxels
    spacing = (0.5, 0.7, 3.0)
    assert volume_difference(bigger, ref, spacing) == pytest.approx(200 * 0.5 * 0.7 * 3.0)
    assert relative_volume_difference(bigger, ref) == pytest.approx(0.5)
    assert relative_volume_difference(ref, bigger) == pytest.approx(-1 / 3)


@pytest.mark.parametrize(("axis", "expected"), [(0, 2 * 0.5), (1, 2 * 0.8), (2, 2 * 3.0)])
def test_hausdorff_of_a_shifted_box_follows_the_spacing_of_the_shift_axis(axis, expected):
    spacing = (0.5, 0.8, 3.0)
    ref = box((24, 24, 16), (6, 6, 4), (16, 16, 10))
    pred = np.roll(ref, 2, axis=axis)
    assert hausdorff_distance(pred, ref, spacing, percentile=100) == pytest.approx(expected)
    # boundary voxels all lie within the shift, and those on the shared sides at 0
    assert 0 < average_surface_distance(pred, ref, spacing) < expected
    assert hausdorff_distance(pred, ref, spacing) <= expected * (1 + 1e-6)  # MONAI measures in float32
    assert surface_dice(pred, ref, spacing, tolerance_mm=expected * 1.001) == pytest.approx(1.0)
    assert surface_dice(pred, ref, spacing, tolerance_mm=expected * 0.99) < 1.0


def test_concentric_spheres_on_an_anisotropic_grid_are_their_radius_difference_apart():
    spacing = (0.6, 0.9, 2.0)
    shape = (70, 50, 24)
    centre = (35, 25, 12)
    ref = ellipsoid(shape, centre, 18.0, spacing)
    pred = ellipsoid(shape, centre, 14.0, spacing)
    scores = score_masks(pred, ref, spacing, tolerance_mm=1.0)
    # boundaries are 4 mm apart, up to a voxel's worth of digitisation along the coarsest axis
    assert scores.hd95 == pytest.approx(4.0, abs=1.0)
    assert scores.assd == pytest.approx(4.0, abs=0.8)
    assert scores.nsd < 0.1
    assert score_masks(pred, ref, spacing, tolerance_mm=6.0).nsd == 1.0
    voxel = np.prod(spacing)
    assert scores.volume_difference == pytest.approx(4 / 3 * np.pi * (14.0**3 - 18.0**3), rel=0.05)
    assert scores.volume_difference == pytest.approx((int(pred.sum()) - int(ref.sum())) * voxel)
    assert scores.dice == pytest.approx(2 * 14.0**3 / (14.0**3 + 18.0**3), rel=0.03)


def test_two_dimensional_masks_give_areas_and_in_plane_distances():
    spacing = (0.25, 0.5)
    ref = box((40, 40), (10, 10), (30, 30))
    pred = box((40, 40), (10, 10), (30, 34))
    scores = score_masks(pred, ref, spacing)
    assert scores.volume_difference == pytest.approx(20 * 4 * 0.25 * 0.5)  # mm²
    assert hausdorff_distance(pred, ref, spacing, percentile=100) == pytest.approx(4 * 0.5)
    assert scores.dice == pytest.approx(2 * 400 / 880)


def _monai(pred, ref, spacing, tolerance):
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    def onehot(mask):
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    p, r = onehot(pred), onehot(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": compute_dice(p, r, include_background=False).item(),
            "iou": compute_iou(p, r, include_background=False).item(),
            "hd95": compute_hausdorff_distance(p, r, percentile=95, spacing=list(spacing)).item(),
            "assd": compute_average_surface_distance(p, r, symmetric=True, spacing=list(spacing)).item(),
            "nsd": compute_surface_dice(p, r, [tolerance], spacing=list(spacing)).item(),
        }


CROSS_CHECK_CASES = [
    (seed, shape, spacing)
    for seed, (shape, spacing) in enumerate(
        [
            ((40, 36, 20), (0.7, 1.1, 2.5)),
            ((32, 32, 32), (1.0, 1.0, 1.0)),
            ((30, 44, 12), (0.45, 0.45, 4.0)),
            ((64, 48), (0.3, 0.9)),
            ((50, 50), (1.2, 1.2)),
        ]
    )
]


@pytest.mark.parametrize(("seed", "shape", "spacing"), CROSS_CHECK_CASES)
def test_scores_match_monai_compute_functions(seed, shape, spacing):
    ref = blobs(seed, shape)
    pred = np.roll(blobs(seed + 100, shape) | ref, 2, axis=0) & ~blobs(seed + 200, shape)
    assert pred.any() and ref.any()
    ours = score_masks(pred, ref, spacing, tolerance_mm=1.5).as_dict()
    theirs = _monai(pred, ref, spacing, 1.5)
    for metric, value in theirs.items():
        assert ours[metric] == pytest.approx(value, rel=1e-5, abs=1e-6), metric
    assert hausdorff_distance(pred, ref, spacing) == pytest.approx(theirs["hd95"], rel=1e-5)
    assert average_surface_distance(pred, ref, spacing) == pytest.approx(theirs["assd"], rel=1e-5)
    assert surface_dice(pred, ref, spacing, 1.5) == pytest.approx(theirs["nsd"], rel=1e-5)


def test_empty_mask_policy():
    empty = np.zeros((10, 10, 6), dtype=np.uint8)
    cube = box((10, 10, 6), (2, 2, 1), (6, 6, 4))
    spacing = (1.0, 1.0, 2.0)
    both = score_masks(empty, empty, spacing)
    assert both.as_dict() == {
        "dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0,
        "volume_difference": 0.0, "relative_volume_difference": 0.0,
    }
    missed = score_masks(empty, cube, spacing)  # prediction empty
    assert (missed.dice, missed.iou, missed.nsd) == (0.0, 0.0, 0.0)
    assert np.isnan(missed.hd95) and np.isnan(missed.assd)
    assert missed.volume_difference == pytest.approx(-48 * 2.0)
    assert missed.relative_volume_difference == -1.0
    spurious = score_masks(cube, empty, spacing)  # reference empty
    assert (spurious.dice, spurious.iou, spurious.nsd) == (0.0, 0.0, 0.0)
    assert np.isnan(spurious.hd95) and np.isnan(spurious.assd)
    assert np.isnan(spurious.relative_volume_difference)
    assert spurious.volume_difference == pytest.approx(48 * 2.0)
    # the individual functions share the policy
    assert hausdorff_distance(empty, empty, spacing) == 0.0 and np.isnan(average_surface_distance(cube, empty, spacing))
    assert surface_dice(empty, empty, spacing, 1.0) == 1.0 and dice(empty, cube) == 0.0


def test_label_maps_are_scored_per_label_and_averaged():
    spacing = (1.0, 1.0, 1.5)
    ref = np.zeros((30, 30, 10), dtype=np.int16)
    ref[2:12, 2:12, 2:8] = 1
    ref[15:25, 15:25, 2:8] = 2
    pred = ref.copy()
    pred[15:25, 15:20, 2:8] = 0  # label 2 half missed
    scores = score_label_maps(pred, ref, spacing, labels=[1, 2, 3])
    assert scores[1].dice == 1.0 and scores[1].hd95 == 0.0
    assert scores[2].dice == pytest.approx(2 * 300 / 900)
    assert scores[3].dice == 1.0  # absent from both: the both-empty policy
    assert scores[2].as_dict() == score_masks(pred == 2, ref == 2, spacing).as_dict()
    mean = mean_over_labels({k: scores[k] for k in (1, 2)})
    assert mean["dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert set(mean) == set(METRICS)
    missed = score_label_maps(np.zeros_like(ref), ref, spacing, labels=[1, 2])
    assert np.isnan(mean_over_labels(missed)["hd95"])


def test_bad_input_is_a_one_line_error():
    with pytest.raises(MedfmError, match=r"prediction shape \(4, 4, 4\) differs from reference shape \(4, 4, 5\)"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(MedfmError, match="spacing must be 3 positive numbers"):
        score_masks(np.ones((4, 4, 4)), np.ones((4, 4, 4)), (1.0, 1.0))
    with pytest.raises(MedfmError, match="tolerance_mm must be >= 0"):
        score_masks(np.ones((4, 4, 4)), np.ones((4, 4, 4)), (1.0, 1.0, 1.0), tolerance_mm=-1)


def _plastimatch_dice(ref_path, pred_path) -> dict[str, float]:
    out = subprocess.run(
        ["plastimatch", "dice", "--all", str(ref_path), str(pred_path)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    return {key.strip(): float(value) for key, value in re.findall(r"^([A-Za-z(). 0-9]+?)\s*[=:]\s*([-0-9.e]+)\s*$", out, re.M)}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("plastimatch") is None, reason="plastimatch is not installed (Debian package plastimatch)")
@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_dice_and_hausdorff_match_plastimatch_on_anisotropic_volumes(tmp_path, suffix):
    spacing = (0.8, 1.1, 2.5)
    shape = (40, 36, 24)
    ref = ellipsoid(shape, (20, 18, 12), 10.0, spacing)
    pred = ellipsoid(shape, (22.5, 17, 12.6), 9.0, spacing) | box(shape, (5, 5, 3), (9, 9, 6))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-5.0, 3.0, 7.0)
    medfm.save(medfm.Image(ref, affine), tmp_path / f"ref{suffix}")
    medfm.save(medfm.Image(pred.astype(np.uint8), affine), tmp_path / f"pred{suffix}")
    loaded = medfm.load(tmp_path / f"pred{suffix}")
    reference = _plastimatch_dice(tmp_path / f"ref{suffix}", tmp_path / f"pred{suffix}")
    assert dice(loaded.array[..., 0, 0], ref) == pytest.approx(reference["DICE"], abs=1e-6)
    # plastimatch's boundary Hausdorff is the maximum of the same voxel-centre boundary distances
    assert hausdorff_distance(pred, ref, loaded.spacing, percentile=100) == pytest.approx(
        reference["Hausdorff distance (boundary)"], abs=1e-4
    )
    # its 95th percentile pools both directions, ours (MONAI's) is the larger directed one: never smaller
    assert hausdorff_distance(pred, ref, loaded.spacing) >= reference["Percent (0.95) Hausdorff distance (boundary)"] - 1e-6
