"""Segment an image file into a label-map file (``medfm segment``), with a summary; or many
into a folder (:func:`segment_files`).

The prompts come from their text forms (:mod:`medfm.tasks.prompt_text`); the label map is
written atomically in the format its suffix names, stamped with its provenance.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.catalog.loading import load_record, record_series
from medfm.catalog.store import ImageRecord
from medfm.errors import display_path
from medfm.io.dicom import DICOM
from medfm.io.formats import detect_format, load, output_folder
from medfm.io.image import Image
from medfm.io.label_maps import save_segmentation
from medfm.models.segmenters import Prompt, Segmenter
from medfm.tasks.batch import BatchInput, BatchReport, output_paths, run_batch
from medfm.tasks.prompt_text import parse_prompts
from medfm.tasks.segment import PropagationRule, measure, propagate, segment


def segment_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    segmenter: Segmenter,
    points: Sequence[str] = (),
    boxes: Sequence[str] = (),
    scribble: str | os.PathLike | None = None,
    prompts_file: str | os.PathLike | None = None,
    propagation: PropagationRule | None = None,
    progress: bool = False,
    record: ImageRecord | None = None,
) -> dict[str, Any]:
    """Load ``source``, segment it from the prompts, write ``output`` atomically; the summary.

    With a catalog ``record``, the image is read from exactly the record's own files
    (:func:`medfm.catalog.loading.load_record`), whatever else its folder holds.

    The summary holds, per structure, its size (voxels, and mm² or mm³ from the spacing),
    planes and mean score; timings in s; and the label map's ``provenance``
    (:class:`~medfm.provenance.Provenance`: model, weights sha256, medfm version, prompts,
    per-plane scores), the record the file carries.
    ``progress`` shows propagation's progress bar on stderr.
    """
    started = time.perf_counter()
    image, series = load_input(source, record)
    prompts = parse_prompts(image, points, boxes, scribble, prompts_file)
    loaded = time.perf_counter()
    axis = "k" if image.spatial_shape[2] > 1 or image.num_frames == 1 else "t"
    if propagation is not None:
        by_plane: dict[int, list[Prompt]] = {}
        for prompt in prompts:
            by_plane.setdefault((prompt.slice_index if axis == "k" else prompt.frame_index) or 0, []).append(prompt)
        labels = propagate(image, segmenter, by_plane, axis=axis, rule=propagation, progress=progress)
    else:
        labels = segment(image, prompts, segmenter)
    segmented = time.perf_counter()
    save_segmentation(labels, output, series)
    record = labels.provenance
    sizes = {entry["label"]: entry for entry in measure(labels)}
    structures = []
    for structure in record.to_dict()["structures"]:
        scores = [plane["score"] for plane in structure["planes"]]
        size = sizes.get(structure["label"], {"voxels": 0})
        structures.append({**{k: v for k, v in structure.items() if k != "planes"}, **size,
                           "planes": len(scores), "score": float(np.mean(scores))})
    return {
        "input": display_path(source), "output": display_path(output),
        "propagated": propagation is not None, "structures": structures,
        "timing_s": {"load": round(loaded - started, 3), "segment": round(segmented - loaded, 3),
                     "write": round(time.perf_counter() - segmented, 3)},
        "provenance": record,
    }


def load_input(source: str | os.PathLike, record: ImageRecord | None = None) -> tuple[Image, Any]:
    """``(image, the DicomSeries it was read from or None)``: from exactly a catalog ``record``'s files when given,
    else from ``source`` (a file or DICOM series folder); the series is what a DICOM SEG output references."""
    if record is not None:
        return load_record(record), record_series(record) if record.format == DICOM.name else None
    image = load(source)
    return image, _source_series(Path(os.fsdecode(source)), image)


def _source_series(path: Path, image: Image) -> Any:
    """The scanned :class:`DicomSeries` a DICOM input was read from (for a SEG), else ``None``."""
    if detect_format(path).name != "dicom":
        return None
    from medfm.io.dicom import scan_dicom

    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    series, _ = scan_dicom(files)
    return next((s for s in series if s.series_uid == image.metadata.get("series_uid")), None)


def segment_files(
    inputs: Sequence[BatchInput],
    folder: str | os.PathLike,
    segmenter: Segmenter,
    *,
    suffix: str | None = None,
    points: Sequence[str] = (),
    boxes: Sequence[str] = (),
    scribble: str | os.PathLike | None = None,
    prompts_file: str | os.PathLike | None = None,
    propagation: PropagationRule | None = None,
    progress: bool = False,
) -> BatchReport:
    """:func:`segment_file` for each input into ``folder`` (named by :func:`~medfm.tasks.batch.output_paths`),
    with the input's own prompts (a manifest row's) or else the shared ``points`` and ``boxes``; an
    input that fails is reported in the :class:`BatchReport` and the others go on."""
    targets = dict(zip(inputs, output_paths(inputs, folder, suffix)))

    def one(item: BatchInput) -> dict[str, Any]:
        own = bool(item.points or item.boxes)
        return segment_file(item.path, targets[item], segmenter, points=item.points if own else points,
                            boxes=item.boxes if own else boxes, scribble=scribble, prompts_file=prompts_file,
                            propagation=propagation, record=item.record)

    with output_folder(folder):
        return run_batch(inputs, one, progress=progress, description="Segmenting")
