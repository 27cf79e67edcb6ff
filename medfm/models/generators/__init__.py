"""Conditional image generators (issue 14): MONAI ``DiffusionModelUNet`` trained by rectified flow
matching or DDPM, class-, text- or un-conditioned, sampled with classifier-free guidance."""

from medfm.models.generators.generator import Generator, build_generator
from medfm.models.registry import register_family

register_family("medfm_generator")(build_generator)

__all__ = ["Generator", "build_generator"]
