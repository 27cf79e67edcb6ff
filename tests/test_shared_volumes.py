"""Integration: the real 3D volumes in ../shared/data/volumes_3d_smoke (skipped when absent)."""

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import medfm
from medfm.catalog import ingest, open_catalog
from medfm.paths import shared_data_dir

SMOKE = shared_data_dir() / "volumes_3d_smoke"
pytestmark = pytest.mark.skipif(not (SMOKE / "manifest.csv").exists(), reason=f"shared data not present at {SMOKE}")


def _nrrd_cases() -> list[dict]:
    if not (SMOKE / "manifest.csv").exists():
        return []
    with open(SMOKE / "manifest.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["file"].endswith(".nrrd")]


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(" x "))


@pytest.mark.parametrize("case", _nrrd_cases(), ids=lambda row: Path(row["file"]).stem)
def test_nrrd_volume_and_label_agree_with_manifest_and_simpleitk(case, tmp_path):
    image = medfm.load(SMOKE / case["file"])
    label = medfm.load(SMOKE / case["label_or_mask"])
    assert image.spatial_shape == tuple(int(n) for n in _numbers(case["shape"]))
    assert image.spacing == pytest.approx(_numbers(case["spacing_mm"]), abs=1e-3)
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-3)
    counts = dict(item.split(":") for item in case["label_values"].split(";"))
    values, found = np.unique(np.asarray(label.array), return_counts=True)
    assert {str(v): str(n) for v, n in zip(values, found)} == counts

    reference = sitk.ReadImage(str(SMOKE / case["file"]))
    np.testing.assert_array_equal(image.array[..., 0, 0], sitk.GetArrayFromImage(reference).transpose(2, 1, 0))
    np.testing.assert_allclose(image.lps_affine[:3, 3], reference.GetOrigin(), atol=1e-6)

    round_trip = medfm.load(medfm.save(image, tmp_path / "volume.nii.gz"))
    np.testing.assert_array_equal(round_trip.array, image.array)
    np.testing.assert_allclose(round_trip.affine, image.affine, atol=1e-5)


def test_medmnist_npz_stack_is_read_as_frames():
    image = medfm.load(SMOKE / "medmnist" / "adrenalmnist3d_28.npz")
    assert image.spatial_shape == (28, 28, 28)
    assert image.metadata["npz_key"] == "train_images" and image.num_frames > 1000


def test_ingest_the_folder(tmp_path):
    report = ingest([SMOKE], catalog=f"sqlite:///{tmp_path}/c.db", dataset="smoke", progress=False)
    assert not report.bad
    records = open_catalog(f"sqlite:///{tmp_path}/c.db").query(dataset="smoke")
    assert len(records) == report.added == 8 + 3  # 4 NRRD pairs and 3 npz files
