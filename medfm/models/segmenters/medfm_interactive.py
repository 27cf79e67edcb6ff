"""medfm's own compact interactive segmenter: a CNN encoder run once per plane, a light decoder per click.

Family ``medfm_interactive`` (config ``medfm-interactive.json``). :meth:`set_image` windows
and resizes the plane to the working size with :func:`prepare_plane` and caches the
encoder's four feature maps; each :meth:`predict` renders the prompt — clicks, boxes,
scribbles and the previous logits or mask — as maps on the working grid
(:func:`render_prompt_maps`), decodes, and upsamples the logits bilinearly to the plane's
own ``(rows, columns)``. The network is in :mod:`.interactive_net`; it was trained by
:mod:`medfm.train.interactive`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.models.encoders.checkpoint import load_exactly, read_state_dict, weights_file
from medfm.models.registry import register_family, sha256_of
from medfm.models.segmenters.base import Prediction, Segmenter, SegmenterInfo
from medfm.models.segmenters.interactive_net import InteractiveNet, prepare_plane, render_prompt_maps
from medfm.models.segmenters.prompt import Prompt


def _to_grid(plane_map: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """``(rows, columns)`` float map → ``(size, size)``: ``"any"`` keeps a thin stroke visible, ``"mean"`` averages."""
    tensor = torch.from_numpy(np.ascontiguousarray(plane_map, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="area")[0, 0]
    return (resized > 0).float() if mode == "any" else resized


class MedfmInteractiveSegmenter(Segmenter):
    """:class:`Segmenter` around an :class:`InteractiveNet` working at ``size`` × ``size``."""

    def __init__(self, net: InteractiveNet, info: SegmenterInfo, size: int) -> None:
        super().__init__(info)
        self.net = net.eval()
        self.size = size

    @torch.inference_mode()
    def _encode(self, plane: np.ndarray) -> list[torch.Tensor]:
        return self.net.encode(prepare_plane(plane, self.size)[None])

    @torch.inference_mode()
    def _decode(self, embedding: list[torch.Tensor], prompt: Prompt, shape: tuple[int, int]) -> Prediction:
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
        logits = F.interpolate(self.net.decode(embedding, maps[None]), size=shape, mode="bilinear", align_corners=False)
        logits = logits[0, 0].numpy()
        mask = logits > 0
        # Confidence: mean foreground probability of the predicted mask (0 for an empty mask).
        score = float(torch.sigmoid(torch.from_numpy(logits[mask])).mean()) if mask.any() else 0.0
        return Prediction(mask=mask, logits=logits, score=score)


@register_family("medfm_interactive")
def build_medfm_interactive(config: dict[str, Any], weights: Path | None) -> MedfmInteractiveSegmenter:
    """Registry builder: the config's architecture, filled from its safetensors weights (random without)."""
    net = InteractiveNet(config["widths"], config["blocks"], config["pixel_mean"], config["pixel_std"])
    sha256 = None
    if weights is not None:
        path = weights_file(weights, [config["weights"]["file"]] if "weights" in config else [])
        load_exactly(net, read_state_dict(path), path, f"{config['name']} (medfm_interactive)")
        sha256 = sha256_of(path)
    return MedfmInteractiveSegmenter(net, SegmenterInfo(config["name"], sha256), config["image_size"])
