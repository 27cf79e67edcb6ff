"""Writing label maps with their provenance, and reading the provenance back.

:func:`save_segmentation` writes a label map from :mod:`medfm.tasks.segment` as PNG
(one 2D plane the input's size: 0 background, 255 for a single structure, else each
structure's label value), NIfTI (the input's grid, intent "label") or, for a label map
of a DICOM series, DICOM SEG (:mod:`medfm.io.dicom.seg`). The record in
``metadata["segmentation"]`` (model, weights sha256, medfm version, prompts, scores)
travels inside the file: a PNG text chunk, a NIfTI comment extension, the SEG's
algorithm identification. Every write is atomic. :func:`read_provenance` reads it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.dicom import DicomSeries
from medfm.io.formats import atomic_path, image_suffix
from medfm.io.image import Image

#: The PNG text chunk keyword holding the JSON record.
PNG_KEY = "medfm-segmentation"
SUFFIXES = (".png", ".nii", ".nii.gz", ".dcm")


def save_segmentation(labels: Image, path: str | os.PathLike, series: DicomSeries | None = None) -> Path:
    """Write ``labels`` by ``path``'s suffix (.png, .nii, .nii.gz, or .dcm with the source ``series``)."""
    path = Path(os.fsdecode(path))
    suffix = image_suffix(path)
    if suffix not in SUFFIXES:
        raise MedfmError(f"{display_path(path)}: a segmentation is written as {', '.join(SUFFIXES)}")
    if suffix == ".dcm":
        if series is None:
            raise MedfmError(f"{display_path(path)}: DICOM SEG output needs a DICOM input to reference; write .nii.gz or .png")
        from medfm.io.dicom.seg import write_seg

        return write_seg(labels, series, path)
    record = json.dumps(labels.metadata.get("segmentation", {}))
    with atomic_path(path) as tmp:
        if suffix == ".png":
            _write_png(labels, tmp, record)
        else:
            _write_nifti(labels, tmp, record)
    return path


def _write_png(labels: Image, path: Path, record: str) -> None:
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    if not labels.is_2d or labels.num_frames > 1:
        raise MedfmError(f"PNG holds one 2D plane; this label map is {labels.shape[:4]} (I, J, K, T): write .nii.gz")
    plane = labels.frame()
    top = int(plane.max())
    # a single structure shows as white; several keep their label values
    pixels = plane.astype(np.uint8) * 255 if top <= 1 else plane.astype(np.uint8 if top < 256 else np.uint16)
    info = PngInfo()
    info.add_itxt(PNG_KEY, record)
    PILImage.fromarray(pixels).save(path, format="PNG", pnginfo=info)


def _write_nifti(labels: Image, path: Path, record: str) -> None:
    import nibabel as nib

    array = labels.array[..., 0] if labels.num_frames > 1 else labels.array[..., 0, 0]
    nifti = nib.Nifti1Image(array, labels.affine)
    nifti.set_qform(labels.affine, code=1)
    nifti.set_sform(labels.affine, code=1)
    nifti.header.set_xyzt_units("mm", "sec")
    nifti.header.set_intent("label")
    nifti.header.extensions.append(nib.nifti1.Nifti1Extension("comment", record.encode()))
    nib.save(nifti, path)


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The record :func:`save_segmentation` put in a PNG or NIfTI file, or a SEG's model, weights and version."""
    path = Path(os.fsdecode(path))
    name = path.name.lower()
    if name.endswith(".png"):
        from PIL import Image as PILImage

        with PILImage.open(path) as picture:
            text = picture.text.get(PNG_KEY)
        return json.loads(text) if text else {}
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        for extension in nib.load(path).header.extensions:
            if extension.get_code() == 6:  # NIfTI "comment"
                return json.loads(extension.get_content())
        return {}
    from pydicom import dcmread

    item = dcmread(path, stop_before_pixels=True).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    parameters = dict(pair.split("=", 1) for pair in str(item.get("AlgorithmParameters", "")).split(",") if "=" in pair)
    return {"model": str(item.AlgorithmName), "weights_sha256": parameters.get("weights_sha256"),
            "medfm_version": parameters.get("medfm_version")}
