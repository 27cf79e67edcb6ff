"""Promptable segmentation of images, volumes and videos into one label map.

:func:`segment` runs each prompt on its own plane; :func:`propagate` also carries each
prompted structure from plane to plane through a volume (``axis="k"``) or a video
(``axis="t"``). Both return an :class:`~medfm.io.Image` label map on the input's grid
(``(I, J, K, T)``, 0 background, each structure its prompt's ``label``, 1 by default),
whose ``metadata["segmentation"]`` records the model, its weights' sha256, medfm's
version, the prompts and each structure's per-plane scores. Where structures overlap,
the one whose prompt comes later wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.io.image import Image
from medfm.models.segmenters import Prediction, Prompt, Segmenter
from medfm.progress import progress_bar

#: The segmenter the CLI uses when no ``--model`` is given.
DEFAULT_MODEL = "medfm-interactive"
AXES = ("k", "t")


def segment(image: Image, prompts: Sequence[Prompt], segmenter: Segmenter) -> Image:
    """Each prompt on its plane (``slice_index``, ``frame_index``, 0 when unset) → a label map."""
    if not prompts:
        raise MedfmError("no prompt given: give at least one point, box or scribble")
    labels = _empty_labels(image, prompts)
    structures = []
    for prompt in prompts:
        k, t = _plane(image, prompt.slice_index, prompt.frame_index)
        prediction = _predict(segmenter, image.frame(k, t), [prompt])
        _paint(labels, k, t, prediction.mask, _label(prompt))
        structures.append(_structure(prompt, [(k, t, prediction)]))
    return _stamp(image, labels, segmenter, {"prompts": [p.to_dict() for p in prompts], "structures": structures})


def propagate(
    image: Image,
    segmenter: Segmenter,
    prompts_by_slice: Mapping[int, Sequence[Prompt]],
    axis: str = "k",
    min_area: int = 10,
    min_score: float = 0.5,
    margin: int = 2,
    progress: bool = False,
) -> Image:
    """Segment the prompted planes, then carry each structure outwards through the image.

    ``prompts_by_slice`` maps a slice index k (``axis="k"``) or frame index t (``axis="t"``)
    to the prompts on that plane. From each prompted plane, each structure (one per label)
    moves one plane at a time in both directions, each plane prompted with the previous
    plane's logits as ``mask_input`` and a box around its mask widened by ``margin`` pixels,
    until its mask has fewer than ``min_area`` pixels or its score falls below
    ``min_score`` (the structure has ended). A plane the user prompted for a label keeps
    the user's prompts for that label; between two prompted planes each plane follows the
    nearer one (the lower on a tie). Adding prompts and calling again re-encodes no plane
    the segmenter has cached. ``progress`` shows a bar of the planes segmented on stderr.
    """
    if axis not in AXES:
        raise MedfmError(f"axis must be one of {', '.join(AXES)}; got {axis!r}")
    flat = [(index, prompt) for index, prompts in prompts_by_slice.items() for prompt in prompts]
    if not flat:
        raise MedfmError("no prompt given: give at least one point, box or scribble")
    field = "slice_index" if axis == "k" else "frame_index"
    for index, prompt in flat:
        if getattr(prompt, field) not in (None, index):
            raise MedfmError(f"a prompt filed under {field} {index} says {field} {getattr(prompt, field)}")
    other = {prompt.frame_index if axis == "k" else prompt.slice_index for _, prompt in flat} - {None}
    if len(other) > 1:
        raise MedfmError(f"propagation along {axis} runs on one {'frame' if axis == 'k' else 'slice'}; prompts name {sorted(other)}")
    fixed = other.pop() if other else 0
    count = image.spatial_shape[2] if axis == "k" else image.num_frames
    for index, _ in flat:
        _plane(image, *((index, fixed) if axis == "k" else (fixed, index)))

    labels = _empty_labels(image, [prompt for _, prompt in flat])
    by_label: dict[int, dict[int, list[Prompt]]] = {}
    for index, prompt in flat:
        by_label.setdefault(_label(prompt), {}).setdefault(index, []).append(prompt)
    structures = []
    with progress_bar(progress) as bar:
        # each structure visits at most every plane; it usually ends sooner, and the bar with it
        task = bar.add_task("Propagating", total=count * len(by_label))

        def plane(index: int) -> np.ndarray:
            bar.advance(task)
            return image.frame(index, fixed) if axis == "k" else image.frame(fixed, index)

        for label, seeds in by_label.items():
            planes = _carry(segmenter, plane, seeds, count, min_area, min_score, margin)
            for index, prediction in planes.items():
                k, t = (index, fixed) if axis == "k" else (fixed, index)
                _paint(labels, k, t, prediction.mask, label)
            first = next(iter(seeds.values()))[0]
            placed = [((index, fixed) if axis == "k" else (fixed, index)) + (planes[index],) for index in sorted(planes)]
            structures.append(_structure(first, placed))
    record = {
        "axis": axis, "min_area": min_area, "min_score": min_score, "margin": margin,
        "prompts": [{**prompt.to_dict(), field: index} for index, prompt in flat],
        "structures": structures,
    }
    return _stamp(image, labels, segmenter, record)


def _carry(
    segmenter: Segmenter, plane: Any, seeds: dict[int, list[Prompt]], count: int,
    min_area: int, min_score: float, margin: int,
) -> dict[int, Prediction]:
    """Predictions by plane index for one structure: its prompted planes and where they lead."""
    found: dict[int, Prediction] = {}
    order = sorted(seeds)
    for n, start in enumerate(order):
        found[start] = _predict(segmenter, plane(start), seeds[start])
        # the planes this seed owns: up to half-way to the neighbouring seeds (ties go to the lower)
        high = (start + order[n + 1]) // 2 if n + 1 < len(order) else count - 1
        low = (order[n - 1] + start) // 2 + 1 if n > 0 else 0
        for step, limit in ((1, high), (-1, low)):
            previous, index = found[start], start + step
            while (index - limit) * step <= 0 and previous.mask.sum() >= min_area:
                prompt = Prompt(boxes=[_box_around(previous.mask, margin)], mask_input=previous.logits)
                prediction = _predict(segmenter, plane(index), [prompt])
                if prediction.mask.sum() < min_area or prediction.score < min_score:
                    break
                found[index], previous, index = prediction, prediction, index + step
    return found


def _predict(segmenter: Segmenter, plane: np.ndarray, prompts: Sequence[Prompt]) -> Prediction:
    """One prediction on ``plane`` for one or several prompts of one structure (united)."""
    segmenter.set_image(plane)
    predictions = [segmenter.predict(prompt) for prompt in prompts]
    if len(predictions) == 1:
        return predictions[0]
    return Prediction(
        mask=np.any([p.mask for p in predictions], axis=0),
        logits=np.max([p.logits for p in predictions], axis=0),
        score=min(p.score for p in predictions),
    )


def _box_around(mask: np.ndarray, margin: int) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of ``mask`` (rows, columns) widened by ``margin`` pixels, inside the plane."""
    rows, columns = np.nonzero(mask)
    height, width = mask.shape
    return (
        float(max(columns.min() - margin, 0)), float(max(rows.min() - margin, 0)),
        float(min(columns.max() + margin, width - 1)), float(min(rows.max() + margin, height - 1)),
    )


def _plane(image: Image, k: int | None, t: int | None) -> tuple[int, int]:
    k, t = k or 0, t or 0
    image.check_plane_index(k, t)
    return k, t


def _label(prompt: Prompt) -> int:
    return 1 if prompt.label is None else prompt.label


def _empty_labels(image: Image, prompts: Sequence[Prompt]) -> np.ndarray:
    top = max(_label(prompt) for prompt in prompts)
    return np.zeros(image.shape[:4], np.uint8 if top < 256 else np.uint16)


def _paint(labels: np.ndarray, k: int, t: int, mask: np.ndarray, label: int) -> None:
    # planes are (rows, columns) = (j, i): Image.frame's transpose of the (i, j) array
    labels[:, :, k, t][mask.T] = label


def _structure(prompt: Prompt, planes: list[tuple[int, int, Prediction]]) -> dict[str, Any]:
    """What the record says of one structure: its label and, per plane, the model's score."""
    return {
        "label": _label(prompt), "label_name": prompt.label_name,
        "planes": [{"slice_index": k, "frame_index": t, "score": p.score} for k, t, p in planes],
    }


def _stamp(image: Image, labels: np.ndarray, segmenter: Segmenter, record: dict[str, Any]) -> Image:
    from medfm import __version__

    result = image.with_array(labels)
    result.metadata["segmentation"] = {
        "model": segmenter.info.name, "weights_sha256": segmenter.info.weights_sha256,
        "medfm_version": __version__, **record,
    }
    return result


def measure(labels: Image) -> list[dict[str, Any]]:
    """Per label value: voxels, and area in mm² (a 2D image or video) or volume in mm³.

    Totals over all frames; sizes in mm are ``None`` when the image's spacing is not a
    measurement (a photograph).
    """
    known = labels.metadata.get("spacing_known", True)
    spacing = labels.spacing
    values, counts = np.unique(labels.array[..., 0], return_counts=True)
    sizes = []
    for value, voxels in zip(values.tolist(), counts.tolist()):
        if value == 0:
            continue
        entry: dict[str, Any] = {"label": value, "voxels": voxels}
        if labels.is_2d:
            entry["area_mm2"] = voxels * spacing[0] * spacing[1] if known else None
        else:
            entry["volume_mm3"] = voxels * spacing[0] * spacing[1] * spacing[2] if known else None
        sizes.append(entry)
    return sizes
