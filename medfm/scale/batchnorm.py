"""BatchNorm over the global batch of every training process, on CPU.

torch's ``SyncBatchNorm`` normalises with the statistics of the whole batch across processes,
but only on GPUs (its kernels have no CPU version). :class:`GlobalBatchNorm` does the same on
CPU with two differentiable all-reduces per layer (the sums, then the squared deviations from
the global mean), so that N processes with B/N samples each normalise, back-propagate and
update their running statistics as one process with all B samples does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class GlobalBatchNorm(_BatchNorm):
    """A BatchNorm layer of any dimension whose training statistics are the global batch's."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a batch of at least 2 dimensions, got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(input)
        # torch's differentiable collectives (torch.distributed.nn.functional is deprecated in their favour)
        from torch.distributed import group
        from torch.distributed._functional_collectives import all_reduce

        axes = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        sums = all_reduce(torch.cat([input.sum(axes), input.new_tensor([input.numel() / input.shape[1]])]), "sum", group.WORLD)
        count = sums[-1]
        mean = sums[:-1] / count
        centred = input - mean.view(shape)
        variance = all_reduce((centred * centred).sum(axes), "sum", group.WORLD) / count
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                # the running variance is unbiased, as BatchNorm's
                self.running_var.mul_(1 - factor).add_(factor * variance * count / (count - 1))
        return output


def use_global_batchnorm(network: nn.Module) -> nn.Module:
    """``network`` with every BatchNorm layer replaced, in place, by a :class:`GlobalBatchNorm` holding the very
    same parameters and statistics (an optimiser made before keeps working, and the state dict is unchanged)."""
    for name, child in network.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, GlobalBatchNorm):
            layer = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if child.affine:
                layer.weight, layer.bias = child.weight, child.bias
            if child.track_running_stats:
                layer.running_mean, layer.running_var = child.running_mean, child.running_var
                layer.num_batches_tracked = child.num_batches_tracked
            layer.train(child.training)
            setattr(network, name, layer)
        else:
            use_global_batchnorm(child)
    return network
