"""Synthetic phantoms and DICOM series with known geometry, for the demo, tests and benchmarks.

Every series written here is fully synthetic: its patient attributes are invented, so it
can be shipped, logged and shared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SLICE_ORDERS = ("ascending", "descending", "interleaved", "shuffled")


def phantom(shape: Sequence[int] = (64, 64, 32), seed: int = 0) -> np.ndarray:
    """A head-like phantom in CT-like units (HU): air, a skull shell, brain, and a few lesions.

    ``shape`` is ``(I, J, K)``; returns int16 of that shape.
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum((g / r) ** 2 for g, r in zip(grids, (0.85, 0.95, 0.9))))
    volume = np.full(shape, -1000.0)
    volume[radius < 1.0] = 800.0  # skull
    volume[radius < 0.9] = 35.0  # brain
    for _ in range(3):
        centre = rng.uniform(-0.4, 0.4, size=3)
        size = rng.uniform(0.08, 0.2)
        blob = sum((g - c) ** 2 for g, c in zip(grids, centre)) < size**2
        volume[blob] = rng.uniform(50, 90)
    volume += rng.normal(0, 5, size=shape)
    return volume.round().astype(np.int16)


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def write_dicom_series(
    volume: np.ndarray,
    folder: str | os.PathLike,
    *,
    row_direction: Sequence[float] = (1.0, 0.0, 0.0),
    column_direction: Sequence[float] = (0.0, 1.0, 0.0),
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    origin: Sequence[float] = (-100.0, -120.0, -40.0),
    slice_order: str = "ascending",
    modality: str = "CT",
    rescale: tuple[float, float] = (1.0, 0.0),
    series_number: int = 1,
    series_description: str = "synthetic phantom",
    body_part: str = "HEAD",
    patient_name: str = "Phantom^Synthetic",
    patient_id: str = "SYNTH0001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``volume`` (``(I, J, K)``: columns, rows, slices) as one single-frame file per slice.

    Geometry is DICOM's (LPS): ``row_direction``/``column_direction`` are Image
    Orientation (Patient), ``spacing`` is (column, row, slice) in mm, and slice ``k`` sits at
    ``origin + k * spacing[2] * (row × column)``. ``slice_order`` sets Instance Number
    order: ``descending`` and ``interleaved`` number the slices as scanners do; ``shuffled``
    numbers them at random. Stored values are ``(volume - intercept) / slope``. File names
    are random so that nothing can rely on them. Returns the files in slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

    if slice_order not in SLICE_ORDERS:
        raise ValueError(f"slice_order must be one of {SLICE_ORDERS}, got {slice_order!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    row = np.asarray(row_direction, dtype=float)
    column = np.asarray(column_direction, dtype=float)
    normal = np.cross(row, column)
    n_slices = volume.shape[2]
    numbering = {
        "ascending": np.arange(n_slices),
        "descending": np.arange(n_slices)[::-1],
        "interleaved": np.argsort(np.r_[np.arange(0, n_slices, 2), np.arange(1, n_slices, 2)]),
        "shuffled": rng.permutation(n_slices),
    }[slice_order]
    slope, intercept = rescale
    stored = np.round((volume.astype(np.float64) - intercept) / slope)
    signed = stored.min() < 0
    stored = stored.astype(np.int16 if signed else np.uint16)
    study_uid = study_uid or _new_uid()
    series_uid = series_uid or _new_uid()
    frame_of_reference_uid = frame_of_reference_uid or _new_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths = []
    for k in range(n_slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = _new_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = "ACC0001"
        ds.StudyID = "1"
        ds.Modality = modality
        ds.BodyPartExamined = body_part
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.InstanceNumber = int(numbering[k]) + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in (*row, *column)]
        position = np.asarray(origin, dtype=float) + k * spacing[2] * normal
        ds.ImagePositionPatient = [round(float(v), 6) for v in position]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, column spacing
        ds.SliceThickness = float(spacing[2])
        ds.SliceLocation = round(float(position @ normal), 6)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[0])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        if modality == "CT":
            ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / f"{rng.integers(1 << 62):016x}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
