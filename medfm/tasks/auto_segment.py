"""Automatic segmentation: a trained :class:`~medfm.models.automatic.AutoSegmenter` over many images, no prompts.

:func:`auto_segment` gives one label map on the image's grid (the plan's label values, 0
background) stamped with its provenance: the model's name and weights sha256, the
input's pixel id, per-label mean confidence, and the plan, flips and component settings.
:func:`auto_segment_files` writes one output per input, named after it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medfm.errors import MedfmError, display_path
from medfm.io.formats import image_suffix, load
from medfm.io.image import Image
from medfm.io.label_maps import save_segmentation
from medfm.models.automatic import AutoSegmenter
from medfm.models.automatic.segmenter import planar_pixels
from medfm.tasks.segment import measure, segmentation_provenance


def auto_segment(image: Image, segmenter: AutoSegmenter, path: str | os.PathLike = "image", *, flips: bool = False,
                 largest_component: bool = False) -> Image:
    """``image``'s label map; ``flips``: average over mirror images; ``largest_component``: keep each label's largest piece."""
    probabilities = segmenter.probabilities(planar_pixels(image, path), flips=flips)
    labels = segmenter.label_map(probabilities)
    if largest_component:
        labels = keep_largest_components(labels)
    structures = []
    for channel, value in enumerate(segmenter.plan.label_values, start=1):
        inside = labels == value
        score = float(probabilities[channel][inside].mean()) if inside.any() else 0.0
        structures.append({"label": value, "label_name": segmenter.plan.labels[value],
                           "planes": [{"slice_index": 0, "frame_index": 0, "score": score}]})
    result = image.with_array(labels[:, :, None, None, None])
    result.provenance = segmentation_provenance(
        image, segmenter.info, [], structures,
        {"mode": "automatic", "plan": segmenter.plan.to_dict(), "flips": flips, "largest_component": largest_component})
    return result


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Each label value's largest connected piece (face connectivity); the rest becomes background."""
    kept = np.zeros_like(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        pieces, count = ndimage.label(labels == value)
        if count:
            sizes = np.bincount(pieces.ravel())[1:]
            kept[pieces == 1 + int(np.argmax(sizes))] = value
    return kept


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders as the image files directly inside them (sorted); MedfmError for what does not exist."""
    files = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and image_suffix(p))
            if not found:
                raise MedfmError(f"{display_path(path)}: holds no image files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise MedfmError(f"{display_path(path)}: not found")
    return files


def output_name(path: Path) -> str:
    """The input's file name with its image suffix replaced by ``.png`` (2D label maps)."""
    suffix = image_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)] + ".png" if suffix else path.name + ".png"


def auto_segment_files(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, segmenter: AutoSegmenter, *,
                       flips: bool = False, largest_component: bool = False,
                       progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Segment each input into ``out_dir/<input name>.png``; returns per output its path and structure sizes.

    Output names are checked for clashes before anything is written.
    """
    files = expand_inputs(inputs)
    out_dir = Path(out_dir)
    targets: dict[str, Path] = {}
    for path in files:
        name = output_name(path)
        if name in targets:
            raise MedfmError(f"{display_path(path)} and {display_path(targets[name])} would both be written to "
                             f"{display_path(out_dir / name)}; segment them into different folders")
        targets[name] = path
    results = []
    for done, (name, path) in enumerate(targets.items(), start=1):
        labels = auto_segment(load(path), segmenter, path, flips=flips, largest_component=largest_component)
        written = save_segmentation(labels, out_dir / name)
        results.append({"input": display_path(path), "output": display_path(written), "structures": measure(labels)})
        if progress is not None:
            progress(done, len(targets))
    return results
