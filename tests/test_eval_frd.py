"""Fréchet Radiomic Distance: agreement with the frd-score package, the formula, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from PIL import Image as PILImage

from medfm.eval.frd import compute_frd, frd_from_features, frechet_distance
from medfm.io.synthetic import write_disc_phantoms
from medfm.paths import shared_data_dir

# PyRadiomics checks its settings with pykwalify, which uses a deprecated importlib call
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

HC18 = shared_data_dir() / "hc18_fetal_head_us"


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("frd")
    return {"a": write_disc_phantoms(root / "a", 10, texture=1.0, seed=0), "b": write_disc_phantoms(root / "b", 10, texture=1.6, seed=1)}


def frd_score_value(paths: list[Path], masks: list[Path] | None = None) -> float:
    frd_score = pytest.importorskip("frd_score.frd", reason="frd-score is in the test extra")
    with contextlib.redirect_stdout(io.StringIO()):
        return float(frd_score.compute_frd([str(p) for p in paths], paths_masks=[str(m) for m in masks] if masks else None, num_workers=1))


@pytest.mark.parametrize("with_masks", [False, True], ids=["whole-image", "masks"])
def test_agrees_with_frd_score(sets, with_masks: bool) -> None:
    (images_a, masks_a), (images_b, masks_b) = sets["a"], sets["b"]
    masks = [masks_a, masks_b] if with_masks else None
    expected = frd_score_value([images_a, images_b], masks)
    result = compute_frd(images_a, images_b, *(masks or (None, None)), workers=2)
    assert result.frd == pytest.approx(expected, abs=1e-6)
    assert result.frd > 5  # clearly different textures, far from the noise floor
    assert (result.n_a, result.n_b) == (10, 10) and not result.skipped
    assert len(result.features) > 300


def test_ood_scores_match_frd_score_and_flag_the_shifted_set(sets, tmp_path: Path) -> None:
    frd_score = pytest.importorskip("frd_score.frd", reason="frd-score is in the test extra")
    (images_a, _), (images_b, _) = sets["a"], sets["b"]
    extractor = frd_score.get_feature_extractor(image_dim=2)
    _, _, normalised, _ = frd_score.compute_statistics_of_paths(
        [str(images_a), str(images_b)], "zscore", [0.0, 1.0], extractor, norm_ref="d1", num_workers=1, frd_version="v1"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        expected = frd_score.detect_ood(normalised, output_dir=str(tmp_path))
    result = compute_frd(images_a, images_b, workers=1)
    scores = np.array([o["score"] for o in result.ood])
    np.testing.assert_allclose(scores, expected["scores"], rtol=1e-5)
    assert result.ood_threshold == pytest.approx(expected["threshold"], rel=1e-5)
    assert all(o["above_threshold"] for o in result.ood)
    # against itself, most images are within A's own spread
    itself = compute_frd(images_a, images_a, workers=1)
    assert sum(o["above_threshold"] for o in itself.ood) <= 2


def test_fast_glcm_matches_pyradiomics() -> None:
    import SimpleITK as sitk
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    from medfm.eval._fast_glcm import FastExtractor
    from medfm.eval.radiomics_features import _IMAGE_TYPES, FRD_FEATURE_CLASSES, FRD_SETTINGS

    rng = np.random.default_rng(3)
    for ndim, shape in ((2, (1, 48, 40)), (3, (12, 20, 16))):
        array = (rng.gamma(2.0, 30.0, shape) + 40 * np.sin(np.arange(shape[-1]) / 2)).astype(np.float32)
        mask = np.zeros(shape, np.uint8)
        mask[tuple(slice(2, n - 2) if n > 4 else slice(None) for n in shape)] = 1
        values = []
        for cls in (RadiomicsFeatureExtractor, FastExtractor):
            extractor = cls({"setting": FRD_SETTINGS[ndim], "imageType": _IMAGE_TYPES})
            extractor.disableAllFeatures()
            extractor.enableFeaturesByName(glcm=FRD_FEATURE_CLASSES["glcm"])
            out = extractor.execute(sitk.GetImageFromArray(array), sitk.GetImageFromArray(mask))
            values.append({k: float(v) for k, v in out.items() if "_glcm_" in k})
        assert list(values[0]) == list(values[1]) and len(values[0]) >= 22 * 5
        np.testing.assert_allclose(list(values[1].values()), list(values[0].values()), rtol=1e-10)


def test_frechet_distance_of_diagonal_gaussians_by_hand() -> None:
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 1 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(expected)


def test_frd_grows_with_the_shift_and_drops_constant_features() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 6))
    a[:, 5] = 7.0  # constant in A: its z-score is undefined
    near, far = a + 0.2, a + 2.0
    near[:, 5] = far[:, 5] = 7.0
    shuffled = rng.permutation(a)
    assert frd_from_features(a, shuffled)["frd"] == float("-inf")  # same set: log 0
    r_near, r_far = frd_from_features(a, near), frd_from_features(a, far)
    assert r_near["kept"].tolist() == [True] * 5 + [False]
    assert r_near["frd"] < r_far["frd"]
    assert r_far["ood_scores"].mean() > r_near["ood_scores"].mean()


def test_cli_json_skips_unusable_images_and_reports_bad_folders(sets, tmp_path: Path, capsys) -> None:
    def run(*args: str | Path) -> tuple[int, str, str]:
        return run_cli(["evaluate", "frd", *map(str, args)], capsys)

    (images_a, _), (images_b, _) = sets["a"], sets["b"]
    broken = tmp_path / "b"
    broken.mkdir()
    for path in sorted(images_b.iterdir())[:5]:
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "notes.png").write_bytes(b"not a png")
    code, out, err = run(images_a, broken, "--json", "--workers", "2")
    assert code == 2 and err.splitlines()[-1].endswith("1 of 16 images skipped (listed above); the scores are over the other 15")
    result = json.loads(out)
    assert {"frd", "n_a", "n_b", "n_features", "ood"} <= set(result)
    assert (result["n_a"], result["n_b"], len(result["ood"])) == (10, 5, 5)
    assert "notes" in err and [s["name"] for s in result["skipped"]] == ["notes"]
    code, out, _ = run(images_a, images_a)
    assert code == 0 and out.startswith("FRD -inf")
    code, _, err = run(images_a, tmp_path / "missing")
    assert code == 2 and err.startswith("medfm: error: ") and "missing" in err


@pytest.mark.integration
def test_agrees_with_frd_score_on_fetal_ultrasound(tmp_path: Path) -> None:
    images = sorted((HC18 / "images").glob("*.jpg"))
    if not images:
        pytest.skip(f"real data absent: {HC18}")
    # lossless crops, so both tools decode identical pixels (JPEG decoders differ by a grey level)
    folders = [tmp_path / "first", tmp_path / "second"]
    for folder, chunk in zip(folders, (images[:6], images[6:12])):
        folder.mkdir()
        for path in chunk:
            with PILImage.open(path) as picture:
                picture.convert("L").crop((200, 120, 456, 376)).save(folder / f"{path.stem}.png")
    expected = frd_score_value(folders)
    assert compute_frd(*folders, workers=2).frd == pytest.approx(expected, abs=1e-6)
