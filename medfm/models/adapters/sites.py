"""Where block adapters go in each architecture medfm can adapt: the image encoder's blocks.

DD-Adapters follow every encoder block (CNN stage or transformer block); VPT prompts go into
transformer blocks on tokens only. Architectures are recognised by their class, so this
module imports none of the libraries that define them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class BlockSite:
    """Block ``container[index]`` whose output is a feature map of ``channels``.

    ``layout``: ``"channels_first"`` (B, C, H, W), ``"channels_last"`` (B, H, W, C) or ``"tokens"``
    (B, prefix + grid[0]·grid[1], C).
    """

    container: nn.Module
    index: int
    channels: int
    layout: str
    grid: tuple[int, int] | None = None
    prefix: int = 0


def block_sites(network: nn.Module) -> list[BlockSite]:
    """The encoder blocks of ``network`` in order; empty for an architecture medfm does not know."""
    kind = type(network).__name__
    if kind == "InteractiveNet":  # medfm-interactive: one site per CNN stage
        return [BlockSite(network.encoder, i, stage[0][0].out_channels, "channels_first")
                for i, stage in enumerate(network.encoder)]
    if kind == "MedfmClip":  # medfm-clip-small's residual blocks
        blocks = network.image_tower.blocks
        return [BlockSite(blocks, i, block.conv2.out_channels, "channels_first") for i, block in enumerate(blocks)]
    if kind == "Sam":  # segment-anything's ViT: blocks work on (B, H, W, C)
        blocks = network.image_encoder.blocks
        return [BlockSite(blocks, i, block.norm1.normalized_shape[0], "channels_last") for i, block in enumerate(blocks)]
    if kind == "SAM2Base":  # SAM 2's Hiera trunk: blocks work on (B, H, W, C), widening at each stage
        blocks = network.image_encoder.trunk.blocks
        return [BlockSite(blocks, i, block.dim_out, "channels_last") for i, block in enumerate(blocks)]
    if kind == "VisionTransformer" and hasattr(network, "patch_embed") and hasattr(network, "num_prefix_tokens"):  # timm ViT
        grid = tuple(network.patch_embed.grid_size)
        return [BlockSite(network.blocks, i, network.embed_dim, "tokens", grid, network.num_prefix_tokens)
                for i in range(len(network.blocks))]
    return []
