"""``medfm train captioner``: medfm-captioner's decoder on frozen image embeddings and captions.

The images and splits are medfm-clip-small's (:mod:`medfm.train.clip_data`, its decoded cache):
MedPix-2.0 training images with their own captions, and every other dataset's training images
with one of their template captions (the ``anatomy`` bank: modality, region, view), drawn anew
each epoch. Every image is embedded once by the frozen encoder; the decoder learns the next
WordPiece token under cross-entropy (label smoothing 0.1). The epoch kept is the one with the
lowest loss on the validation split's MedPix captions; the decoder ships in float16.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError, display_path
from medfm.models.language.captioner import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_IDS,
    CaptionDecoder,
    Vocabulary,
    build_decoder,
    tokenizer,
)
from medfm.models.registry import (
    DEFAULT_ENCODER,
    create_encoder,
)
from medfm.train.run_folder import publish_model_folder

CAPTIONED = "medpix2_image_text_train"
#: The template bank of the images without a caption.
CAPTIONS = "anatomy"
DECODER = {"width": 256, "depth": 3, "heads": 4, "prefix_tokens": 4, "max_tokens": 64, "dropout": 0.1}
WEIGHTS_FILE = "weights.safetensors"


def caption_texts(samples: list[Any], rng: np.random.Generator) -> list[str]:
    """One training text per sample: its own caption when it has one, else one of its templates."""
    return [s.caption if s.caption and s.caption.strip() else s.templates[int(rng.integers(len(s.templates)))] for s in samples]


def token_rows(texts: list[str], vocabulary: Vocabulary, max_tokens: int, words: Any) -> torch.Tensor:
    """``(N, max_tokens)`` vocabulary positions: ``[CLS]`` text ``[SEP]``, cut to fit, padded."""
    rows = torch.full((len(texts), max_tokens), vocabulary.position[PAD_ID], dtype=torch.long)
    if not texts:  # the tokenizer fails on an empty batch
        return rows
    for n, ids in enumerate(words(texts, add_special_tokens=False)["input_ids"]):
        positions = vocabulary.encode([BOS_ID, *ids[: max_tokens - 2], EOS_ID])
        rows[n, : len(positions)] = torch.tensor(positions)
    return rows


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Batches of indices of texts of similar length (short templates and long captions apart, so that little is
    padding), ties broken at random, in random order."""
    order = np.lexsort((rng.permutation(len(lengths)), lengths))
    batches = [torch.from_numpy(order[start:start + batch_size]) for start in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sequence_loss(decoder: CaptionDecoder, images: torch.Tensor, rows: torch.Tensor, pad: int, smoothing: float) -> torch.Tensor:
    """Mean next-token cross-entropy over the real tokens of ``rows``."""
    logits = decoder(images, rows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1), ignore_index=pad,
                           label_smoothing=smoothing)


def train_captioner(data: Path, cache: Path, out: Path, *, epochs: int = 40, batch_size: int = 64, learning_rate: float = 5e-4,
                    seed: int = 0, encoder_name: str = DEFAULT_ENCODER,
                    log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Train on the datasets under ``data`` through ``cache`` (``medfm train clip --captions anatomy``'s decoded cache,
    :func:`medfm.train.clip_data.build_cache`; built there if absent) and write the model folder ``out`` (config and
    float16 weights); returns the training summary."""
    from medfm.io.formats import check_output_folder
    from medfm.train.clip_data import build_cache, load_cache

    if out.exists():
        raise MedfmError(f"{display_path(out)}: already exists; choose a new model folder")
    check_output_folder(out.parent)
    if not cache.is_file() and not data.is_dir():
        raise MedfmError(f"{display_path(data)}: data folder not found (and no cache at {display_path(cache)})")
    pixels, samples, _, _ = load_cache(build_cache(data, cache, captions=CAPTIONS), CAPTIONS)
    chosen = {split: [i for i, s in enumerate(samples) if s.split == split and (s.templates or s.caption)] for split in ("train", "val")}
    if not chosen["train"]:
        raise MedfmError(f"{display_path(cache)}: no training images")
    encoder = create_encoder(encoder_name)
    started = time.monotonic()
    embeddings = {split: torch.from_numpy(encoder.encode_planes([pixels[i].permute(1, 2, 0).numpy() for i in indices]))
                  for split, indices in chosen.items()}
    log(f"embedded {sum(len(v) for v in chosen.values())} images in {time.monotonic() - started:.0f} s")
    words = tokenizer()
    train_samples = [samples[i] for i in chosen["train"]]
    seen = {token for s in train_samples for text in [s.caption or "", *s.templates]
            for token in words(text, add_special_tokens=False)["input_ids"]}
    vocabulary = Vocabulary(sorted(seen | set(SPECIAL_IDS)))
    val_captioned = [n for n, i in enumerate(chosen["val"]) if samples[i].dataset == CAPTIONED and samples[i].caption]
    val_rows = token_rows([samples[chosen["val"][n]].caption for n in val_captioned], vocabulary, DECODER["max_tokens"], words)
    val_images = embeddings["val"][val_captioned]
    torch.manual_seed(seed)
    config: dict[str, Any] = {"family": "medfm_captioner", "kind": "language", "encoder": encoder_name,
                              "encoder_sha256": encoder.info.weights_sha256, "decoder": {**DECODER, "image_dim": encoder.info.embed_dim},
                              "vocab_ids": vocabulary.ids}
    decoder = build_decoder(config)
    optimiser = torch.optim.AdamW(decoder.parameters(), lr=learning_rate, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_samples) / batch_size)
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    rng = np.random.default_rng(seed)
    pad = vocabulary.position[PAD_ID]
    history, best = [], {"val_loss": math.inf}
    for epoch in range(epochs):
        decoder.train()
        rows = token_rows(caption_texts(train_samples, rng), vocabulary, DECODER["max_tokens"], words)
        losses = []
        for batch in length_batches((rows != pad).sum(1).numpy(), batch_size, rng):
            length = int((rows[batch] != pad).sum(1).max())  # pad only to the batch's longest text
            loss = sequence_loss(decoder, embeddings["train"][batch], rows[batch, :length], pad, 0.1)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        decoder.eval()
        with torch.no_grad():
            val_loss = round(float(sequence_loss(decoder, val_images, val_rows, pad, 0.0)), 4) if len(val_rows) else None
        history.append({"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4), "val_loss": val_loss})
        log(f"epoch {epoch + 1}: train loss {np.mean(losses):.4f}, "
            + ("no validation captions" if val_loss is None else f"val caption loss {val_loss:.4f}"))
        if val_loss is None or val_loss < best["val_loss"]:  # without validation captions the last epoch is kept
            best = {"epoch": epoch + 1, "val_loss": val_loss,
                    "state": {k: v.detach().clone().half().contiguous() for k, v in decoder.state_dict().items()}}
    summary = {"epochs": epochs, "kept_epoch": best["epoch"], "val_caption_loss": best["val_loss"],
               "train_images": len(train_samples), "val_captions": len(val_rows), "vocabulary": len(vocabulary.ids),
               "parameters": sum(p.numel() for p in decoder.parameters()), "batch_size": batch_size,
               "learning_rate": learning_rate, "seed": seed, "seconds": round(time.monotonic() - started, 1),
               "cache": cache.name, "history": history}
    publish_model_folder(out, best["state"], {**config, "training": summary}, WEIGHTS_FILE)
    return {"model_dir": display_path(out), **{k: v for k, v in summary.items() if k != "history"}}
