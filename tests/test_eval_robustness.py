"""Corruptions (sample, apply, severity order) and degradation curves of a simple segmenter."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.eval.corruptions import CORRUPTIONS, get_corruption
from medfm.eval.protocols.degradation import degradation_curves
from medfm.eval.reports.robustness import write_robustness_report
from medfm.eval.seg_metrics import dice
from medfm.io.image import Image


def phantom(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipse on a textured background, and its mask."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=float)
    centre = [n / 2 + rng.uniform(-3, 3) for n in shape]
    radii = [n * rng.uniform(0.22, 0.3) for n in shape[:2]] + [n * 0.6 for n in shape[2:]]
    mask = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    image = 200.0 + 300.0 * mask + 120 * np.sin(grid[0] / 3) * np.cos(grid[1] / 4)
    return image, mask


def otsu_segmenter(image: np.ndarray | Image) -> np.ndarray:
    """Otsu's threshold over a 256-bin histogram: a deterministic stand-in for a model."""
    array = image.array[:, :, :, 0, 0].squeeze(axis=2) if isinstance(image, Image) else np.asarray(image)
    counts, edges = np.histogram(array, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres) / np.maximum(w0, 1)
    m1 = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(w1, 1)
    return array > centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)]


def psnr(clean: np.ndarray, corrupted: np.ndarray) -> float:
    return float(10 * np.log10(np.ptp(clean) ** 2 / np.mean((corrupted - clean) ** 2)))


@pytest.mark.parametrize("shape", [(64, 64), (40, 40, 5)], ids=["2d", "3d"])
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_severity_lowers_psnr_and_apply_is_deterministic(name: str, shape) -> None:
    image, _ = phantom(shape)
    corruption = get_corruption(name)
    values = []
    for severity in range(1, 6):
        params = corruption.sample(severity, np.random.default_rng(11))
        assert json.loads(json.dumps(params)) == params  # serialisable, round trips
        out = corruption.apply(image, params)
        assert out.shape == image.shape and out.dtype == np.float64
        np.testing.assert_array_equal(out, corruption.apply(image, params))
        values.append(psnr(image, out))
    assert all(np.diff(values) < 0), f"{name}: PSNR by severity {np.round(values, 2)}"
    assert values[0] > 20  # severity 1 is a mild corruption


def test_bad_requests_name_the_valid_choices() -> None:
    with pytest.raises(MedfmError, match=r"severity must be one of \[1, 2, 3, 4, 5\], got 6"):
        CORRUPTIONS["gaussian_noise"].sample(6, np.random.default_rng(0))
    with pytest.raises(MedfmError, match="unknown corruption 'fog'; choose from gaussian_noise"):
        get_corruption("fog")
    with pytest.raises(MedfmError, match="parameters of 'contrast' given to the 'gamma' corruption"):
        CORRUPTIONS["gamma"].apply(np.zeros((4, 4)), {"corruption": "contrast", "strength": 0.5})
    with pytest.raises(MedfmError, match="got shape"):
        CORRUPTIONS["contrast"].apply(np.zeros(8), {"corruption": "contrast", "strength": 0.5})


def test_otsu_dice_degrades_with_noise_and_params_rebuild_each_image(tmp_path: Path) -> None:
    cases = [phantom((64, 64), seed) for seed in range(4)]
    result = degradation_curves(otsu_segmenter, cases, dice, corruptions=["gaussian_noise", "poisson_noise", "contrast"], seed=3)
    data = result.as_dict()
    assert data["metric"] == "dice" and data["severities"] == [1, 2, 3, 4, 5]
    assert data["clean"]["mean"] > 0.97
    noise = data["corruptions"]["gaussian_noise"]["mean"]
    assert all(np.diff(noise) < 0) and noise[-1] < data["clean"]["mean"] - 0.1, noise
    assert data["corruptions"]["poisson_noise"]["mean"][-1] < data["corruptions"]["poisson_noise"]["mean"][0]
    # Otsu adapts its threshold: lower contrast alone leaves the segmentation intact
    assert min(data["corruptions"]["contrast"]["mean"]) > 0.95
    # the record rebuilds the corrupted image exactly, hence the score
    params = data["corruptions"]["gaussian_noise"]["params"][4][2]
    rebuilt = get_corruption("gaussian_noise").apply(cases[2][0], params)
    assert dice(otsu_segmenter(rebuilt), cases[2][1]) == data["corruptions"]["gaussian_noise"]["per_case"][4][2]
    json.dumps(data, allow_nan=False)
    again = degradation_curves(otsu_segmenter, cases, dice, corruptions=["gaussian_noise"], seed=3).as_dict()
    assert again["corruptions"]["gaussian_noise"] == data["corruptions"]["gaussian_noise"]

    path = write_robustness_report(result, tmp_path / "robustness.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)
    assert "<script" not in text and "http" not in text and "gaussian_noise" in text


def test_images_keep_their_geometry_through_the_harness() -> None:
    array, mask = phantom((40, 40, 5))
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    seen = []

    def segmenter(image: Image) -> np.ndarray:
        seen.append(image)
        return image.array[:, :, :, 0, 0] > np.median(image.array)

    result = degradation_curves(segmenter, [(Image(array, affine), mask)], dice, corruptions=["ghosting"], severities=(1, 5))
    assert all(isinstance(im, Image) and np.allclose(im.affine, affine) and im.spatial_shape == (40, 40, 5) for im in seen)
    assert result.scores["ghosting"].shape == (2, 1)
