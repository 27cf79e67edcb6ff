"""Enhanced multi-frame objects: one file, each frame with its functional groups.

Each frame's position, orientation, pixel spacing and rescale come from its per-frame
functional group, else from the shared one, else from the top-level attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from medfm.io.dicom.frames import Frame, PixelLayout


def _group(item: Dataset, shared: Dataset, sequence: str) -> Dataset | None:
    for source in (item, shared):
        value = source.get(sequence)
        if value:
            return value[0]
    return None


def frames(ds: Dataset, path: Path, layout: PixelLayout, common: dict[str, Any]) -> list[Frame]:
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) < layout.number_of_frames:
        raise ValueError(f"{len(per_frame)} per-frame functional groups for {layout.number_of_frames} frames")
    # Some writers leave groups of frames they dropped (liver_1frame.dcm: 3 groups, 1 frame);
    # pydicom decodes Number of Frames frames, and the first groups describe them.
    per_frame = per_frame[:layout.number_of_frames]
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    result = []
    for n, item in enumerate(per_frame):
        plane = _group(item, shared, "PlanePositionSequence")
        orient = _group(item, shared, "PlaneOrientationSequence")
        measures = _group(item, shared, "PixelMeasuresSequence")
        value = _group(item, shared, "PixelValueTransformationSequence")
        content = _group(item, shared, "FrameContentSequence") or Dataset()
        if plane is None or orient is None or measures is None:
            raise ValueError(f"frame {n + 1} has no plane position, orientation or pixel measures")
        rescale = common["rescale"]
        if value is not None and value.get("RescaleSlope") is not None:
            rescale = (float(value.RescaleSlope), float(value.get("RescaleIntercept") or 0.0))
        thickness = measures.get("SpacingBetweenSlices") or measures.get("SliceThickness")
        volume_key = (float(content.get("TemporalPositionIndex") or 0), *common["volume_key"][1:], n)
        result.append(Frame(
            path, n, layout, tuple(float(v) for v in plane.ImagePositionPatient),
            tuple(float(v) for v in orient.ImageOrientationPatient),
            tuple(float(v) for v in measures.PixelSpacing), layout.rows, layout.columns, rescale,
            volume_key, abs(float(thickness)) if thickness else common["slice_spacing"],
            common["gantry_tilt"], common["acquisition_3d"],
        ))
    return result
