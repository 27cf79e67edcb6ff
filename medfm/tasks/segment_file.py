"""``medfm segment``: one image file in, one label map file out, with a summary.

The command-line prompt syntax lives here so that its errors are one-line
:class:`MedfmError`\\ s: ``--point x,y[,z][:pos|neg]`` and ``--box x0,y0,x1,y1[,z]``
in pixels (x column, y row of :meth:`Image.frame`); ``z`` is the slice of a volume, or
the frame of a video (an image with one slice and several frames). Points and boxes on
one plane make one prompt; a ``--scribble`` mask file on the input's grid adds, on each
plane it marks, a positive scribble; a ``--prompts`` JSON file adds a list of
:meth:`Prompt.to_dict` prompts (several labels, negative scribbles…).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.formats import detect_format, load
from medfm.io.image import Image
from medfm.io.segmentation import save_segmentation
from medfm.models.segmenters import Prompt, Scribble, Segmenter
from medfm.tasks.segment import measure, propagate, segment


def segment_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    segmenter: Segmenter,
    points: Sequence[str] = (),
    boxes: Sequence[str] = (),
    scribble: str | os.PathLike | None = None,
    prompts_file: str | os.PathLike | None = None,
    propagate_prompts: bool = False,
) -> dict[str, Any]:
    """Load ``source``, segment it from the prompts, write ``output`` atomically; the summary.

    The summary holds the model, weights sha256, medfm version, prompts, per structure
    its size (voxels, and mm² or mm³ from the spacing) and mean score, and timings in s.
    """
    started = time.perf_counter()
    image = load(source)
    series = _source_series(Path(os.fsdecode(source)), image)
    prompts = _prompts(image, points, boxes, scribble, prompts_file)
    loaded = time.perf_counter()
    axis = "k" if image.spatial_shape[2] > 1 or image.num_frames == 1 else "t"
    if propagate_prompts:
        by_plane: dict[int, list[Prompt]] = {}
        for prompt in prompts:
            by_plane.setdefault((prompt.slice_index if axis == "k" else prompt.frame_index) or 0, []).append(prompt)
        labels = propagate(image, segmenter, by_plane, axis=axis)
    else:
        labels = segment(image, prompts, segmenter)
    segmented = time.perf_counter()
    save_segmentation(labels, output, series)
    record = labels.metadata["segmentation"]
    sizes = {entry["label"]: entry for entry in measure(labels)}
    structures = []
    for structure in record["structures"]:
        scores = [plane["score"] for plane in structure["planes"]]
        size = sizes.get(structure["label"], {"voxels": 0})
        structures.append({**{k: v for k, v in structure.items() if k != "planes"}, **size,
                           "planes": len(scores), "score": float(np.mean(scores))})
    return {
        "input": display_path(source), "output": display_path(output),
        "model": record["model"], "weights_sha256": record["weights_sha256"], "medfm_version": record["medfm_version"],
        "propagated": propagate_prompts, "prompts": record["prompts"], "structures": structures,
        "timing_s": {"load": round(loaded - started, 3), "segment": round(segmented - loaded, 3),
                     "write": round(time.perf_counter() - segmented, 3)},
    }


def _source_series(path: Path, image: Image) -> Any:
    """The scanned :class:`DicomSeries` a DICOM input was read from (for a SEG), else ``None``."""
    if detect_format(path).name != "dicom":
        return None
    from medfm.io.dicom import scan_dicom

    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    series, _ = scan_dicom(files)
    return next((s for s in series if s.series_uid == image.metadata.get("series_uid")), None)


def _prompts(
    image: Image, points: Sequence[str], boxes: Sequence[str], scribble: Any, prompts_file: Any
) -> list[Prompt]:
    by_plane: dict[int, Prompt] = {}
    planar = image.spatial_shape[2] == 1 and image.num_frames == 1

    def on(plane: int | None, option: str) -> Prompt:
        if plane is None and not planar:
            raise MedfmError(f"{option}: this image has several slices or frames; give the plane as the last coordinate (z)")
        plane = plane or 0
        if plane not in by_plane:
            field = "slice_index" if image.spatial_shape[2] > 1 or planar else "frame_index"
            by_plane[plane] = Prompt(**{field: plane})
        return by_plane[plane]

    for text in points:
        coordinates, _, polarity = text.partition(":")
        values = _numbers(coordinates, "--point", "x,y[,z][:pos|neg]", (2, 3))
        if polarity not in ("", "pos", "neg"):
            raise MedfmError(f"--point {text!r}: the suffix must be :pos or :neg")
        prompt = on(int(values[2]) if len(values) == 3 else None, f"--point {text}")
        prompt.points.append((values[0], values[1]))
        prompt.point_labels.append(0 if polarity == "neg" else 1)
    for text in boxes:
        values = _numbers(text, "--box", "x0,y0,x1,y1[,z]", (4, 5))
        on(int(values[4]) if len(values) == 5 else None, f"--box {text}").boxes.append(tuple(values[:4]))
    if scribble is not None:
        marks = load(scribble)
        if marks.shape[:4] != image.shape[:4]:
            raise MedfmError(
                f"{display_path(scribble)}: scribble mask has shape {marks.shape[:4]} (I, J, K, T); "
                f"the image is {image.shape[:4]}"
            )
        for k, t in sorted({(int(k), int(t)) for k, t in np.argwhere(marks.array.any(axis=(0, 1, 4)))}):
            mask = marks.frame(k, t)
            prompt = on(k if image.spatial_shape[2] > 1 else t, "--scribble")
            prompt.scribbles.append(Scribble(mask=(mask.any(axis=2) if mask.ndim == 3 else mask != 0)))
    listed = []
    if prompts_file is not None:
        try:
            listed = [Prompt.from_dict(item) for item in json.loads(Path(prompts_file).read_text())]
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            raise MedfmError(f"{display_path(prompts_file)}: not a JSON list of prompts ({exc})") from None
    prompts = [by_plane[plane] for plane in sorted(by_plane)] + listed
    if not prompts:
        raise MedfmError("no prompt given: use --point, --box, --scribble or --prompts")
    return prompts


def _numbers(text: str, option: str, syntax: str, counts: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts or not all(np.isfinite(values)):
        raise MedfmError(f"{option} takes {syntax} (numbers); got {text!r}")
    return values
