"""Family ``sam2``: SAM 2 / SAM 2.1 image segmentation from official checkpoints.

A config names the YAML that the ``sam2`` package (1.1.0) ships for the architecture
(``"config": "configs/sam2.1/sam2.1_hiera_t.yaml"``); the model is built from it with
``sam2.build_sam.build_sam2`` (random weights, CPU) and the official ``.pt`` checkpoint
(``{"model": state_dict}``) is loaded only if every key and shape matches. An optional
``"image_size"`` overrides the YAML's 1024 (small test models).

Inference is sam2's own ``SAM2ImagePredictor``: ``set_image`` (resize to a square
image_size x image_size ignoring the aspect ratio, ImageNet normalisation) runs once per
plane and its features are what the base class caches; ``predict`` decodes each prompt.
Planes enter as :func:`medfm.models.encoders.planes.to_rgb_uint8` (min-max to 0–255, grey
to RGB), as in the ``sam`` family. A lone click asks for three masks and keeps the one
with the highest predicted IoU; scribbles become up to 8 clicks each; several boxes are
decoded one at a time and united (logits by maximum, score the minimum); a ``mask_input``
(logits, or a bool mask as ±10) is resized to the model's low-resolution mask prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError
from medfm.models.encoders.checkpoint import load_exactly, read_state_dict, weights_file
from medfm.models.encoders.planes import to_rgb_uint8
from medfm.models.registry import register_family, sha256_of
from medfm.models.segmenters.base import Prediction, Segmenter, SegmenterInfo
from medfm.models.segmenters.prompt import Prompt

#: Logit given to a bool ``mask_input``: confident, in the range of SAM's own logits.
MASK_LOGIT = 10.0
#: Names a checkpoint folder may hold, preferred first (the official release names).
CHECKPOINT_NAMES = (
    "sam2.1_hiera_tiny.pt", "sam2.1_hiera_small.pt", "sam2.1_hiera_base_plus.pt", "sam2.1_hiera_large.pt",
)
INSTALL_HINT = "SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0 (or scripts/setup.sh)"


def build_sam2_model(config_file: str, image_size: int | None = None) -> torch.nn.Module:
    """A randomly initialised SAM 2 from one of sam2's packaged configs, on the CPU, in eval mode."""
    try:
        from sam2.build_sam import build_sam2
    except ImportError:
        raise MedfmError(f"the sam2 package is not installed; install it with {INSTALL_HINT}") from None
    overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
    try:
        return build_sam2(config_file, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)
    except Exception as exc:  # hydra's MissingConfigException and friends
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise MedfmError(f"cannot build SAM 2 from {config_file!r}: {reason}") from None


class Sam2Segmenter(Segmenter):
    """:class:`Segmenter` around sam2's ``SAM2ImagePredictor`` for one ``SAM2Base`` model."""

    def __init__(self, model: torch.nn.Module, info: SegmenterInfo) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        super().__init__(info)
        self.model = model  # what adapters go into (the predictor runs this same module)
        self.predictor = SAM2ImagePredictor(model.eval())
        size = model.image_size
        # the predictor assumes 1024 (feature maps 256, 128, 64); follow the model's size
        self.predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
        self.mask_size = tuple(model.sam_prompt_encoder.mask_input_size)

    @torch.inference_mode()
    def _encode(self, plane: np.ndarray) -> dict[str, Any]:
        self.predictor.set_image(to_rgb_uint8(plane))
        features = self.predictor._features
        self.predictor.reset_predictor()
        return features

    def _low_res_mask(self, mask_input: np.ndarray) -> np.ndarray:
        """(rows, columns) logits or bool mask → the (1, h, w) logits SAM 2 takes as a mask prompt."""
        mask = np.asarray(mask_input)
        logits = np.where(mask, MASK_LOGIT, -MASK_LOGIT) if mask.dtype == np.bool_ else mask
        tensor = torch.from_numpy(np.ascontiguousarray(logits, np.float32))[None, None]
        return F.interpolate(tensor, self.mask_size, mode="bilinear", align_corners=False, antialias=True)[0].numpy()

    @torch.inference_mode()
    def _decode(self, embedding: dict[str, Any], prompt: Prompt, shape: tuple[int, int]) -> Prediction:
        points, labels = list(prompt.points), list(prompt.point_labels)
        for scribble in prompt.scribbles:
            clicks = scribble.sample_points(shape)
            points += clicks
            labels += [int(scribble.positive)] * len(clicks)
        mask = None if prompt.mask_input is None else self._low_res_mask(prompt.mask_input)
        # a lone click is ambiguous: SAM 2 then proposes three masks and its IoU head picks one
        multimask = len(points) == 1 and not prompt.boxes and mask is None
        predictor = self.predictor
        predictor._features, predictor._orig_hw = embedding, [tuple(shape)]
        predictor._is_image_set, predictor._is_batch = True, False
        try:
            decoded = []
            for box in list(prompt.boxes) or [None]:
                logits, scores, _ = predictor.predict(
                    point_coords=np.asarray(points, np.float32) if points else None,
                    point_labels=np.asarray(labels, np.int32) if points else None,
                    box=None if box is None else np.asarray(box, np.float32),
                    mask_input=mask,
                    multimask_output=multimask,
                    return_logits=True,
                )
                best = int(scores.argmax())
                decoded.append((logits[best].astype(np.float32), float(scores[best])))
        finally:
            predictor.reset_predictor()
        logits = np.max([d[0] for d in decoded], axis=0)
        return Prediction(mask=logits > predictor.mask_threshold, logits=logits, score=min(d[1] for d in decoded))


@register_family("sam2")
def build_sam2_segmenter(config: dict[str, Any], weights: Path | None) -> Sam2Segmenter:
    """Registry builder: sam2's packaged ``config["config"]`` filled from an official ``.pt`` checkpoint."""
    model = build_sam2_model(config["config"], config.get("image_size"))
    sha256 = None
    if weights is not None:
        path = weights_file(weights, CHECKPOINT_NAMES)
        load_exactly(model, read_state_dict(path), path, f"{config['name']} (SAM 2 format)")
        sha256 = sha256_of(path)
    return Sam2Segmenter(model, SegmenterInfo(config["name"], sha256))
