"""What ``medfm finetune`` optimises and scores, per kind of model.

Each objective decodes its data once, takes one optimiser ``step`` on a random batch (its
share of it when several processes train together: :func:`share`) and ``score``s the
validation part (higher is better, under ``"score"``). Promptable segmenters
learn from the simulated first interactions of :mod:`medfm.train.interactive`
(:func:`~medfm.train.interactive.first_prompt`; medfm-interactive also gets its corrective
rounds through :func:`~medfm.train.interactive.training_step`); encoders learn a linear
classification head with their adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError
from medfm.models.adapters.file import HEAD_PREFIX, network_of
from medfm.scale.ddp import Group
from medfm.train.seg_data import Case

#: Training in this process alone.
ONE_PROCESS = Group()


def share(group: Group, indices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.random.Generator]:
    """This rank's share of a step's global batch ``indices`` (drawn alike on every rank from ``rng``) and the
    generator of its per-sample randomness (prompts, augmentation): ``rng`` itself for one process, else one
    seeded by this step and rank, so that the ranks draw differently while ``rng`` stays the same on all."""
    if group.world == 1:
        return indices, rng
    return group.share(indices), np.random.default_rng([int(rng.integers(2**63)), group.rank])


class SegmenterObjective:
    """Simulated interactions on a promptable segmenter (medfm-interactive); scored by mean box + click Dice on validation."""

    def __init__(self, segmenter: Any, cases: list[Case], batch_size: int, group: Group = ONE_PROCESS) -> None:
        from monai.losses import DiceCELoss

        from medfm.train.finetune_data import interactive_framing, segmentation_set
        from medfm.train.interactive import SIZE

        if type(network_of(segmenter)).__name__ != "InteractiveNet" or segmenter.size != SIZE:
            raise MedfmError(f"medfm finetune trains medfm-interactive and SAM-family segmenters; {segmenter.info.name} is neither")
        self.net = network_of(segmenter)
        self.data = segmentation_set(cases, interactive_framing(SIZE))
        self.train_indices = np.flatnonzero(~self.data.is_val)
        self.batch_size, self.group = batch_size, group
        self.loss = DiceCELoss(sigmoid=True)
        self.extra_parameters: list[torch.nn.Parameter] = []

    def step(self, optimizer: torch.optim.Optimizer, rng: np.random.Generator) -> float:
        from medfm.train.interactive import training_step

        # every rank runs the decoder equally often (its BatchNorm layers may average over the ranks)
        rounds = None if self.group.world == 1 else int(rng.integers(0, 4))
        chosen, sample_rng = share(self.group, rng.choice(self.train_indices, self.batch_size), rng)
        pictures = torch.from_numpy(self.data.pictures[chosen]).permute(0, 3, 1, 2).float() / 255
        masks = torch.from_numpy(self.data.masks[chosen].astype(np.float32))[:, None]
        return training_step(self.net, optimizer, self.loss, pictures, masks, sample_rng, rounds)

    def score(self) -> dict[str, float]:
        from medfm.train.interactive import validate

        dice = validate(self.net, self.data.as_cache())
        return {"box_dice": dice["data/box"], "click_dice": dice["data/click"],
                "score": round((dice["data/box"] + dice["data/click"]) / 2, 4)}

    def head_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        """Nothing: promptable segmenters train no head."""

    def metadata(self) -> dict[str, Any]:
        return {"train_images": int((~self.data.is_val).sum()), "val_images": int(self.data.is_val.sum())}


class ClassifierObjective:
    """A linear head on the encoder's unit embeddings under cross-entropy; scored by validation accuracy."""

    def __init__(self, encoder: Any, manifest: Path, batch_size: int, label_column: str | None, group: Group = ONE_PROCESS) -> None:
        from medfm.train.finetune_data import classification_set

        if not label_column:
            raise MedfmError("fine-tuning an encoder needs --label-column, the manifest column with each image's class")
        self.encoder = encoder
        self.data = classification_set(manifest, label_column)
        self.pixels = encoder.pixels(self.data.planes)
        self.targets = torch.from_numpy(self.data.targets)
        self.train_indices = np.flatnonzero(~self.data.is_val)
        self.batch_size, self.group = batch_size, group
        self.head = torch.nn.Linear(encoder.info.embed_dim, len(self.data.labels))
        # Unit-length embeddings give small logits; a fixed scale lets the head reach confident ones.
        self.scale = 10.0
        self.extra_parameters = list(self.head.parameters())

    def step(self, optimizer: torch.optim.Optimizer, rng: np.random.Generator) -> float:
        chosen = torch.from_numpy(self.group.share(rng.choice(self.train_indices, self.batch_size)))
        logits = self.head(self.encoder.embed_pixels(self.pixels[chosen]) * self.scale)
        loss = F.cross_entropy(logits, self.targets[chosen])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def score(self) -> dict[str, float]:
        network = network_of(self.encoder)
        training = network.training
        network.eval()
        val = torch.from_numpy(np.flatnonzero(self.data.is_val))
        predicted = self.head(self.encoder.embed_pixels(self.pixels[val]) * self.scale).argmax(1)
        network.train(training)
        accuracy = round(float((predicted == self.targets[val]).float().mean()), 4)
        return {"accuracy": accuracy, "score": accuracy}

    def head_state(self) -> dict[str, torch.Tensor]:
        return {HEAD_PREFIX + key: value.detach().clone() for key, value in self.head.state_dict().items()}

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        """The head from :meth:`head_state`'s form."""
        self.head.load_state_dict({key.removeprefix(HEAD_PREFIX): value for key, value in state.items()})

    def metadata(self) -> dict[str, Any]:
        return {"labels": self.data.labels, "train_images": int((~self.data.is_val).sum()),
                "val_images": int(self.data.is_val.sum())}


class SamObjective:
    """SAM-family segmenters (SAM, MedSAM): the first simulated prompt (box or clicks; MedSAM boxes only),
    Dice + cross-entropy on SAM's low-resolution logits; scored by mean box + click Dice there."""

    def __init__(self, segmenter: Any, cases: list[Case], batch_size: int, group: Group = ONE_PROCESS) -> None:
        from monai.losses import DiceCELoss

        from medfm.train.finetune_data import segmentation_set

        self.segmenter, self.model = segmenter, segmenter.model
        self.boxes_only = getattr(segmenter, "boxes_only", False)
        self.low_res = self.mask_input_size()
        self.scale = self.input_size() / self.low_res[0]  # input-frame pixels per low-resolution pixel
        self.data = segmentation_set(cases, self.frame)
        self.train_indices = np.flatnonzero(~self.data.is_val)
        self.batch_size, self.group = batch_size, group
        self.loss = DiceCELoss(sigmoid=True)
        self.extra_parameters: list[torch.nn.Parameter] = []

    def mask_input_size(self) -> tuple[int, int]:
        """The low-resolution logits' size, where the loss is taken."""
        return tuple(self.model.prompt_encoder.mask_input_size)

    def input_size(self) -> int:
        """The side of the model's square input frame."""
        return self.segmenter.size

    def frame(self, plane: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A plane as the model's input picture and its mask at the low resolution, framed alike (SAM: the long
        side resized to the input size, padded at the bottom and right)."""
        from medfm.train.finetune_data import resize_mask

        pixels, (rows, columns) = self.segmenter.input_frame(plane)
        framed = np.zeros((self.segmenter.size, self.segmenter.size), dtype=bool)
        framed[:rows, :columns] = resize_mask(mask, (rows, columns))
        return pixels.numpy(), resize_mask(framed, self.low_res)

    def _prompt(self, truth: np.ndarray, rng: np.random.Generator) -> tuple[Any, Any]:
        """SAM's ``points`` and ``boxes`` arguments for a random first interaction on a low-resolution ``truth``."""
        from medfm.eval.protocols.interaction import jittered_box
        from medfm.train.interactive import first_prompt

        prompt = first_prompt(truth, rng)
        if self.boxes_only or (prompt["box"] is None and not prompt["points"]):  # scribbles: give a box
            prompt = {"box": jittered_box(truth, rng, jitter=rng.uniform(0, 0.15)), "points": [], "labels": []}
        return self._sam_prompt(prompt["points"], prompt["labels"], prompt["box"])

    def _sam_prompt(self, points: list, labels: list, box: Any) -> tuple[Any, Any]:
        clicks = None
        if points:
            coords = (torch.tensor(points, dtype=torch.float32) + 0.5) * self.scale
            clicks = (coords[None], torch.tensor(labels, dtype=torch.int)[None])
        boxes = None if box is None else torch.tensor([[box[0], box[1], box[2] + 1, box[3] + 1]], dtype=torch.float32) * self.scale
        return clicks, boxes

    def encode(self, pictures: np.ndarray) -> Any:
        """The image features of ``(B, 3, S, S)`` input pictures, with gradients."""
        return self.model.image_encoder(torch.from_numpy(pictures))

    def _logits(self, features: torch.Tensor, prompts: list[tuple[Any, Any]]) -> torch.Tensor:
        encoder = self.model.prompt_encoder
        out = []
        for index, (clicks, boxes) in enumerate(prompts):
            sparse, dense = encoder(points=clicks, boxes=boxes, masks=None)
            low_res, _ = self.model.mask_decoder(image_embeddings=features[index : index + 1], image_pe=encoder.get_dense_pe(),
                                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                 multimask_output=False)
            out.append(low_res)
        return torch.cat(out)

    def step(self, optimizer: torch.optim.Optimizer, rng: np.random.Generator) -> float:
        chosen, sample_rng = share(self.group, rng.choice(self.train_indices, self.batch_size), rng)
        truths = self.data.masks[chosen]
        features = self.encode(self.data.pictures[chosen])
        logits = self._logits(features, [self._prompt(truth, sample_rng) for truth in truths])
        loss = self.loss(logits, torch.from_numpy(truths.astype(np.float32))[:, None])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def score(self) -> dict[str, float]:
        from medfm.eval.protocols.interaction import centre_click
        from medfm.eval.seg_metrics import dice
        from medfm.models.segmenters.prompt import mask_box

        results: dict[str, list[float]] = {"box_dice": [], "click_dice": []}
        for index in np.flatnonzero(self.data.is_val):
            truth = self.data.masks[index]
            features = self.encode(self.data.pictures[index : index + 1])
            prompts = {"box_dice": self._sam_prompt([], [], mask_box(truth))}
            if not self.boxes_only:
                prompts["click_dice"] = self._sam_prompt([centre_click(truth)], [1], None)
            for name, prompt in prompts.items():
                results[name].append(dice(self._logits(features, [prompt])[0, 0].numpy() > 0, truth))
        scores = {name: round(float(np.mean(values)), 4) for name, values in results.items() if values}
        return {**scores, "score": round(float(np.mean(list(scores.values()))), 4)}

    def head_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        """Nothing: promptable segmenters train no head."""

    def metadata(self) -> dict[str, Any]:
        return {"train_images": int((~self.data.is_val).sum()), "val_images": int(self.data.is_val.sum())}


class Sam2Objective(SamObjective):
    """SAM 2 / 2.1 (DD-SAM2's setting): SAM's objective through SAM 2's own path, as ``SAM2ImagePredictor`` runs
    it but with gradients: the whole picture resized to the model's square input, the Hiera trunk and FPN, the
    prompt encoder and the mask decoder with its high-resolution features."""

    def mask_input_size(self) -> tuple[int, int]:
        return tuple(self.model.sam_prompt_encoder.mask_input_size)

    def input_size(self) -> int:
        return self.model.image_size

    def frame(self, plane: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM 2's framing: the whole plane resized to the square input (aspect not kept), by sam2's own transforms."""
        from medfm.models.encoders.planes import to_rgb_uint8
        from medfm.train.finetune_data import resize_mask

        return self.segmenter.predictor._transforms(to_rgb_uint8(plane)).numpy(), resize_mask(mask, self.low_res)

    def encode(self, pictures: np.ndarray) -> dict[str, Any]:
        model = self.model
        _, vision, _, sizes = model._prepare_backbone_features(model.forward_image(torch.from_numpy(pictures)))
        if model.directly_add_no_mem_embed:
            vision[-1] = vision[-1] + model.no_mem_embed
        maps = [feature.permute(1, 2, 0).reshape(len(pictures), -1, *size) for feature, size in zip(vision, sizes, strict=True)]
        return {"image_embed": maps[-1], "high_res_feats": maps[:-1]}

    def _logits(self, features: dict[str, Any], prompts: list[tuple[Any, Any]]) -> torch.Tensor:
        encoder, out = self.model.sam_prompt_encoder, []
        for index, (clicks, boxes) in enumerate(prompts):
            sparse, dense = encoder(points=clicks, boxes=boxes, masks=None)
            low_res, *_ = self.model.sam_mask_decoder(
                image_embeddings=features["image_embed"][index : index + 1], image_pe=encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False, repeat_image=False,
                high_res_features=[level[index : index + 1] for level in features["high_res_feats"]])
            out.append(low_res)
        return torch.cat(out)


def segmentation_objective(model: Any, cases: list[Case], batch_size: int, group: Group = ONE_PROCESS
                           ) -> SegmenterObjective | SamObjective:
    """The objective for a built promptable segmenter: SAM's for SAM and MedSAM, SAM 2's for SAM 2, medfm-interactive's
    otherwise."""
    kind = type(network_of(model)).__name__
    if kind == "Sam":
        return SamObjective(model, cases, batch_size, group)
    if kind == "SAM2Base":
        return Sam2Objective(model, cases, batch_size, group)
    return SegmenterObjective(model, cases, batch_size, group)
