"""``medfm train grounding``: a text grounding head (:mod:`medfm.models.grounding`) from masks named by words.

The manifest is a CSV with columns ``image``, ``mask``, ``text`` and ``split`` (``train`` or
``val``; other rows are ignored). ``text`` names what the mask covers, as phrases separated by
``|`` ("polyp|colon polyp"); an image may have several rows, one per structure; a row with neither
mask nor text is an image where none of the manifest's phrases appears. Each image is taken to be
labelled completely: a phrase set that no row of an image names is absent from it.

Each step draws, per item, either a named structure (its image, one of its phrases at random, its
mask) or, with probability :data:`ABSENT_FRACTION`, an image with phrases it lacks and an empty
target, so that the head answers for the words and not for any salient thing. Pictures are
warped with their masks as medfm-interactive's training warps them (:mod:`medfm.train.paired_warp`);
the loss is binary cross-entropy plus MONAI's soft Dice per item. The epoch kept is the one with the
best mean Dice on the ``val`` rows' named structures (map ≥ 0.5); its false-alarm rate on ``val``
images lacking the words is reported.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError, display_path
from medfm.models.grounding import TextGrounder, ground_with
from medfm.models.registry import DEFAULT_ENCODER, DEFAULT_SEGMENTER, create_encoder, create_segmenter
from medfm.train.paired_warp import warp_pair
from medfm.train.run_folder import publish_model_folder

#: Items per step that show an image with words it lacks.
ABSENT_FRACTION = 0.35
#: The probability above which a position counts as named (validation, and the box of ``segment --text``).
THRESHOLD = 0.5
#: The head: its width and the segmenter's encoder stages it reads (strides 4, 8, 16; stride 2 would triple the cost).
HEAD = {"width": 64, "stages": [1, 2, 3]}
WEIGHTS_FILE = "weights.safetensors"


@dataclass
class GroundingSet:
    """Decoded pictures and their named masks: ``pixels`` ``(N, 3, S, S)`` uint8; ``masks`` ``(M, S, S)`` bool, mask m
    of picture ``owner[m]`` named by phrase set ``named[m]`` (an index into ``phrase_sets``)."""

    pixels: torch.Tensor
    masks: torch.Tensor
    owner: np.ndarray
    named: np.ndarray
    phrase_sets: list[tuple[str, ...]]

    def target(self, picture: int, phrase_set: int) -> torch.Tensor:
        """The union of ``picture``'s masks named by ``phrase_set`` (empty when it has none)."""
        rows = np.flatnonzero((self.owner == picture) & (self.named == phrase_set))
        return self.masks[rows].any(0) if len(rows) else torch.zeros(self.pixels.shape[-2:], dtype=torch.bool)

    def absent_sets(self, picture: int) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.phrase_sets)), self.named[self.owner == picture])


def read_manifest(path: Path) -> dict[str, list[tuple[Path, Path | None, tuple[str, ...]]]]:
    """``{split: [(image, mask or None, phrases)]}`` of the manifest (paths relative to its folder); one-line errors."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"image", "mask", "text", "split"} - set(reader.fieldnames or [])
            if missing:
                raise MedfmError(f"{display_path(path)}: a grounding manifest needs the columns image, mask, text, split; "
                                 f"{', '.join(sorted(missing))} missing")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the manifest ({exc})") from None
    splits: dict[str, list[tuple[Path, Path | None, tuple[str, ...]]]] = {"train": [], "val": []}
    for line, row in enumerate(rows, start=2):
        phrases = tuple(" ".join(p.split()) for p in (row["text"] or "").split("|") if p.strip())
        if bool(phrases) != bool((row["mask"] or "").strip()):
            raise MedfmError(f"{display_path(path)}: line {line} has {'a mask but no text' if not phrases else 'text but no mask'}; "
                             "a row names its mask, or has neither (an image lacking every phrase)")
        if row["split"] in splits:
            mask = path.parent / row["mask"] if phrases else None
            splits[row["split"]].append((path.parent / row["image"], mask, phrases))
    if not any(phrases for _, _, phrases in splits["train"]):
        raise MedfmError(f"{display_path(path)}: no train row names a mask")
    return splits


def decode(rows: list[tuple[Path, Path | None, tuple[str, ...]]], phrase_sets: list[tuple[str, ...]], size: int) -> GroundingSet:
    """The rows' pictures at ``size``² (as the grounder prepares them) and their masks on the same grid."""
    from medfm.io import load
    from medfm.io.label_maps import read_mask
    from medfm.models.preprocess import prepare_plane

    pictures: dict[Path, int] = {}
    shapes: dict[Path, tuple[int, ...]] = {}
    pixels, masks, owner, named = [], [], [], []
    for image, mask, phrases in rows:
        if image not in pictures:
            picture = load(image)
            pictures[image], shapes[image] = len(pixels), picture.spatial_shape
            pixels.append((prepare_plane(picture.frame(), size) * 255).round().to(torch.uint8))
        if mask is None:
            continue
        plane = torch.from_numpy(read_mask(mask, shapes[image])[:, :, 0].T.astype(np.float32))
        masks.append(F.interpolate(plane[None, None], size=(size, size), mode="area")[0, 0] >= 0.5)
        owner.append(pictures[image])
        named.append(phrase_sets.index(phrases))
    return GroundingSet(torch.stack(pixels), torch.stack(masks) if masks else torch.zeros(0, size, size, dtype=torch.bool),
                        np.array(owner, dtype=int), np.array(named, dtype=int), phrase_sets)


def draw(data: GroundingSet, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """``(pixels in [0, 1], phrase-set index per item, targets (B, 1, S, S))`` for one step (see the module)."""
    pictures, sets = [], []
    for _ in range(batch):
        picture = int(rng.integers(len(data.pixels)))
        absent = data.absent_sets(picture)
        if rng.random() < ABSENT_FRACTION and len(absent):
            pictures.append(picture)
            sets.append(int(rng.choice(absent)))
        else:
            mask = int(rng.integers(len(data.masks)))
            pictures.append(int(data.owner[mask]))
            sets.append(int(data.named[mask]))
    targets = torch.stack([data.target(p, s) for p, s in zip(pictures, sets, strict=True)])[:, None].float()
    return data.pixels[pictures].float() / 255, np.array(sets), targets


def text_table(encoder: Any, phrase_sets: list[tuple[str, ...]]) -> list[torch.Tensor]:
    """Each phrase set's ``(phrases, embed_dim)`` text embeddings, ensembled over the zero-shot templates as
    ``segment --text`` embeds the words."""
    from medfm.tasks.zeroshot import DEFAULT_TEMPLATES, label_embeddings

    return [torch.from_numpy(label_embeddings(list(phrases), encoder, DEFAULT_TEMPLATES)) for phrases in phrase_sets]


def evaluate(grounder: TextGrounder, data: GroundingSet, texts: list[torch.Tensor], batch: int = 32) -> dict[str, float]:
    """Mean Dice of the map ≥ :data:`THRESHOLD` over every named mask (the first phrase of its set), and the share of
    (picture, absent phrase set) pairs where the map reaches it anywhere."""
    from medfm.eval.seg_metrics import dice

    pairs = [(int(data.owner[m]), int(data.named[m]), True) for m in range(len(data.masks))]
    pairs += [(p, int(s), False) for p in range(len(data.pixels)) for s in data.absent_sets(p)]
    scores, alarms = [], []
    with torch.no_grad():
        for start in range(0, len(pairs), batch):
            chunk = pairs[start:start + batch]
            pixels = data.pixels[[p for p, _, _ in chunk]].float() / 255
            logits = grounder.head(grounder.stage_maps(pixels), torch.stack([texts[s][0] for _, s, _ in chunk]))
            named = F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)[:, 0].sigmoid() >= THRESHOLD
            for (picture, phrase_set, present), found in zip(chunk, named, strict=True):
                if present:
                    scores.append(dice(found.numpy(), data.target(picture, phrase_set).numpy()))
                else:
                    alarms.append(bool(found.any()))
    return {"dice": round(float(np.mean(scores)), 4) if scores else math.nan,
            "false_alarm_rate": round(float(np.mean(alarms)), 4) if alarms else math.nan}


def train_grounding(manifest: Path, out: Path, *, encoder_name: str = DEFAULT_ENCODER, segmenter_name: str = DEFAULT_SEGMENTER,
                    epochs: int = 30, steps_per_epoch: int = 100, batch_size: int = 32, learning_rate: float = 2e-3,
                    seed: int = 0, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Train a grounding head over ``segmenter_name``'s frozen image encoder and ``encoder_name``'s text embeddings on
    ``manifest`` (see the module) and write the model folder ``out`` (config, float16 weights, history); returns the
    training summary."""
    from monai.losses import DiceLoss

    from medfm.io.formats import check_output_folder

    if out.exists():
        raise MedfmError(f"{display_path(out)}: already exists; choose a new model folder")
    check_output_folder(out.parent)
    splits = read_manifest(manifest)
    phrase_sets = sorted({phrases for rows in splits.values() for _, _, phrases in rows if phrases})
    encoder, segmenter = create_encoder(encoder_name), create_segmenter(segmenter_name)
    torch.manual_seed(seed)
    config: dict[str, Any] = {"family": "medfm_grounding", "kind": "grounder", "encoder": encoder_name,
                              "encoder_sha256": encoder.info.weights_sha256, "segmenter": segmenter_name,
                              "segmenter_sha256": segmenter.info.weights_sha256, **HEAD, "threshold": THRESHOLD,
                              "phrases": [list(p) for p in phrase_sets]}
    grounder = ground_with({"name": out.name, **config}, None, encoder, segmenter)  # refuses models of another family
    segmenter.net.requires_grad_(False)
    started = time.monotonic()
    data = {split: decode(rows, phrase_sets, grounder.size) for split, rows in splits.items() if rows}
    log(f"decoded {sum(len(d.pixels) for d in data.values())} pictures, {sum(len(d.masks) for d in data.values())} masks "
        f"in {time.monotonic() - started:.0f} s")
    texts = text_table(encoder, phrase_sets)
    head = grounder.head
    optimiser = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=1e-4)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    soft_dice = DiceLoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)
    rng = np.random.default_rng(seed)
    history, best = [], {"dice": -1.0}
    for epoch in range(epochs):
        head.train()
        losses = []
        for _ in range(steps_per_epoch):
            pixels, sets, targets = draw(data["train"], batch_size, rng)
            pixels, targets = warp_pair(pixels, targets, rng)
            text = torch.stack([texts[s][int(rng.integers(len(texts[s])))] for s in sets])
            with torch.no_grad():
                maps = grounder.stage_maps(pixels)
            logits = head(maps, text)
            small = F.interpolate(targets, size=logits.shape[-2:], mode="area")
            loss = F.binary_cross_entropy_with_logits(logits, small) + soft_dice(logits, small)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        head.eval()
        scores = evaluate(grounder, data.get("val", data["train"]), texts)
        history.append({"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4), **{f"val_{k}": v for k, v in scores.items()}})
        log(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}, val Dice {scores['dice']:.4f}, "
            f"false alarms {scores['false_alarm_rate']:.3f}")
        if scores["dice"] > best["dice"]:
            best = {"epoch": epoch + 1, **scores, "state": {k: v.detach().clone().half().contiguous() for k, v in head.state_dict().items()}}
    summary = {"epochs": epochs, "kept_epoch": best["epoch"], "val_dice": best["dice"], "val_false_alarm_rate": best["false_alarm_rate"],
               "validated_on": "val" if "val" in data else "train (no val rows)",
               "train_pictures": len(data["train"].pixels), "train_masks": len(data["train"].masks),
               "parameters": sum(p.numel() for p in head.parameters()), "steps_per_epoch": steps_per_epoch,
               "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
               "seconds": round(time.monotonic() - started, 1), "history": history}
    publish_model_folder(out, best["state"], {**config, "training": summary}, WEIGHTS_FILE)
    return {"model_dir": display_path(out), **{k: v for k, v in summary.items() if k != "history"}}
