"""medfm's own compact interactive segmenter: a CNN encoder run once per plane, a light decoder per click.

Family ``medfm_interactive`` (config ``medfm-interactive.json``). :meth:`set_image` windows
and resizes the plane to the working size with :func:`prepare_plane` and caches the
encoder's four feature maps; each :meth:`predict` renders the prompt — clicks, boxes,
scribbles and the previous logits or mask — as maps on the working grid
(:func:`render_prompt_maps`), decodes, and upsamples the logits bilinearly to the plane's
own ``(rows, columns)``. The network is in :mod:`.interactive_net`; it was trained by
:mod:`medfm.train.interactive`.

**Zoom-in** (on unless the config's ``zoom`` is false): a whole plane squeezed into
the working size leaves a polyp or a lesion a few dozen working pixels wide. The object's
extent comes from the previous mask given back as ``mask_input`` or, without one, from a
first decode on the whole plane (with the prompt's boxes, positive clicks and strokes in
either case); the segmenter crops the plane around that extent times ``zoom_margin`` (at
least half the working size on a side), encodes the crop at the working size, decodes the
prompt mapped into the crop — with the whole-plane decode's logits as the previous mask
when the prompt brought none — and pastes the logits back (``BACKGROUND_LOGIT`` outside
the crop). The crop's encoding is kept with
the plane's, so corrective clicks whose object stays inside it decode only; a crop within
``FULL_PLANE_FRACTION`` of the plane on both sides gains nothing and the whole-plane
encoding serves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.models.encoders.checkpoint import load_exactly, read_state_dict, weights_file
from medfm.models.preprocess import robust_window
from medfm.models.registry import register_family, sha256_of
from medfm.models.segmenters.base import Prediction, Segmenter, SegmenterInfo
from medfm.models.segmenters.interactive_net import (
    InteractiveNet,
    prepare_plane,
    render_prompt_maps,
)
from medfm.models.segmenters.prompt import Prompt, Scribble

#: Logit pasted outside a zoomed crop: certain background, and a probability of about 0 when given back.
BACKGROUND_LOGIT = -20.0
#: A crop at least this fraction of the plane on both sides is no zoom: the whole-plane encoding serves.
FULL_PLANE_FRACTION = 0.9


def _to_grid(plane_map: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """``(rows, columns)`` float map → ``(size, size)``: ``"any"`` keeps a thin stroke visible, ``"mean"`` averages."""
    tensor = torch.from_numpy(np.ascontiguousarray(plane_map, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="area")[0, 0]
    return (resized > 0).float() if mode == "any" else resized


@dataclass(frozen=True)
class Window:
    """Rows ``top:bottom`` and columns ``left:right`` of a plane (ends exclusive)."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    def holds(self, extent: Window, shape: tuple[int, int]) -> bool:
        """Whether ``extent`` lies inside this window without touching an edge that is not the plane's."""
        return (
            (extent.top > self.top or self.top == 0) and (extent.left > self.left or self.left == 0)
            and (extent.bottom < self.bottom or self.bottom == shape[0])
            and (extent.right < self.right or self.right == shape[1])
        )


@dataclass
class PlaneEncoding:
    """What :meth:`MedfmInteractiveSegmenter.set_image` keeps per plane: the plane and its intensity
    window (to cut crops from), the whole plane's features, and the latest zoomed crop's."""

    plane: np.ndarray
    window: tuple[float, float]
    features: list[torch.Tensor]
    crop: Window | None = None
    crop_features: list[torch.Tensor] | None = None


def _extent(masks: list[np.ndarray], points: list[tuple[float, float]]) -> Window | None:
    """The smallest window holding every foreground pixel of ``masks`` and every ``(x, y)`` of ``points``."""
    rows, columns = [], []
    for mask in masks:
        rows.extend(np.flatnonzero(mask.any(axis=1))[[0, -1]] if mask.any() else [])
        columns.extend(np.flatnonzero(mask.any(axis=0))[[0, -1]] if mask.any() else [])
    for x, y in points:
        rows.append(int(np.floor(y + 0.5)))
        columns.append(int(np.floor(x + 0.5)))
    if not rows:
        return None
    return Window(min(rows), max(rows) + 1, min(columns), max(columns) + 1)


class MedfmInteractiveSegmenter(Segmenter):
    """:class:`Segmenter` around an :class:`InteractiveNet` working at ``size`` × ``size``, zooming in
    on the prompted object when ``zoom`` is on (crop side ``zoom_margin`` × the object's)."""

    def __init__(self, net: InteractiveNet, info: SegmenterInfo, size: int, zoom: bool = True, zoom_margin: float = 2.0) -> None:
        super().__init__(info)
        self.net = net.eval()
        self.size = size
        self.zoom = zoom
        self.zoom_margin = zoom_margin

    @torch.inference_mode()
    def _encode(self, plane: np.ndarray) -> PlaneEncoding:
        window = robust_window(plane)
        features = self.net.encode(prepare_plane(plane, self.size, window)[None])
        # a copy: a caller who edits its array in place must not change the crops of this encoding
        return PlaneEncoding(plane.copy(), window, features)

    @torch.inference_mode()
    def _decode(self, encoding: PlaneEncoding, prompt: Prompt, shape: tuple[int, int]) -> Prediction:
        if not self.zoom:
            return self._decode_with(encoding.features, prompt, shape)
        labels = np.asarray(prompt.point_labels, dtype=bool)
        corners = [(float(box[0]), float(box[1])) for box in prompt.boxes] + [(float(box[2]), float(box[3])) for box in prompt.boxes]
        positives = [*np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)[labels].tolist(), *corners]
        known = [scribble.to_mask(shape) for scribble in prompt.scribbles if scribble.positive]
        given = None if prompt.mask_input is None else np.asarray(prompt.mask_input) > 0
        whole = None
        if given is not None and given.any():
            known.append(given)
        else:  # no previous mask: a first decode on the whole plane finds the object, and seeds the crop's
            whole = self._decode_with(encoding.features, prompt, shape)
            known.append(whole.mask)
        extent = _extent(known, positives)
        crop = None if extent is None else self._crop_for(encoding, extent, shape)
        if crop is None:
            return whole if whole is not None else self._decode_with(encoding.features, prompt, shape)
        if whole is not None:
            prompt = replace(prompt, mask_input=whole.logits)
        in_crop = self._decode_with(encoding.crop_features, _prompt_in(prompt, crop, shape), crop.shape)
        logits = np.full(shape, BACKGROUND_LOGIT, dtype=np.float32)
        logits[crop.top : crop.bottom, crop.left : crop.right] = in_crop.logits
        return Prediction(mask=logits > 0, logits=logits, score=in_crop.score)

    def _crop_for(self, encoding: PlaneEncoding, extent: Window, shape: tuple[int, int]) -> Window | None:
        """The crop to decode ``extent`` in, encoded (or reused from the last prompt); None for the whole plane."""
        sides = []
        for start, stop, length in ((extent.top, extent.bottom, shape[0]), (extent.left, extent.right, shape[1])):
            side = min(length, max(round((stop - start) * self.zoom_margin), self.size // 2))
            first = min(max(round((start + stop - side) / 2), 0), length - side)
            sides.append((first, first + side))
        crop = Window(sides[0][0], sides[0][1], sides[1][0], sides[1][1])
        if crop.shape[0] >= FULL_PLANE_FRACTION * shape[0] and crop.shape[1] >= FULL_PLANE_FRACTION * shape[1]:
            return None
        cached = encoding.crop
        # the last crop still holds the object and is not much wider than needed: its encoding serves
        if cached == crop or (cached is not None and cached.holds(extent, shape) and 2 * np.prod(crop.shape) >= np.prod(cached.shape)):
            return cached
        picture = encoding.plane[crop.top : crop.bottom, crop.left : crop.right]
        encoding.crop_features = self.net.encode(prepare_plane(picture, self.size, encoding.window)[None])
        encoding.crop = crop
        return crop

    def _decode_with(self, features: list[torch.Tensor], prompt: Prompt, shape: tuple[int, int]) -> Prediction:
        """Decode ``prompt`` on encoded ``features`` of a ``shape`` picture (the plane or a crop of it)."""
        strokes: dict[bool, np.ndarray] = {}
        for scribble in prompt.scribbles:
            drawn = scribble.to_mask(shape)
            strokes[scribble.positive] = strokes[scribble.positive] | drawn if scribble.positive in strokes else drawn
        scribbles = {sign: _to_grid(mask, self.size, "any").numpy() for sign, mask in strokes.items()}
        previous = None
        if prompt.mask_input is not None:
            given = np.asarray(prompt.mask_input)
            probability = given.astype(np.float32) if given.dtype == np.bool_ else 1 / (1 + np.exp(-given.astype(np.float32)))
            previous = _to_grid(probability, self.size, "mean").numpy()
        maps = render_prompt_maps(
            self.size, shape, np.asarray(prompt.points, dtype=np.float32).reshape(-1, 2),
            np.asarray(prompt.point_labels), prompt.boxes, scribbles.get(True), scribbles.get(False), previous,
        )
        logits = F.interpolate(self.net.decode(features, maps[None]), size=shape, mode="bilinear", align_corners=False)
        logits = logits[0, 0].numpy()
        mask = logits > 0
        # Confidence: mean foreground probability of the predicted mask (0 for an empty mask).
        score = float(torch.sigmoid(torch.from_numpy(logits[mask])).mean()) if mask.any() else 0.0
        return Prediction(mask=mask, logits=logits, score=score)


def _prompt_in(prompt: Prompt, crop: Window, shape: tuple[int, int]) -> Prompt:
    """``prompt`` in ``crop``'s pixel coordinates; clicks and strokes outside it are left out."""
    rows, columns = crop.shape
    points, labels = [], []
    for (x, y), label in zip(prompt.points, prompt.point_labels):
        x, y = float(x) - crop.left, float(y) - crop.top
        if 0 <= x <= columns - 1 and 0 <= y <= rows - 1:
            points.append((x, y))
            labels.append(label)
    boxes = [
        (max(x0 - crop.left, 0.0), max(y0 - crop.top, 0.0), min(x1 - crop.left, columns - 1.0), min(y1 - crop.top, rows - 1.0))
        for x0, y0, x1, y1 in ((float(v) for v in box) for box in prompt.boxes)
    ]
    strokes = [Scribble(mask=drawn, positive=scribble.positive) for scribble in prompt.scribbles
               if (drawn := scribble.to_mask(shape)[crop.top : crop.bottom, crop.left : crop.right]).any()]
    given = None if prompt.mask_input is None else np.asarray(prompt.mask_input)[crop.top : crop.bottom, crop.left : crop.right]
    return Prompt(points=points, point_labels=labels, boxes=boxes, scribbles=strokes, mask_input=given)


@register_family("medfm_interactive")
def build_medfm_interactive(config: dict[str, Any], weights: Path | None) -> MedfmInteractiveSegmenter:
    """Registry builder: the config's architecture, filled from its safetensors weights (random without)."""
    net = InteractiveNet(config["widths"], config["blocks"], config["pixel_mean"], config["pixel_std"])
    sha256 = None
    if weights is not None:
        path = weights_file(weights, [config["weights"]["file"]] if "weights" in config else [])
        load_exactly(net, read_state_dict(path), path, f"{config['name']} (medfm_interactive)")
        sha256 = sha256_of(path)
    zoom = {key: config[key] for key in ("zoom", "zoom_margin") if key in config}
    return MedfmInteractiveSegmenter(net, SegmenterInfo(config["name"], sha256), config["image_size"], **zoom)
