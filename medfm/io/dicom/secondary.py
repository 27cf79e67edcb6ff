"""Synthetic 2D images as DICOM Secondary Capture objects that say what they are.

Image Type ``DERIVED\\SECONDARY``, a Derivation Description (:data:`medfm.provenance.SYNTHETIC_NOTE`
and the generator), the whole provenance record in medfm's private block
(:mod:`medfm.io.dicom.provenance`), and invented patient attributes (``SYNTHETIC``): a
generated image belongs to no patient. Each object is its own study and series.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.dicom.provenance import add_provenance
from medfm.io.formats import atomic_path
from medfm.io.image import Image
from medfm.provenance import SYNTHETIC_NOTE


def is_synthetic_dicom(metadata: dict) -> bool:
    """Whether a DICOM series' header metadata (``image_type``, ``derivation_description``) marks it synthetic
    the way :func:`write_synthetic_dicom` does: DERIVED\\SECONDARY and a derivation description saying so."""
    image_type = [str(v).upper() for v in (metadata.get("image_type") or [])]
    described = "SYNTHETIC" in str(metadata.get("derivation_description") or "").upper()
    return image_type[:2] == ["DERIVED", "SECONDARY"] and described


def write_synthetic_dicom(image: Image, path: str | os.PathLike) -> Path:
    """Write a synthetic 8-bit 2D ``image`` (grey or RGB, with its generation provenance) as a Secondary
    Capture DICOM file at ``path``; written to a temporary file and renamed."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path = Path(path)
    if image.provenance is None or not image.provenance.synthetic:
        raise MedfmError(f"{display_path(path)}: only synthetic images with their provenance are written this way")
    if not image.is_2d or image.num_frames > 1 or image.num_channels not in (1, 3) or image.array.dtype != np.uint8:
        raise MedfmError(f"{display_path(path)}: a synthetic DICOM image is one 8-bit grey or RGB plane")
    pixels = np.ascontiguousarray(np.asarray(image.array[:, :, 0, 0, :]).transpose(1, 0, 2))  # rows, columns, samples
    now = datetime.now(UTC)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "SYNTHETIC", "SYNTHETIC"
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = "OT"
    ds.ConversionType = "SYN"  # synthetic image (PS3.3 C.8.6.1)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = f"{SYNTHETIC_NOTE} ({image.provenance.model})"[:1024]
    ds.SeriesDescription = "synthetic"
    ds.BurnedInAnnotation = "NO"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = int(pixels.shape[2])
    ds.PhotometricInterpretation = "RGB" if pixels.shape[2] == 3 else "MONOCHROME2"
    if pixels.shape[2] == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    add_provenance(ds, image.provenance)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
