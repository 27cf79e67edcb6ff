"""Promptable segmentation of images, volumes and videos into one label map.

:func:`segment` runs each prompt on its own plane; :func:`propagate` also carries each
prompted structure from plane to plane through a volume (``axis="k"``) or a video
(``axis="t"``). Both return an :class:`~medfm.io.Image` label map on the input's grid
(``(I, J, K, T)``, 0 background, each structure its prompt's ``label``, 1 by default),
whose :attr:`~medfm.io.Image.provenance` (:func:`segmentation_provenance`) records the
model, its weights' sha256, medfm's version, the input, the prompts and each structure's
per-plane scores. Where structures overlap, the one whose prompt comes later wins.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medfm.errors import MedfmError
from medfm.io.image import Image
from medfm.models.segmenters import Prediction, Prompt, Segmenter, SegmenterInfo, mask_box
from medfm.progress import progress_bar
from medfm.provenance import Provenance, pixels_id
from medfm.structures import default_color

AXES = ("k", "t")
#: Logits given to the pixels outside the window a prediction was made in: surely background.
_OUTSIDE_LOGIT = -20.0


def segment(image: Image, prompts: Sequence[Prompt], segmenter: Segmenter, *, input_id: str | None = None) -> Image:
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
    result = image.with_array(labels)
    result.provenance = segmentation_provenance(image, segmenter.info, [p.to_dict() for p in prompts], structures,
                                                input_id=input_id)
    return result


@dataclass(frozen=True)
class PropagationRule:
    """How a structure is carried from plane to plane, and when it has ended.

    Each carried plane is prompted with the previous plane's logits as ``mask_input`` and
    the box around its mask widened by ``margin`` (a fraction of the box's longer side, at
    least 2 pixels); the mask is kept inside that box, so a structure cannot leak across
    the plane in one step. The segmenter sees a square window around the box, ``context``
    times its longer side (at least 32 pixels), at its own working resolution, so small
    structures keep their detail (``context=0``: the whole plane). The structure has ended
    on a plane whose mask has fewer than ``min_area`` pixels, whose score is below
    ``min_score``, or whose mean intensity has moved from the previous plane's by more
    than ``max_intensity_shift`` times that plane's contrast (its mean inside minus the
    mean of a ring around it): models keep finding *something* in the box after the
    structure has ended, and its intensity is what gives that away, while a structure's
    own intensity drifts only slowly from plane to plane (``inf`` turns this test off).
    The defaults were chosen on the labelled MRI volumes of ``../shared/data``
    (``benchmarks/propagation_bench.py``).
    """

    min_area: int = 10
    min_score: float = 0.5
    margin: float = 0.15
    context: float = 2.5
    max_intensity_shift: float = 0.75

    def __post_init__(self) -> None:
        for name in ("min_area", "min_score", "margin", "context", "max_intensity_shift"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise MedfmError(f"propagation rule: {name} must be a number >= 0; got {value!r}")

    def to_dict(self) -> dict[str, float]:
        """The rule's parameters, as recorded with the segmentation."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> PropagationRule:
        """A rule with ``values`` in place of the defaults; unknown names are refused."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise MedfmError(f"propagation rule: no parameter {unknown[0]!r}; the parameters are {', '.join(names)}")
        return cls(**values)


def propagate(
    image: Image,
    segmenter: Segmenter,
    prompts_by_slice: Mapping[int, Sequence[Prompt]],
    axis: str = "k",
    rule: PropagationRule = PropagationRule(),
    *,
    input_id: str | None = None,
    progress: bool = False,
) -> Image:
    """Segment the prompted planes, then carry each structure outwards through the image.

    ``prompts_by_slice`` maps a slice index k (``axis="k"``) or frame index t (``axis="t"``)
    to the prompts on that plane. From each prompted plane, each structure (one per label)
    moves one plane at a time in both directions until ``rule`` says it has ended (see
    :class:`PropagationRule`). A plane the user prompted for a label keeps the user's
    prompts for that label; between two prompted planes each plane follows the nearer one
    (the lower on a tie). Adding prompts and calling again re-encodes only the planes whose
    window changed: the segmenter caches the rest. ``progress`` shows a bar of the planes
    segmented on stderr.
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
            planes = _carry(segmenter, plane, seeds, count, rule)
            for index, prediction in planes.items():
                k, t = (index, fixed) if axis == "k" else (fixed, index)
                _paint(labels, k, t, prediction.mask, label)
            first = next(iter(seeds.values()))[0]
            placed = [((index, fixed) if axis == "k" else (fixed, index)) + (planes[index],) for index in sorted(planes)]
            structures.append(_structure(first, placed))
    result = image.with_array(labels)
    result.provenance = segmentation_provenance(
        image, segmenter.info, [{**prompt.to_dict(), field: index} for index, prompt in flat], structures,
        {"axis": axis, "rule": rule.to_dict()}, input_id=input_id,
    )
    return result


def _carry(segmenter: Segmenter, plane: Any, seeds: dict[int, list[Prompt]], count: int,
           rule: PropagationRule) -> dict[int, Prediction]:
    """Predictions by plane index for one structure: its prompted planes and where they lead."""
    found: dict[int, Prediction] = {}
    order = sorted(seeds)
    for n, start in enumerate(order):
        seed_plane = plane(start)
        found[start] = _predict(segmenter, seed_plane, seeds[start], rule.context)
        seed_reference = _appearance(seed_plane, found[start].mask)
        # the planes this seed owns: up to half-way to the neighbouring seeds (ties go to the lower)
        high = (start + order[n + 1]) // 2 if n + 1 < len(order) else count - 1
        low = (order[n - 1] + start) // 2 + 1 if n > 0 else 0
        for step, limit in ((1, high), (-1, low)):
            previous, index, reference = found[start], start + step, seed_reference
            while (index - limit) * step <= 0 and previous.mask.sum() >= rule.min_area:
                box = _box_around(previous.mask, rule.margin)
                pixels = plane(index)
                carried = Prompt(boxes=[box], mask_input=previous.logits)
                prediction = _within(_predict(segmenter, pixels, [carried], rule.context), box)
                if _ended(prediction, pixels, reference, rule):
                    break
                reference = _appearance(pixels, prediction.mask) or reference
                found[index], previous, index = prediction, prediction, index + step
    return found


def _ended(prediction: Prediction, pixels: np.ndarray, reference: tuple[float, float] | None,
           rule: PropagationRule) -> bool:
    if prediction.mask.sum() < rule.min_area or prediction.score < rule.min_score:
        return True
    if reference is None:
        return False
    inside, contrast = reference
    return abs(_grey(pixels)[prediction.mask].mean() - inside) > rule.max_intensity_shift * contrast


def _grey(plane: np.ndarray) -> np.ndarray:
    return plane.astype(np.float64).mean(axis=2) if plane.ndim == 3 else plane.astype(np.float64)


def _appearance(plane: np.ndarray, mask: np.ndarray) -> tuple[float, float] | None:
    """The seed's mean intensity inside its mask and its contrast against a ring a few
    pixels wide around it; ``None`` when the mask is empty or has no contrast to follow."""
    if not mask.any():
        return None
    grey = _grey(plane)
    ring = ndimage.binary_dilation(mask, iterations=max(2, round(0.1 * np.sqrt(mask.sum())))) & ~mask
    inside = float(grey[mask].mean())
    contrast = abs(inside - float(grey[ring].mean())) if ring.any() else 0.0
    return (inside, contrast) if contrast > 0 else None


def _predict(segmenter: Segmenter, plane: np.ndarray, prompts: Sequence[Prompt], context: float = 0.0) -> Prediction:
    """One prediction on ``plane`` for one or several prompts of one structure (united).

    With ``context`` and prompts that all hold boxes (and no scribbles), the segmenter sees
    only the square window :func:`_window` around them, and the prediction is put back on
    the plane."""
    shape = plane.shape[:2]
    window = None
    if context and all(prompt.boxes and not prompt.scribbles for prompt in prompts):
        window = _window([box for prompt in prompts for box in prompt.boxes], shape, context)
        top, left, bottom, right = window
        plane, prompts = plane[top:bottom, left:right], [_shifted(prompt, window) for prompt in prompts]
    segmenter.set_image(plane)
    predictions = [segmenter.predict(prompt) for prompt in prompts]
    united = predictions[0] if len(predictions) == 1 else Prediction(
        mask=np.any([p.mask for p in predictions], axis=0),
        logits=np.max([p.logits for p in predictions], axis=0),
        score=min(p.score for p in predictions),
    )
    return united if window is None else _placed(united, window, shape)


def _window(boxes: Sequence[tuple[float, float, float, float]], shape: tuple[int, int], context: float) -> tuple[int, int, int, int]:
    """top, left, bottom, right (exclusive) of the square around ``boxes``, ``context`` times
    their extent's longer side and at least 32 pixels, moved inside the plane."""
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    rows, columns = shape
    side = min(max(32.0, context * max(x1 - x0 + 1, y1 - y0 + 1)), float(max(rows, columns)))
    top = int(round(min(max((y0 + y1) / 2 - side / 2, 0), max(rows - side, 0))))
    left = int(round(min(max((x0 + x1) / 2 - side / 2, 0), max(columns - side, 0))))
    return top, left, min(rows, top + int(round(side))), min(columns, left + int(round(side)))


def _shifted(prompt: Prompt, window: tuple[int, int, int, int]) -> Prompt:
    """``prompt`` in the window's pixel coordinates: boxes clipped to it, points outside it dropped."""
    top, left, bottom, right = window
    height, width = bottom - top, right - left
    boxes = [(max(x0 - left, 0), max(y0 - top, 0), min(x1 - left, width - 1), min(y1 - top, height - 1))
             for x0, y0, x1, y1 in prompt.boxes]
    kept = [(label, (x - left, y - top)) for label, (x, y) in zip(prompt.point_labels, prompt.points)
            if 0 <= x - left <= width - 1 and 0 <= y - top <= height - 1]
    return dataclasses.replace(
        prompt, boxes=boxes, points=[point for _, point in kept], point_labels=[label for label, _ in kept],
        mask_input=None if prompt.mask_input is None else prompt.mask_input[top:bottom, left:right],
    )


def _placed(prediction: Prediction, window: tuple[int, int, int, int], shape: tuple[int, int]) -> Prediction:
    """A window's prediction on the whole plane: background, with very low logits, outside."""
    top, left, bottom, right = window
    mask = np.zeros(shape, bool)
    logits = np.full(shape, _OUTSIDE_LOGIT, np.float32)
    mask[top:bottom, left:right] = prediction.mask
    logits[top:bottom, left:right] = prediction.logits
    return Prediction(mask=mask, logits=logits, score=prediction.score)


def _within(prediction: Prediction, box: tuple[float, float, float, float]) -> Prediction:
    """``prediction`` with its mask cleared (and logits lowered) outside ``box``."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    keep = np.zeros(prediction.mask.shape, bool)
    keep[y0:y1 + 1, x0:x1 + 1] = True
    logits = np.where(keep, prediction.logits, _OUTSIDE_LOGIT).astype(np.float32)
    return Prediction(mask=prediction.mask & keep, logits=logits, score=prediction.score)


def _box_around(mask: np.ndarray, margin: float) -> tuple[float, float, float, float]:
    """:func:`mask_box` of ``mask`` (rows, columns) widened by ``margin`` times its longer side
    (at least 2 pixels), inside the plane."""
    x0, y0, x1, y1 = mask_box(mask)
    return mask_box(mask, max(2.0, margin * max(x1 - x0 + 1, y1 - y0 + 1)))


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


def segmentation_provenance(
    image: Image, model: SegmenterInfo, prompts: Sequence[Mapping[str, Any]], structures: Sequence[Mapping[str, Any]],
    parameters: Mapping[str, Any] | None = None,
    input_id: str | None = None,
) -> Provenance:
    """The record of a label map drawn on ``image`` by ``model``, for the CLI, the Python API and the server alike.

    ``prompts`` are :meth:`Prompt.to_dict` records with their plane indices; ``structures``
    ``{"label", "label_name", "color"?, "code"?, "planes": [{"slice_index", "frame_index", "score"}]}`` (``color``
    defaults to :func:`medfm.structures.default_color`, ``code`` is a :class:`medfm.structures.Term` dict);
    ``parameters`` the settings that shaped the result (propagation's axis and limits);
    ``input_id`` names the image when the caller already knows it (hashing a large volume's
    pixels, :func:`~medfm.provenance.pixels_id`, the default, takes a noticeable fraction of a second).
    """
    # every structure carries its colour (the one palette's where none was chosen): PNG, NIfTI and SEG show it alike
    coloured = tuple({**s, "color": s.get("color") or default_color(s["label"])} if "label" in s else s for s in structures)
    return Provenance(kind="segmentation", model=model.name, weights_sha256=model.weights_sha256,
                      inputs=(input_id or pixels_id(image.array),), prompts=tuple(prompts), structures=coloured,
                      parameters=parameters or {})


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
