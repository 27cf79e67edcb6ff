"""Model registry, encoders, and their shipped weights and cards."""

from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.models.registry import create_encoder, list_encoders

__all__ = ["Encoder", "EncoderInfo", "create_encoder", "list_encoders"]
