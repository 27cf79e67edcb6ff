"""Automatic (prompt-free) segmentation nets trained by ``medfm train seg`` on the user's own labels."""

from medfm.models.automatic.network import build_network
from medfm.models.automatic.plan import Plan, normalise
from medfm.models.automatic.segmenter import AutoSegmenter, load_auto_segmenter

__all__ = ["AutoSegmenter", "Plan", "build_network", "load_auto_segmenter", "normalise"]
