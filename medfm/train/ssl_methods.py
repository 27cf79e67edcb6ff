"""The three self-supervised methods of ``medfm pretrain``, each a module around a backbone.

``method(pixels, generator, group)`` takes a batch of ``(B, 3, H, W)`` cached planes in [0, 1], makes
its own random views (:func:`~medfm.train.pretrain_data.augmented_views`) and returns the
loss; ``after_step()`` runs after each optimiser step (SimDINO's teacher update). Only
``backbone`` is kept as the encoder; heads, decoders and teachers are training-only.

Across training processes (``group``, :mod:`medfm.scale.ddp`) every process draws the views and
masks of the whole batch alike and runs the networks on its share; a loss over the batch (SimDINO's
coding rate, Barlow Twins' cross-correlation) gets the features of the whole batch through
:meth:`~medfm.scale.ddp.Group.gather`, a loss that averages samples (MAE's) is averaged by DDP.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from medfm.errors import MedfmError
from medfm.models.encoders.backbone import Backbone
from medfm.scale.ddp import Group
from medfm.train.pretrain_data import augmented_views
from medfm.train.ssl_losses import barlow_twins_loss, mae_loss, patchify, simdino_loss

#: One training process: the whole batch is this process's share.
ALONE = Group()


class MAE(nn.Module):
    """Masked autoencoder: the ViT sees ``1 - mask_ratio`` of the patches; a small transformer
    decoder (width 128, 2 blocks) fills in the rest, scored on masked patches only."""

    def __init__(self, backbone: Backbone, mask_ratio: float = 0.75, decoder_width: int = 128, decoder_depth: int = 2) -> None:
        super().__init__()
        if not backbone.masks_tokens:
            raise MedfmError(f"MAE masks patch tokens and needs a ViT architecture that takes any subset of them "
                             f"(vit-tiny, kan-vit-tiny); got {backbone.arch!r}")
        from timm.models.vision_transformer import Block

        self.backbone, self.mask_ratio = backbone, mask_ratio
        patches = (backbone.image_size // backbone.patch_size) ** 2
        self.decoder_embed = nn.Linear(backbone.embed_dim, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        self.decoder_position = nn.Parameter(torch.randn(1, patches, decoder_width) * 0.02)
        self.decoder = nn.Sequential(*[Block(decoder_width, 4) for _ in range(decoder_depth)], nn.LayerNorm(decoder_width))
        self.predict = nn.Linear(decoder_width, backbone.patch_size**2 * 3)

    def forward(self, pixels: torch.Tensor, generator: torch.Generator, group: Group = ALONE) -> torch.Tensor:
        view = augmented_views(pixels, self.backbone.image_size, (0.5, 1.0), generator)
        patches = self.decoder_position.shape[1]
        kept = max(1, round(patches * (1 - self.mask_ratio)))
        keep = torch.argsort(torch.rand(view.shape[0], patches, generator=generator), dim=1)[:, :kept]
        # every sample masks as many patches: the mean of the shares' losses is the batch's
        view, keep = group.share(view), group.share(keep)
        batch = view.shape[0]
        latent = self.decoder_embed(self.backbone.tokens(view, keep))
        tokens = self.mask_token.expand(batch, patches, -1).clone()
        tokens.scatter_(1, keep[..., None].expand(-1, -1, tokens.shape[-1]), latent)
        predicted = self.predict(self.decoder(tokens + self.decoder_position))
        masked = torch.ones(batch, patches, dtype=torch.bool)
        masked.scatter_(1, keep, False)
        return mae_loss(predicted, patchify(self.backbone.normalise(view), self.backbone.patch_size), masked)

    def after_step(self) -> None:
        pass


def projection_head(in_dim: int, hidden: int, out_dim: int, batch_norm: bool) -> nn.Sequential:
    norm: nn.Module = nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
    return nn.Sequential(nn.Linear(in_dim, hidden), norm, nn.GELU(), nn.Linear(hidden, out_dim))


class SimDINO(nn.Module):
    """Student (backbone + MLP head) and its exponential-moving-average teacher; two global views
    (40–100 % crops at the input size) and ``local_views`` local ones (10–40 % at half size)."""

    def __init__(self, backbone: Backbone, out_dim: int = 256, hidden: int = 512, momentum: float = 0.996,
                 local_views: int = 2) -> None:
        super().__init__()
        self.backbone, self.momentum, self.local_views = backbone, momentum, local_views
        self.head = projection_head(backbone.embed_dim, hidden, out_dim, batch_norm=False)
        self.teacher = nn.ModuleDict({"backbone": copy.deepcopy(backbone), "head": copy.deepcopy(self.head)}).requires_grad_(False)
        self.local_size = max(16, backbone.image_size // 2 // 16 * 16)

    def forward(self, pixels: torch.Tensor, generator: torch.Generator, group: Group = ALONE) -> torch.Tensor:
        size = self.backbone.image_size
        global_views = [augmented_views(pixels, size, (0.4, 1.0), generator) for _ in range(2)]
        local_views = [augmented_views(pixels, self.local_size, (0.1, 0.4), generator) for _ in range(self.local_views)]
        student = [group.gather(F.normalize(self.head(self.backbone(group.share(view))), dim=-1))
                   for view in global_views + local_views]
        with torch.no_grad():
            teacher = [group.gather(F.normalize(self.teacher["head"](self.teacher["backbone"](group.share(view))), dim=-1))
                       for view in global_views]
        return simdino_loss(student, teacher)

    @torch.no_grad()
    def after_step(self) -> None:
        for mine, theirs in ((self.backbone, self.teacher["backbone"]), (self.head, self.teacher["head"])):
            for student, teacher in zip(mine.parameters(), theirs.parameters(), strict=True):
                teacher.mul_(self.momentum).add_(student.detach(), alpha=1 - self.momentum)
            for student, teacher in zip(mine.buffers(), theirs.buffers(), strict=True):
                teacher.copy_(student)


class BarlowTwins(nn.Module):
    """Backbone + 3-layer projector (512-d, batch norm) on two 30–100 % crops."""

    def __init__(self, backbone: Backbone, dim: int = 512) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = nn.Sequential(projection_head(backbone.embed_dim, dim, dim, batch_norm=True), nn.BatchNorm1d(dim),
                                       nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, pixels: torch.Tensor, generator: torch.Generator, group: Group = ALONE) -> torch.Tensor:
        views = [augmented_views(pixels, self.backbone.image_size, (0.3, 1.0), generator) for _ in range(2)]
        first, second = (group.gather(self.projector(self.backbone(group.share(view)))) for view in views)
        return barlow_twins_loss(first, second)

    def after_step(self) -> None:
        pass


METHODS = {"mae": MAE, "simdino": SimDINO, "barlow": BarlowTwins}
