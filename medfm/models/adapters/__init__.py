"""Parameter-efficient adaptation of a frozen model: LoRA (peft), DD-Adapter, visual prompt tuning, or full fine-tuning.

:func:`add_adapter` changes a network in place so that only the method's parameters train;
:func:`trainable_state` is what an adapter file keeps (:mod:`medfm.models.adapters.file`).
"""

from __future__ import annotations

import torch
from torch import nn

from medfm.errors import MedfmError
from medfm.models.adapters.dd_adapter import DDAdaptedBlock
from medfm.models.adapters.lora import add_lora
from medfm.models.adapters.sites import block_sites
from medfm.models.adapters.vpt import PromptedBlock

#: ``--method`` values: what trains.
METHODS = ("lora", "dd-adapter", "vpt", "full")
#: LoRA rank, DD-Adapter bottleneck channels, VPT prompt tokens per block.
DEFAULT_RANK = 8


def check_method(method: str, rank: int) -> None:
    if method not in METHODS:
        raise MedfmError(f"unknown fine-tuning method {method!r}; choose one of: {', '.join(METHODS)}")
    if rank < 1:
        raise MedfmError(f"--rank must be at least 1; got {rank}")


def add_adapter(network: nn.Module, method: str, rank: int = DEFAULT_RANK, model_name: str = "this model") -> nn.Module:
    """Prepare ``network`` (in place, also returned) for ``method``: the base frozen and the method's modules added."""
    check_method(method, rank)
    if method == "full":
        network.requires_grad_(True)
        return network
    if method == "lora":
        add_lora(network, rank)
        return network
    network.requires_grad_(False)
    sites = block_sites(network)
    if method == "vpt":
        sites = [site for site in sites if site.layout == "tokens"]
        if sites and all(site.grid_only for site in sites):
            raise MedfmError(f"--method vpt adds prompt tokens, but {model_name}'s DCT attention needs exactly the image's "
                             "token grid (use dd-adapter, lora or full)")
    if not sites:
        needs = "transformer blocks on tokens (a ViT-like encoder)" if method == "vpt" else "encoder blocks medfm knows"
        raise MedfmError(f"--method {method} needs {needs}; {model_name} has none (use lora or full)")
    for site in sites:
        block = site.container[site.index]
        if method == "dd-adapter":
            site.container[site.index] = DDAdaptedBlock(block, site.channels, rank, site.layout, site.grid, site.prefix)
        else:
            site.container[site.index] = PromptedBlock(block, site.channels, rank, site.prefix)
    return network


def trainable_state(network: nn.Module, method: str) -> dict[str, torch.Tensor]:
    """The tensors an adapter file keeps: the trained parameters (for ``full``, the whole state with BatchNorm statistics)."""
    if method == "full":
        return {key: value.detach().clone().contiguous() for key, value in network.state_dict().items()}
    return {name: parameter.detach().clone().contiguous()
            for name, parameter in network.named_parameters() if parameter.requires_grad}


def set_training(network: nn.Module, method: str, training: bool) -> None:
    """Train or eval mode; with an adapter, frozen BatchNorm layers stay in eval mode so the base's statistics never move."""
    network.train(training)
    if training and method != "full":
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
