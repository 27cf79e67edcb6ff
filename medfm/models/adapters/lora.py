"""LoRA (Hu et al. 2021) through the ``peft`` library: low-rank updates beside every frozen convolution and linear layer."""

from __future__ import annotations

from torch import nn


def lora_targets(network: nn.Module) -> list[str]:
    """Every dense convolution and linear layer on the image path (a text tower's projection is left alone)."""
    return [name for name, module in network.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d)) and getattr(module, "groups", 1) == 1 and "text" not in name]


def add_lora(network: nn.Module, rank: int) -> None:
    """Inject rank-``rank`` LoRA into ``network`` in place; peft freezes everything else.

    peft starts each update's B factor at zero, so the adapted model starts equal to its base.
    """
    # imported here, not with the module: listing adapter files must not import peft (and transformers) in a
    # server request thread while another thread imports transformers for the text tower (its lazy module
    # is not safe to resolve from two threads at once)
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=lora_targets(network)), network)
