"""``medfm demo``: a small example collection, built offline and catalogued, for a first run.

The examples come from what the installed packages ship (pydicom's and nibabel's test
files) and from phantoms that medfm generates; nothing is downloaded. They live in
``<data_dir>/demo/`` and are ingested into the catalog as dataset ``demo``. Running it
again writes nothing that exists already, so the catalog gains nothing twice.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medfm.catalog import Catalog, ImageRecord, IngestReport

DATASET = "demo"

#: (package, file inside the package's test data, path in the demo folder). A DICOM file
#: gets a folder of its own, which the catalog lists as the series' path.
SHIPPED_FILES = (
    ("pydicom", "data/test_files/CT_small.dcm", "pydicom_CT_small/CT_small.dcm"),
    ("pydicom", "data/test_files/MR_small.dcm", "pydicom_MR_small/MR_small.dcm"),
    ("pydicom", "data/test_files/SC_rgb_rle.dcm", "pydicom_SC_rgb_rle/SC_rgb_rle.dcm"),  # RLE Lossless, RGB
    ("pydicom", "data/test_files/693_J2KI.dcm", "pydicom_CT_J2KI/693_J2KI.dcm"),  # JPEG 2000
    ("nibabel", "tests/data/example4d.nii.gz", "nibabel_example4d.nii.gz"),
    ("nibabel", "tests/data/anatomical.nii", "nibabel_anatomical.nii"),
)

#: Grid of the synthetic phantom ``(I, J, K)`` and its voxel size in mm.
PHANTOM_SHAPE = (64, 64, 24)
PHANTOM_SPACING = (0.8, 0.8, 2.5)


def demo_folder() -> Path:
    """``<data_dir>/demo``, where :func:`run` builds the examples."""
    from medfm.paths import data_dir

    return data_dir() / DATASET


def _package_file(package: str, relative: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        from medfm.errors import MedfmError

        raise MedfmError(f"the demo needs the {package} package, which is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _phantom_image():
    from medfm.io import Image
    from medfm.io.image import affine_from_lps
    from medfm.io.synthetic import phantom

    affine = affine_from_lps((1, 0, 0), (0, 1, 0), (0, 0, 1), PHANTOM_SPACING, np.array([-25.6, -25.6, -30.0]))
    return Image(phantom(PHANTOM_SHAPE), affine, modality="CT", metadata={"description": "medfm synthetic phantom"})


def _slice_png(volume: np.ndarray) -> np.ndarray:
    """The middle slice ``(I, J)`` in a brain window (0-80 HU), as uint8."""
    middle = volume[:, :, volume.shape[2] // 2].astype(np.float64)
    return (np.clip(middle / 80.0, 0, 1) * 255).round().astype(np.uint8)


def _cine(volume: np.ndarray) -> np.ndarray:
    """A short grey clip ``(I, J, 1, T, 1)`` scrolling through the phantom's slices."""
    window = np.clip((volume.astype(np.float64) + 100) / 200.0, 0, 1) * 255
    return window.round().astype(np.uint8).transpose(0, 1, 2)[:, :, None, :, None]


def build_examples(folder: str | Path) -> list[Path]:
    """Write the example collection into ``folder``; return its items (files, one DICOM series folder).

    Items that exist already are left as they are, so a second build writes nothing.
    """
    from medfm.io import Image, save
    from medfm.io.formats import atomic_path
    from medfm.io.synthetic import write_dicom_series

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items: list[Path] = []
    for package, relative, name in SHIPPED_FILES:
        target = folder / name
        if not target.exists():
            with atomic_path(target, create_folders=True) as partial:  # the examples folder is medfm's own
                shutil.copyfile(_package_file(package, relative), partial)
        items.append(target)

    phantom = _phantom_image()
    volume = phantom.array[:, :, :, 0, 0]
    synthetic = {
        "phantom_ct.nii.gz": phantom,
        "phantom_slice.png": Image(_slice_png(volume)),
        "phantom_cine.mp4": Image(_cine(volume), metadata={"fps": 8.0}),
    }
    for name, image in synthetic.items():
        if not (folder / name).exists():
            save(image, folder / name)
        items.append(folder / name)

    series = folder / "phantom_ct_dicom"
    if not series.exists():
        # Written beside the target and renamed, so an interrupted run leaves no half series.
        with tempfile.TemporaryDirectory(prefix=".medfm-tmp-", dir=folder) as staging:
            write_dicom_series(volume, Path(staging) / "series", spacing=PHANTOM_SPACING, origin=(-25.6, -25.6, -30.0),
                               series_description="medfm synthetic CT phantom")
            (Path(staging) / "series").rename(series)
    items.append(series)
    return items


@dataclass
class DemoResult:
    """What :func:`run` did: the folder, the ingest report and the catalog's ``demo`` images."""

    folder: Path
    report: IngestReport
    records: list[ImageRecord]


def run(catalog: str | Catalog | None = None) -> DemoResult:
    """Build the examples in :func:`demo_folder` and ingest them into ``catalog`` as dataset ``demo``.

    ``catalog`` is an open catalog or a URL (``None``: the default catalog).
    """
    from medfm.catalog import Catalog, ingest, open_catalog

    folder = demo_folder()
    build_examples(folder)
    if isinstance(catalog, Catalog):
        report = ingest([folder], catalog, dataset=DATASET, progress=False)
        return DemoResult(folder, report, catalog.query(dataset=DATASET))
    with open_catalog(catalog) as store:
        report = ingest([folder], store, dataset=DATASET, progress=False)
        return DemoResult(folder, report, store.query(dataset=DATASET))


def format_table(records: list[ImageRecord]) -> list[str]:
    """One line per image: id, modality, shape, spacing (mm), dataset, path. No patient data."""
    rows = [("id", "modality", "shape", "spacing", "dataset", "path")]
    for record in records:
        rows.append((
            str(record.id),
            record.modality,
            "x".join(str(n) for n in record.shape),
            "x".join(f"{s:.3g}" for s in record.spacing),
            record.dataset or "-",
            record.source_path,
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
