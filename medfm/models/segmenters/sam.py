"""Family ``sam``: Segment Anything and MedSAM checkpoints in segment-anything's official format.

A config gives the ViT ``architecture`` as data (the arguments of segment-anything's
``_build_sam``, plus ``image_size``, 1024 for every released model) and the input
``preprocessing`` the weights were trained with:

* ``"sam"`` — segment-anything's ``SamPredictor``: resize the longest side to 1024
  (``ResizeLongestSide``), normalise with the model's ``pixel_mean``/``pixel_std``, pad
  to a square; prompts scaled by the same factor; masks cropped and resized back.
* ``"medsam"`` — MedSAM's reference inference (bowang-lab/MedSAM, ``MedSAM_Inference.py``):
  resize to 1024 x 1024 ignoring the aspect ratio (bicubic, as its cv2 variant; its
  skimage variant adds anti-aliasing), min-max scale to [0, 1] and feed the encoder
  directly, without ``pixel_mean``/``pixel_std``; boxes scaled by 1024 / W and 1024 / H;
  low-resolution logits resized straight to the plane. MedSAM was trained with box
  prompts only, so its configs set ``"prompts": ["boxes"]``: points and scribbles are
  refused, and a ``mask_input`` is not given to the model.

Both start from :func:`medfm.models.encoders.planes.to_rgb_uint8` (min-max to 0–255, grey
to RGB), which is what SAM's demos and MedSAM's CT/MR preprocessing give the model.
Scribbles become up to 8 clicks each (SAM takes no strokes); several boxes are decoded
one at a time and their masks united (logits by maximum, score the minimum).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from medfm.errors import MedfmError
from medfm.models.encoders.checkpoint import load_exactly, read_state_dict, weights_file
from medfm.models.encoders.planes import to_rgb_uint8
from medfm.models.registry import register_family, sha256_of
from medfm.models.segmenters.base import Prediction, Segmenter, SegmenterInfo
from medfm.models.segmenters.prompt import Prompt

#: Logit given to a bool ``mask_input`` (and to the padding of the model's input frame):
#: confident, in the range SAM's own low-resolution logits take.
MASK_LOGIT = 10.0
PREPROCESSING = ("sam", "medsam")


def build_sam_model(architecture: dict[str, Any]) -> Sam:
    """A randomly initialised SAM, as segment-anything's ``_build_sam`` builds it.

    ``architecture``: ``encoder_embed_dim``, ``encoder_depth``, ``encoder_num_heads``,
    ``encoder_global_attn_indexes`` and optionally ``image_size`` (1024), the only
    arguments that differ between ViT-B, ViT-L and ViT-H (and tiny test models).
    """
    image_size = architecture.get("image_size", 1024)
    patch_size, prompt_dim = 16, 256
    grid = image_size // patch_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=architecture["encoder_depth"],
            embed_dim=architecture["encoder_embed_dim"],
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=architecture["encoder_num_heads"],
            patch_size=patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=architecture["encoder_global_attn_indexes"],
            window_size=14,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return model.eval()


@dataclass
class _Embedding:
    """The encoder's output (1, 256, g, g) and the size (rows, columns) the plane took in the input frame."""

    features: torch.Tensor
    input_size: tuple[int, int]


class SamSegmenter(Segmenter):
    """:class:`Segmenter` around a segment-anything ``Sam`` model (SAM or MedSAM weights)."""

    def __init__(self, model: Sam, info: SegmenterInfo, preprocessing: str = "sam", boxes_only: bool = False) -> None:
        if preprocessing not in PREPROCESSING:
            raise MedfmError(f"preprocessing must be one of {', '.join(PREPROCESSING)}; got {preprocessing!r}")
        super().__init__(info)
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.boxes_only = boxes_only
        self.size = model.image_encoder.img_size
        self.resize = ResizeLongestSide(self.size)

    @torch.inference_mode()
    def _encode(self, plane: np.ndarray) -> _Embedding:
        pixels, input_size = self.input_frame(plane)
        return _Embedding(self.model.image_encoder(pixels[None]), input_size)

    def input_frame(self, plane: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """``plane`` as the image encoder takes it, ``(3, size, size)`` float32 (resized, normalised, padded),
        and the ``(rows, columns)`` the plane covers in that frame (also used for fine-tuning)."""
        rgb = to_rgb_uint8(plane)
        if self.preprocessing == "medsam":
            pixels = np.asarray(PILImage.fromarray(rgb).resize((self.size, self.size), PILImage.BICUBIC), np.float32)
            pixels = (pixels - pixels.min()) / max(float(pixels.max() - pixels.min()), 1e-8)
            return torch.from_numpy(pixels).permute(2, 0, 1), (self.size, self.size)
        resized = self.resize.apply_image(rgb)
        batch = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
        return self.model.preprocess(batch)[0], resized.shape[:2]

    def _to_input(self, xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``(..., 2)`` plane pixels (x, y) → the model's input frame."""
        if self.preprocessing == "medsam":
            return xy * (self.size / np.array([shape[1], shape[0]]))
        return self.resize.apply_coords(xy, shape)

    def _low_res_mask(self, mask_input: np.ndarray, input_size: tuple[int, int]) -> torch.Tensor:
        """(rows, columns) logits or bool mask → the (1, 1, 4g, 4g) logits SAM takes as a mask prompt."""
        logits = mask_input.astype(np.float32) if mask_input.dtype != np.bool_ else np.where(mask_input, MASK_LOGIT, -MASK_LOGIT)
        frame = F.interpolate(torch.from_numpy(logits.astype(np.float32))[None, None], input_size, mode="bilinear", align_corners=False)
        frame = F.pad(frame, (0, self.size - input_size[1], 0, self.size - input_size[0]), value=-MASK_LOGIT)
        return F.interpolate(frame, self.model.prompt_encoder.mask_input_size, mode="bilinear", align_corners=False, antialias=True)

    @torch.inference_mode()
    def _decode(self, embedding: _Embedding, prompt: Prompt, shape: tuple[int, int]) -> Prediction:
        if self.boxes_only and (prompt.points or prompt.scribbles):
            raise MedfmError(f"model {self.info.name!r} takes box prompts only (it was trained with boxes); got points or scribbles")
        points, labels = list(prompt.points), list(prompt.point_labels)
        for scribble in prompt.scribbles:
            clicks = scribble.sample_points(shape)
            points += clicks
            labels += [int(scribble.positive)] * len(clicks)
        clicks = None
        if points:
            coords = torch.as_tensor(self._to_input(np.asarray(points, np.float64), shape), dtype=torch.float)[None]
            clicks = (coords, torch.as_tensor(labels, dtype=torch.int)[None])
        mask = None
        if prompt.mask_input is not None and not self.boxes_only:
            mask = self._low_res_mask(np.asarray(prompt.mask_input), embedding.input_size)
        boxes = [
            torch.as_tensor(self._to_input(np.asarray(box, np.float64).reshape(2, 2), shape).reshape(1, 4), dtype=torch.float)
            for box in prompt.boxes
        ] or [None]
        # a lone click is ambiguous: SAM then proposes three masks and its IoU head picks one
        multimask = len(points) == 1 and not prompt.boxes and mask is None
        decoded = [self._decode_one(embedding, clicks, box, mask, multimask, shape) for box in boxes]
        logits = np.max([d[0] for d in decoded], axis=0)
        return Prediction(mask=logits > self.model.mask_threshold, logits=logits, score=min(d[1] for d in decoded))

    def _decode_one(
        self, embedding: _Embedding, clicks: Any, box: torch.Tensor | None, mask: torch.Tensor | None,
        multimask: bool, shape: tuple[int, int],
    ) -> tuple[np.ndarray, float]:
        """(rows, columns) float32 logits and the predicted IoU of SAM's chosen mask."""
        sparse, dense = self.model.prompt_encoder(points=clicks, boxes=box, masks=mask)
        low_res, scores = self.model.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        if self.preprocessing == "medsam":
            logits = F.interpolate(low_res, shape, mode="bilinear", align_corners=False)
        else:
            logits = self.model.postprocess_masks(low_res, embedding.input_size, shape)
        best = int(scores[0].argmax())
        return logits[0, best].numpy().astype(np.float32), float(scores[0, best])


#: Names a checkpoint folder may hold, preferred first (the official release names).
CHECKPOINT_NAMES = ("sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth", "medsam_vit_b.pth")


@register_family("sam")
def build_sam_segmenter(config: dict[str, Any], weights: Path | None) -> SamSegmenter:
    """Registry builder: ``config["architecture"]`` filled from an official ``.pth`` state dict."""
    model = build_sam_model(config["architecture"])
    sha256 = None
    if weights is not None:
        path = weights_file(weights, CHECKPOINT_NAMES)
        load_exactly(model, read_state_dict(path), path, f"{config['name']} (segment-anything format)")
        sha256 = sha256_of(path)
    return SamSegmenter(
        model,
        SegmenterInfo(config["name"], sha256),
        preprocessing=config.get("preprocessing", "sam"),
        boxes_only=config.get("prompts") == ["boxes"],
    )
