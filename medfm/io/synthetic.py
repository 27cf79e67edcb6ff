"""Synthetic phantoms and DICOM series with known geometry, for the demo, tests and benchmarks.

Every series written here is fully synthetic: its patient attributes are invented, so it
can be shipped, logged and shared.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SLICE_ORDERS = ("ascending", "descending", "interleaved", "shuffled")


#: Intensities of each tissue of :func:`phantom` and the noise's standard deviation: CT in HU; MR like a
#: T1-weighted scan (fat bright, bone dark, noisier relative to the brain's signal, as MR is).
PHANTOM_TISSUES = {
    "CT": {"air": -1000.0, "scalp": -1000.0, "skull": 800.0, "brain": 35.0, "lesion": (50.0, 90.0), "noise": 5.0},
    "MR": {"air": 0.0, "scalp": 700.0, "skull": 80.0, "brain": 420.0, "lesion": (250.0, 320.0), "noise": 20.0},
}


def phantom(shape: Sequence[int] = (64, 64, 32), seed: int = 0, modality: str = "CT") -> np.ndarray:
    """A head-like phantom: air, a skull shell, brain, and a few lesions, in CT-like units (HU), or
    with ``modality="MR"`` in T1-like ones (a bright scalp-fat ring outside a dark skull, grey brain,
    darker lesions) at the same places.

    ``shape`` is ``(I, J, K)`` (or ``(I, J)`` for one plane); returns int16 of that shape.
    """
    if modality not in PHANTOM_TISSUES:
        raise ValueError(f"modality must be one of {', '.join(PHANTOM_TISSUES)}; got {modality!r}")
    tissues = PHANTOM_TISSUES[modality]
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum((g / r) ** 2 for g, r in zip(grids, (0.85, 0.95, 0.9))))
    volume = np.full(shape, tissues["air"])
    volume[radius < 1.08] = tissues["scalp"]
    volume[radius < 1.0] = tissues["skull"]
    volume[radius < 0.9] = tissues["brain"]
    for _ in range(3):
        centre = rng.uniform(-0.4, 0.4, size=len(shape))
        size = rng.uniform(0.08, 0.2)
        blob = sum((g - c) ** 2 for g, c in zip(grids, centre)) < size**2
        volume[blob] = rng.uniform(*tissues["lesion"])
    volume += rng.normal(0, tissues["noise"], size=shape)
    return volume.round().astype(np.int16)


def write_disc_phantoms(folder: str | os.PathLike, n: int, texture: float = 1.0, seed: int = 0,
                        size: int = 64) -> tuple[Path, Path]:
    """``n`` grey PNG phantoms (a disc on a sinusoidal texture, with noise) in ``folder/images`` and
    their 0/255 disc masks under the same names in ``folder/masks``; ``texture`` scales the texture's
    frequency and the noise, so two sets with different ``texture`` differ in radiomic features."""
    from PIL import Image as PILImage

    images, masks = Path(folder) / "images", Path(folder) / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    for k in range(n):
        cx, cy, r = *rng.uniform(0.35, 0.65, 2), rng.uniform(0.2, 0.3)
        disc = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        freq = rng.uniform(3, 6) * texture
        pixels = 80 + 60 * disc + 25 * np.sin(2 * np.pi * freq * x + rng.uniform(0, 6)) * np.cos(2 * np.pi * freq * y)
        pixels += rng.normal(0, 8 * texture, pixels.shape)
        PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / f"case{k:03d}.png")
        PILImage.fromarray(disc.astype(np.uint8) * 255).save(masks / f"case{k:03d}.png")
    return images, masks


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
    color: bool = False,
    gantry_tilt: float = 0.0,
    transfer_syntax: str | None = None,
    enhanced: bool = False,
    bits_stored: int = 16,
    seed: int = 0,
) -> list[Path]:
    """Write ``volume`` as a DICOM series: one single-frame file per slice, or one enhanced file.

    ``volume`` is ``(I, J, K)`` (columns, rows, slices), ``(I, J, K, T)`` for ``T`` volumes
    at the same positions (Temporal Position Identifier and Acquisition Number ``t + 1``),
    or ``(I, J, K, 3)`` uint8 RGB when ``color``.

    Geometry is DICOM's (LPS): ``row_direction``/``column_direction`` are Image
    Orientation (Patient), ``spacing`` is (column, row, slice) in mm, and slice ``k`` sits at
    ``origin + k * spacing[2] * (row × column)``, shifted along the column direction by
    ``k * spacing[2] * tan(gantry_tilt)`` when ``gantry_tilt`` (degrees) is set, as a tilted
    CT gantry does. ``slice_order`` sets Instance Number order: ``descending`` and
    ``interleaved`` number the slices as scanners do; ``shuffled`` numbers them at random.
    Stored values are ``(volume - intercept) / slope``. ``transfer_syntax`` compresses the
    pixels with an encoder pydicom has (RLE Lossless, JPEG 2000 Lossless). ``enhanced``
    writes one Enhanced CT/MR multi-frame file with per-frame positions instead. ``bits_stored``
    sets Bits Stored of grey images (many CT scanners write 12); the stored values must fit. File names
    are random so that nothing can rely on them. Returns the files in slice order.
    """
    from pydicom.uid import ExplicitVRLittleEndian

    if slice_order not in SLICE_ORDERS:
        raise ValueError(f"slice_order must be one of {SLICE_ORDERS}, got {slice_order!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    row = np.asarray(row_direction, dtype=float)
    column = np.asarray(column_direction, dtype=float)
    normal = np.cross(row, column)
    step = normal * spacing[2] + column * spacing[2] * np.tan(np.radians(gantry_tilt))
    n_slices = volume.shape[2]
    numbering = {
        "ascending": np.arange(n_slices),
        "descending": np.arange(n_slices)[::-1],
        "interleaved": np.argsort(np.r_[np.arange(0, n_slices, 2), np.arange(1, n_slices, 2)]),
        "shuffled": rng.permutation(n_slices),
    }[slice_order]
    stored = _stored_values(volume, color, rescale, bits_stored)
    n_frames = stored.shape[3]
    ds = _base_dataset(
        modality, enhanced, patient_name, patient_id, study_uid, series_uid, frame_of_reference_uid,
        series_number, series_description, body_part,
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if gantry_tilt:
        ds.GantryDetectorTilt = float(gantry_tilt)
    _pixel_module(ds, stored, rescale, bits_stored)
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, column spacing
    ds.SliceThickness = float(spacing[2])
    orientation = [float(v) for v in (*row, *column)]
    positions = [[round(float(v), 6) for v in np.asarray(origin, dtype=float) + k * step] for k in range(n_slices)]
    if enhanced:
        order = [(t, int(k)) for t in range(n_frames) for k in np.argsort(numbering)]
        _enhanced_frames(ds, order, orientation, positions, spacing, rescale)
        ds.PixelData = b"".join(np.ascontiguousarray(stored[:, :, k, t].transpose(1, 0, 2)).tobytes() for t, k in order)
        return [_save(ds, folder / f"{rng.integers(1 << 62):016x}.dcm", transfer_syntax)]
    ds.ImageOrientationPatient = orientation
    return _single_frame_files(ds, stored, numbering, positions, normal, folder, rng, transfer_syntax)


def _stored_values(volume: np.ndarray, color: bool, rescale: tuple[float, float], bits_stored: int) -> np.ndarray:
    """``(I, J, K, T, C)`` values as stored: uint8 RGB, or ``(volume - intercept) / slope`` in 16 bits."""
    if color:
        return volume.astype(np.uint8)[:, :, :, None, :]
    slope, intercept = rescale
    stored = np.round((volume.astype(np.float64) - intercept) / slope)
    stored = stored.astype(np.int16 if stored.min() < 0 else np.uint16)
    stored = stored.reshape(stored.shape[:3] + (-1, 1))
    limit = 1 << (bits_stored - (stored.dtype == np.int16))
    if not -limit <= stored.min() and stored.max() < limit:
        raise ValueError(f"stored values {stored.min()}..{stored.max()} do not fit in {bits_stored} bits")
    return stored


def _single_frame_files(ds, stored: np.ndarray, numbering: np.ndarray, positions: list, normal: np.ndarray,
                        folder: Path, rng: np.random.Generator, transfer_syntax: str | None) -> list[Path]:
    """One file per slice and time point of ``stored`` ``(I, J, K, T, C)``, from the template ``ds``."""
    n_slices, n_frames = stored.shape[2], stored.shape[3]
    if n_frames > 1:
        ds.NumberOfTemporalPositions = n_frames
    paths = []
    for t in range(n_frames):
        for k in range(n_slices):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _new_uid()
            ds.InstanceNumber = t * n_slices + int(numbering[k]) + 1
            ds.AcquisitionNumber = t + 1
            if n_frames > 1:
                ds.TemporalPositionIdentifier = t + 1
            ds.ImagePositionPatient = positions[k]
            ds.SliceLocation = round(float(np.asarray(positions[k]) @ normal), 6)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k, t].transpose(1, 0, 2)).tobytes()
            paths.append(_save(ds, folder / f"{rng.integers(1 << 62):016x}.dcm", transfer_syntax))
    return paths


def _base_dataset(
    modality: str, enhanced: bool, patient_name: str, patient_id: str, study_uid: str | None,
    series_uid: str | None, frame_of_reference_uid: str | None, series_number: int,
    series_description: str, body_part: str,
):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, EnhancedMRImageStorage, MRImageStorage

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_classes = {(True, True): EnhancedCTImageStorage, (True, False): CTImageStorage,
                   (False, True): EnhancedMRImageStorage, (False, False): MRImageStorage}
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_classes[modality == "CT", enhanced]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _new_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid or _new_uid()
    ds.SeriesInstanceUID = series_uid or _new_uid()
    ds.FrameOfReferenceUID = frame_of_reference_uid or _new_uid()
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC0001"
    ds.StudyID = "1"
    ds.Modality = modality
    ds.Manufacturer = "medfm synthetic"
    ds.BodyPartExamined = body_part
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    return ds


def _pixel_module(ds, stored: np.ndarray, rescale: tuple[float, float], bits_stored: int = 16) -> None:
    """Image Pixel attributes for ``stored`` ``(I, J, K, T, C)``: uint8 RGB or 16-bit grey."""
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[0])
    if stored.shape[4] == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        return
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if "Enhanced" not in ds.SOPClassUID.name:  # enhanced objects carry rescale per frame
        ds.RescaleSlope = f"{rescale[0]:g}"
        ds.RescaleIntercept = f"{rescale[1]:g}"
        ds.RescaleType = "HU" if ds.Modality == "CT" else "US"


def _enhanced_frames(ds, order, orientation, positions, spacing, rescale) -> None:
    """Shared and per-frame functional groups for frames ``order`` (``(t, k)`` pairs)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    def item(**attributes) -> DicomSequence:
        element = Dataset()
        for key, value in attributes.items():
            setattr(element, key, value)
        return DicomSequence([element])

    shared = Dataset()
    shared.PixelMeasuresSequence = item(PixelSpacing=[float(spacing[1]), float(spacing[0])], SliceThickness=float(spacing[2]))
    shared.PlaneOrientationSequence = item(ImageOrientationPatient=orientation)
    shared.PixelValueTransformationSequence = item(
        RescaleSlope=f"{rescale[0]:g}", RescaleIntercept=f"{rescale[1]:g}", RescaleType="US"
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for t, k in order:
        frame = Dataset()
        frame.PlanePositionSequence = item(ImagePositionPatient=positions[k])
        frame.FrameContentSequence = item(TemporalPositionIndex=t + 1, InStackPositionNumber=k + 1, StackID="1")
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.NumberOfFrames = len(order)
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.AcquisitionContextSequence = DicomSequence([])
    ds.ContentDate = "20260101"
    ds.ContentTime = "120000"


def _save(ds, path: Path, transfer_syntax: str | None) -> Path:
    if transfer_syntax is not None:
        ds = copy.deepcopy(ds)  # compress() rewrites the pixels and the file meta in place
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path
