"""medfm's DICOM→NIfTI against the real dcm2niix: same grid, same values, same affine (1e-3 mm)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfm.io.convert import convert
from medfm.io.synthetic import phantom, write_dicom_series

pytestmark = pytest.mark.integration

DCM2NIIX = shutil.which("dcm2niix")
if DCM2NIIX is None:
    pytest.skip("dcm2niix is not installed (apt-get install dcm2niix)", allow_module_level=True)

PYDICOM_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"
NIBABEL_NICOM = Path(nib.__file__).parent / "nicom" / "tests" / "data"
COS, SIN = np.cos(np.radians(20)), np.sin(np.radians(20))
VOLUME = phantom((32, 24, 10))

# name -> write_dicom_series keyword arguments (the volume is VOLUME unless "volume" is given)
SYNTHETIC = {
    "axial": {},
    "sagittal": {"row_direction": (0, 1, 0), "column_direction": (0, 0, -1)},
    "coronal": {"row_direction": (1, 0, 0), "column_direction": (0, 0, -1)},
    "oblique": {"row_direction": (COS, SIN, 0), "column_direction": (-SIN * COS, COS * COS, SIN)},
    "descending": {"slice_order": "descending"},
    "interleaved": {"slice_order": "interleaved", "modality": "MR"},
    "shuffled": {"slice_order": "shuffled"},
    "negative_step": {"spacing": (0.8, 0.8, -2.5)},
    "rescale_integer": {"rescale": (1.0, -1024.0)},
    "rescale_fraction": {"rescale": (0.5, -1024.0)},
    "four_d": {"volume": np.stack([VOLUME, VOLUME + 7, VOLUME - 3], axis=-1)},
    "four_d_descending": {"volume": np.stack([VOLUME, VOLUME + 7], axis=-1), "slice_order": "descending"},
    "single_slice": {"volume": VOLUME[:, :, :1]},
    "rgb": {"volume": np.random.default_rng(1).integers(0, 256, (32, 24, 4, 3)), "color": True},
    "rle": {"transfer_syntax": "1.2.840.10008.1.2.5"},
    "enhanced": {"enhanced": True, "modality": "MR"},
}
SHIPPED = {
    "pydicom_CT_small": (PYDICOM_FILES / "CT_small.dcm", ()),
    "pydicom_MR_small_RLE": (PYDICOM_FILES / "MR_small_RLE.dcm", ()),
    "pydicom_MR_small_jp2klossless": (PYDICOM_FILES / "MR_small_jp2klossless.dcm", ()),
    "nibabel_siemens_mosaic_dwi": (NIBABEL_NICOM, ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz")),
    # dcm2niix -p n: DICOM's own Rescale Slope, not Philips' private "precise" scaling
    "nibabel_philips_enhanced_3d": (NIBABEL_NICOM, ("philips_mprage.dcm.gz",)),
}


def _dcm2niix(source: Path, out: Path) -> Path:
    out.mkdir()
    result = subprocess.run([DCM2NIIX, "-z", "y", "-b", "n", "-p", "n", "-o", str(out), str(source)],
                            capture_output=True, text=True, timeout=120)
    written = sorted(out.glob("*.nii.gz"))
    assert result.returncode == 0 and len(written) == 1, result.stdout + result.stderr
    return written[0]


def _values(path: Path) -> np.ndarray:
    """Scaled values ``(I, J, K, T, C)``; dcm2niix's RGB24 and medfm's vector NIfTI both give C=3."""
    nifti = nib.load(path)
    data = np.asanyarray(nifti.dataobj)
    if data.dtype.names:  # RGB24: one structured voxel
        data = np.stack([data[c] for c in "RGB"], axis=-1)[..., None, :]
    elif nifti.header.get_intent()[0] == "vector":
        data = data.reshape(data.shape[:3] + (-1, data.shape[-1]))
    else:
        data = np.asarray(nifti.get_fdata())
    return data.reshape(data.shape + (1,) * (5 - data.ndim)).astype(np.float64)


def _assert_same(source: Path, tmp_path: Path) -> None:
    reference = _dcm2niix(source, tmp_path / "dcm2niix")
    ours = convert(source, tmp_path / "medfm.nii.gz")[0]
    expected, actual = _values(reference), _values(ours)
    assert actual.shape == expected.shape
    assert np.allclose(actual, expected, rtol=1e-6, atol=1e-4), np.abs(actual - expected).max()
    if nib.load(ours).get_data_dtype().kind in "iu":
        assert np.array_equal(actual, expected)
    assert np.abs(nib.load(ours).affine - nib.load(reference).affine).max() < 1e-3


@pytest.mark.parametrize("case", sorted(SYNTHETIC))
def test_synthetic_series_matches_dcm2niix(case: str, tmp_path: Path) -> None:
    options = dict(SYNTHETIC[case])
    write_dicom_series(options.pop("volume", VOLUME), tmp_path / "series", **options)
    _assert_same(tmp_path / "series", tmp_path)


@pytest.mark.parametrize("case", sorted(SHIPPED))
def test_shipped_file_matches_dcm2niix(case: str, tmp_path: Path) -> None:
    location, gzipped = SHIPPED[case]
    source = tmp_path / "series"
    source.mkdir()
    if not location.exists():
        pytest.skip(f"{location} is not shipped with this version")
    if gzipped:
        for name in gzipped:
            with gzip.open(location / name) as packed:
                (source / name.removesuffix(".gz")).write_bytes(packed.read())
    else:
        shutil.copy(location, source / location.name)
    _assert_same(source, tmp_path)
