"""Prompts written as text: the ``medfm segment`` options and the prompt files they name.

``--point x,y[,z][:pos|neg]`` and ``--box x0,y0,x1,y1[,z]`` in pixels (x column, y row of
:meth:`Image.frame`); ``z`` is the slice of a volume, or the frame of a video (an image with
one slice and several frames). Points and boxes on one plane make one prompt; a
``--scribble`` mask file on the input's grid adds, on each plane it marks, a positive
scribble; a ``--prompts`` JSON file adds a list of :meth:`Prompt.to_dict` prompts (several
labels, negative scribbles…). Errors are one-line :class:`MedfmError`\\ s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.formats import load
from medfm.io.image import Image
from medfm.io.label_maps import mask_foreground
from medfm.models.segmenters import Prompt, Scribble


def parse_prompts(
    image: Image,
    points: Sequence[str] = (),
    boxes: Sequence[str] = (),
    scribble: str | os.PathLike | None = None,
    prompts_file: str | os.PathLike | None = None,
) -> list[Prompt]:
    """The prompts for ``image`` from their text forms (see the module); one prompt per plane for
    points, boxes and scribbles, then the JSON file's prompts. Raises :class:`MedfmError` for
    bad syntax, a missing plane coordinate on a volume or video, or a scribble of another shape."""
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
        drawn = mask_foreground(marks.array[..., :3].max(axis=-1))  # (I, J, K, T)
        for k, t in sorted({(int(k), int(t)) for k, t in np.argwhere(drawn.any(axis=(0, 1)))}):
            prompt = on(k if image.spatial_shape[2] > 1 else t, "--scribble")
            prompt.scribbles.append(Scribble(mask=drawn[:, :, k, t].T))  # (rows, columns), as Image.frame
    listed = []
    if prompts_file is not None:
        try:
            items = json.loads(Path(prompts_file).read_text())
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise ValueError("a list of prompt objects such as [{\"label\": 1, \"points\": [[x, y]]}] is expected")
            listed = [Prompt.from_dict(item) for item in items]
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
