"""Architectures of the automatic segmenters: a registry config (``configs/auto-*.json``) → a MONAI network."""

from __future__ import annotations

from typing import Any

from torch import nn

from medfm.errors import MedfmError
from medfm.threads import ensure_threads


def build_network(config: dict[str, Any], in_channels: int, out_channels: int, spatial_dims: int = 2) -> nn.Module:
    """The network a ``"kind": "auto-segmenter"`` config describes; ``out_channels`` counts background too."""
    from monai.networks.nets import DynUNet, UNet

    ensure_threads()  # medfm's thread count (medfm.threads), for training and inference alike
    family = config.get("family")
    if family == "monai_unet":
        return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                    channels=tuple(config["channels"]), strides=tuple(config["strides"]),
                    num_res_units=config.get("num_res_units", 1), dropout=config.get("dropout", 0.0))
    if family == "monai_dynunet":
        strides = config["strides"]
        return DynUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                       kernel_size=config["kernel_size"], strides=strides, upsample_kernel_size=strides[1:],
                       filters=config["filters"], deep_supervision=config.get("deep_supervision", False),
                       deep_supr_num=max(1, len(strides) - 2), res_block=True)
    if family == "transunet":
        from medfm.models.automatic.hybrid import TransUNet

        return TransUNet(spatial_dims, in_channels, out_channels, config["channels"], config["strides"],
                         config.get("transformer_layers", 2), config.get("heads", 4), dropout=config.get("dropout", 0.0))
    if family == "compact_macmd":
        from medfm.models.automatic.compact import CompactMACMD

        if spatial_dims != 2:  # its stride-2 stem leaves one voxel at the deepest level of the small 3D patches
            raise MedfmError(f"the compact net is 2D only; got a {spatial_dims}D plan")
        return CompactMACMD(spatial_dims, in_channels, out_channels, config["channels"], config["strides"],
                            config.get("dilations", (1, 2, 3)), dropout=config.get("dropout", 0.0))
    if family == "backbone_unet":
        from medfm.models.automatic.backbone_unet import BackboneUNet

        if spatial_dims != 2:
            raise MedfmError(f"the {config['backbone']} backbone net is 2D only; got a {spatial_dims}D plan")
        return BackboneUNet(in_channels, out_channels, config["backbone"])
    raise MedfmError(f"unknown automatic segmenter family {family!r}; the families are monai_unet, monai_dynunet, transunet, "
                     "compact_macmd, backbone_unet")


def downsampling_factor(config: dict[str, Any]) -> int:
    """How many pixels one deepest-level feature spans: patch sides must be multiples of it."""
    factor = config.get("stem_stride", 1)
    for stride in config["strides"]:
        factor *= stride
    return factor
