"""DICOM Segmentation (SEG) output with highdicom, referencing the series it was drawn on.

medfm's DICOM grid is dcm2niix's (rows flipped, slices along the normal, some 3D
acquisitions reoriented), so no index arithmetic is trusted to undo it: every source
frame's pixels are placed in the world from its own Image Position / Orientation and
Pixel Spacing, and each takes the label of the label-map voxel there (nearest
neighbour). The SEG's frames therefore correspond pixel for pixel to the source frames,
which highdicom references one by one. Label values become segment numbers 1..n in
ascending order, each named by its structure's ``label_name`` (else "label V"), typed by its
SNOMED CT code (else "Tissue") and shown in its colour (else the palette's),
as :func:`medfm.structures.structure_style` says.
:func:`read_seg` reads the segment numbers back onto the series' grid the same way.

A SEG is written only with the label map's :class:`~medfm.provenance.Provenance`: the
algorithm identification names its model (version: the weights' sha256, or medfm's
version for randomly initialised weights; family: artificial intelligence), and the whole
record (prompts and scores included) goes in a private element
(:mod:`medfm.io.dicom.provenance`), which :func:`medfm.load` reads back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, UnreadableFileError, display_path
from medfm.io.dicom import DicomSeries, quiet_pydicom
from medfm.io.dicom.provenance import add_provenance
from medfm.io.formats import atomic_path
from medfm.io.image import Image
from medfm.structures import rgb, structure_style


def write_seg(labels: Image, series: DicomSeries, path: str | os.PathLike) -> Path:
    """Write the label map ``labels`` (on ``series``' grid) as a BINARY DICOM SEG, atomically.

    ``labels.provenance`` is required: a SEG never says "unknown" algorithm.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    path = Path(path)
    provenance = labels.provenance
    if provenance is None:
        raise MedfmError(f"{display_path(path)}: the label map has no provenance (the model and prompts that made it): "
                         "no DICOM SEG written; make it with medfm.tasks.segment or set Image.provenance")
    if labels.num_frames != 1:
        raise MedfmError(f"DICOM SEG output takes one volume; this label map has {labels.num_frames} frames: write .nii.gz")
    frames = sorted(series.frames, key=lambda f: (str(f.path), f.index))
    if not frames:
        raise MedfmError("the source series has no frames recorded; scan it with scan_dicom")
    if any(f.layout.mosaic for f in frames):
        raise MedfmError("DICOM SEG output of a Siemens mosaic series is not supported: write .nii.gz")
    files = list(dict.fromkeys(f.path for f in frames))
    if len(files) != len(frames) and len(files) != 1:
        raise MedfmError("DICOM SEG output needs single-frame files or one multi-frame file; this series mixes them")
    values = [int(v) for v in np.unique(labels.array) if v != 0]
    if not values:
        raise MedfmError("the segmentation is empty (no labelled voxel): no DICOM SEG written")
    segment_number = np.zeros(max(values) + 1, np.uint16)
    segment_number[values] = np.arange(1, len(values) + 1)
    planes = np.stack([segment_number[_labels_on_frame(labels, frame)] for frame in frames])

    structures = {s["label"]: s for s in provenance.structures if "label" in s}
    model = provenance.model
    parameters = {"weights_sha256": provenance.weights_sha256 or "none (randomly initialised)",
                  "medfm_version": provenance.medfm_version}
    if provenance.adapter is not None:
        parameters.update(adapter=provenance.adapter, adapter_sha256=provenance.adapter_sha256)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=provenance.weights_sha256 or f"medfm {provenance.medfm_version}"[:64],
        parameters=parameters,
    )
    algorithm_type = (hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if provenance.prompts
                      else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC)
    descriptions = []
    for number, value in enumerate(values, start=1):
        color, coded = structure_style(structures.get(value), value)
        category, property_type = coded.concepts() if coded else (codes.SCT.Tissue, codes.SCT.Tissue)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=(structures.get(value, {}).get("label_name") or f"label {value}")[:64],
            segmented_property_category=category,
            segmented_property_type=property_type,
            algorithm_type=algorithm_type,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*rgb(color)),
        ))
    with quiet_pydicom():
        try:
            sources = [dcmread(file, stop_before_pixels=True) for file in files]
        except Exception as exc:  # pydicom's own errors become one line naming the file
            raise UnreadableFileError(files[0], f"cannot read the source DICOM header ({exc})") from None
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=planes,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=int(series.metadata.get("series_number") or 0) + 1000,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="medfm",
            manufacturer_model_name=model[:64],
            software_versions=f"medfm {provenance.medfm_version}",
            device_serial_number="none",
            content_description=f"medfm segment with {model}"[:64],
            series_description=f"SEG {model}"[:64],
        )
        add_provenance(seg, provenance)
        with atomic_path(path) as tmp:
            seg.save_as(tmp)
    return path


def _labels_on_frame(labels: Image, frame: Any) -> np.ndarray:
    """The label map's values at each pixel (rows, columns) of a source frame, by its geometry."""
    i, j, k = _voxels_of_frame(labels, frame)
    return labels.array[i, j, k, 0, 0]


def _voxels_of_frame(grid: Image, frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel indices ``(i, j, k)`` of ``grid`` nearest to each pixel (rows, columns) of a source frame."""
    row, column = np.asarray(frame.orientation[:3]), np.asarray(frame.orientation[3:])
    rows, columns = np.mgrid[: frame.rows, : frame.columns]
    world = (
        np.asarray(frame.position)
        + columns[..., None] * frame.pixel_spacing[1] * row
        + rows[..., None] * frame.pixel_spacing[0] * column
    )
    inverse = np.linalg.inv(grid.lps_affine)
    voxels = np.rint(world @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
    shape = np.asarray(grid.spatial_shape)
    inside = np.all((voxels >= 0) & (voxels < shape), axis=-1)
    if not inside.all():
        raise MedfmError("the label map does not cover the source series (is it on another grid?)")
    return tuple(np.moveaxis(voxels, -1, 0))


def read_seg(path: str | os.PathLike, series: DicomSeries, grid: Image) -> np.ndarray:
    """The segment numbers of a BINARY SEG written by :func:`write_seg`, back on ``grid``: ``(I, J, K)`` uint16.

    ``series`` is the source series and ``grid`` its image (or a label map on it); each
    source frame's SEG pixels go to the voxels :func:`write_seg` took them from.
    """
    import highdicom as hd
    from pydicom import dcmread

    with quiet_pydicom():
        try:
            seg = hd.seg.segread(path)
        except Exception as exc:  # pydicom's and highdicom's errors become one line naming the file
            raise UnreadableFileError(path, f"cannot read the DICOM SEG ({type(exc).__name__})") from None
        numbers = np.zeros(grid.spatial_shape, np.uint16)
        uids = {file: str(dcmread(file, stop_before_pixels=True).SOPInstanceUID) for file in {f.path for f in series.frames}}
        multi_frame = _multi_frame(series)
        for frame in series.frames:
            uid = uids[frame.path]
            try:
                if multi_frame:
                    planes = seg.get_pixels_by_source_frame(uid, [frame.index + 1], combine_segments=True,
                                                            skip_overlap_checks=True)
                else:
                    planes = seg.get_pixels_by_source_instance([uid], combine_segments=True, skip_overlap_checks=True)
            except (KeyError, ValueError):  # no SEG frame for this source frame: nothing segmented there
                continue
            i, j, k = _voxels_of_frame(grid, frame)
            numbers[i, j, k] = np.maximum(numbers[i, j, k], planes[0])
    return numbers


def _multi_frame(series: DicomSeries) -> bool:
    return len({f.path for f in series.frames}) == 1 and len(series.frames) > 1
