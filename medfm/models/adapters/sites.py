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
    (B, prefix + grid[0]·grid[1], C). ``grid_only``: the block needs exactly its token grid, so no prompt
    tokens can join it (DCT attention reads the tokens as a square map).
    """

    container: nn.Module
    index: int
    channels: int
    layout: str
    grid: tuple[int, int] | None = None
    prefix: int = 0
    grid_only: bool = False


def block_sites(network: nn.Module) -> list[BlockSite]:
    """The encoder blocks of ``network`` in order; empty for an architecture medfm does not know."""
    kind = type(network).__name__
    if kind == "InteractiveNet":  # medfm-interactive: one site per CNN stage
        return [BlockSite(network.encoder, i, stage[0][0].out_channels, "channels_first")
                for i, stage in enumerate(network.encoder)]
    if kind == "MedfmClip":
        return block_sites(network.image_tower)
    if kind == "ImageTower":  # medfm-clip-small's residual blocks, also `medfm pretrain`'s cnn-small
        return [BlockSite(network.blocks, i, block.conv2.out_channels, "channels_first") for i, block in enumerate(network.blocks)]
    if kind == "Backbone":  # `medfm pretrain`'s encoders: the trunk is a timm ViT or the ImageTower
        return block_sites(network.trunk)
    if kind == "Sam":  # segment-anything's ViT: blocks work on (B, H, W, C)
        blocks = network.image_encoder.blocks
        return [BlockSite(blocks, i, block.norm1.normalized_shape[0], "channels_last") for i, block in enumerate(blocks)]
    if kind == "SAM2Base":  # SAM 2's Hiera trunk: blocks work on (B, H, W, C), widening at each stage
        blocks = network.image_encoder.trunk.blocks
        return [BlockSite(blocks, i, block.dim_out, "channels_last") for i, block in enumerate(blocks)]
    if kind == "VisionTransformer" and hasattr(network, "patch_embed") and hasattr(network, "num_prefix_tokens"):  # timm ViT
        grid = tuple(network.patch_embed.grid_size)
        grid_only = any(type(module).__name__ == "DctAttention" for module in network.blocks.modules())
        return [BlockSite(network.blocks, i, network.embed_dim, "tokens", grid, network.num_prefix_tokens, grid_only)
                for i in range(len(network.blocks))]
    return []
