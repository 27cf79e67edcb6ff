"""Interactive (promptable) 2D segmenters: one prompt schema, one interface, several families."""

from medfm.models.segmenters.base import Prediction, Segmenter, SegmenterInfo
from medfm.models.segmenters.prompt import Prompt, Scribble, check_prompt, mask_box

__all__ = ["Prediction", "Prompt", "Scribble", "Segmenter", "SegmenterInfo", "check_prompt", "mask_box"]
