"""Train medfm-clip: the image tower and both projections against the frozen MiniLM.

Epochs run on the uint8 cache that :func:`medfm.train.clip_data.build_cache` writes once;
augmentation (random zoom/shift crops, brightness and contrast) is batched on tensors. Every
epoch writes a resumable ``checkpoint.pt`` and a line of validation measures to
``history.jsonl``; the end writes ``<model>.safetensors`` with the architecture in its metadata.

Run it as ``medfm train clip``; this function's signature holds the defaults.
"""

from __future__ import annotations

import json
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError, display_path
from medfm.models.encoders.base import EncoderInfo
from medfm.models.encoders.medfm_clip import (
    MedfmClip,
    MedfmClipEncoder,
    architecture_json,
    build_model,
)
from medfm.models.encoders.transfer import load_pretrained_trunk, read_pretrained_trunk
from medfm.models.losses import (
    LOSSES,
    clip_loss,
    convirt_loss,
    dhn_nce_loss,
    siglip_loss,
)
from medfm.models.registry import DEFAULT_ENCODER, list_encoders
from medfm.paths import shared_data_dir
from medfm.scale.ddp import Group, check_workers, launcher_group, run_in_processes
from medfm.train.clip_data import (
    CAPTIONS,
    Sample,
    build_cache,
    load_cache,
    write_split_manifest,
)
from medfm.train.clip_eval import evaluate

#: Where a run keeps its cache, checkpoint, history, split manifest and weights unless told otherwise.
RUN_FOLDER = Path("runs/medfm-clip")
#: Share of MedPix steps that use the real caption rather than a metadata template (the shipped model's).
CAPTION_SHARE = 0.5


def augment(pixels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8 → ``(B, 3, size, size)`` float in [0, 1]: a random crop of 70–100 %
    of each side (aspect jittered ±10 %) at a random position, then contrast ×[0.8, 1.2] and
    brightness ±0.1. One ``affine_grid`` for the whole batch keeps it cheap on a CPU."""
    b = len(pixels)
    rand = torch.rand((b, 5), generator=generator).to(pixels.device)
    scale = 0.7 + 0.3 * rand[:, 0]
    aspect = 0.9 + 0.2 * rand[:, 1]
    sx, sy = (scale * aspect).clamp(max=1.0), (scale / aspect).clamp(max=1.0)
    theta = torch.zeros((b, 2, 3), device=pixels.device)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    theta[:, 0, 2], theta[:, 1, 2] = (1 - sx) * (2 * rand[:, 2] - 1), (1 - sy) * (2 * rand[:, 3] - 1)
    grid = F.affine_grid(theta, (b, 3, size, size), align_corners=False)
    x = F.grid_sample(pixels.float() / 255, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = 0.8 + 0.4 * torch.rand((b, 1, 1, 1), generator=generator).to(pixels.device)
    brightness = 0.2 * rand[:, 4].view(b, 1, 1, 1) - 0.1
    return ((x - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0)


def sample_texts(samples: list[Sample], batch: np.ndarray, text_index: dict[str, int],
                 rng: np.random.Generator, caption_share: float = CAPTION_SHARE) -> tuple[torch.Tensor, torch.Tensor]:
    """One text per image of ``batch`` (its real caption with probability ``caption_share``, else one of its
    templates) → ``(B,)`` text ids and the ``(B, B)`` positives matrix: pairs whose texts are identical or
    describe the same class (equal ``label``)."""
    ids, groups = [], []
    for index in batch:
        sample = samples[index]
        if sample.caption and rng.random() < caption_share:
            text, group = sample.caption, f"caption:{sample.caption}"
        else:
            text, group = sample.templates[rng.integers(len(sample.templates))], sample.label
        ids.append(text_index[text])
        groups.append(group)
    ids_t = torch.tensor(ids)
    codes = torch.tensor([hash(g) for g in groups])
    return ids_t, (ids_t[:, None] == ids_t[None, :]) | (codes[:, None] == codes[None, :])


def embed_cached(model: MedfmClip, pixels: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """``(N, 3, H, W)`` cached uint8 → ``(N, D)`` unit embeddings at the model's input size."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            x = F.interpolate(pixels[start:start + batch_size].float() / 255, size=(model.image_size,) * 2,
                              mode="bilinear", antialias=True, align_corners=False)
            out.append(model.encode_pixels(x).cpu().numpy())
    return np.concatenate(out)


def contrastive_loss(name: str, model: MedfmClip, image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    scale = model.logit_scale.exp()
    if name == "siglip":
        return siglip_loss(image, text, scale, model.logit_bias, positives)
    if name == "convirt":
        return convirt_loss(image, text, scale, 0.75, positives)
    if name == "dhn-nce":
        return dhn_nce_loss(image, text, scale, positives=positives)
    return clip_loss(image, text, scale, positives)


def checked_device(name: str) -> torch.device:
    """``name`` as a torch device, refused in one line when this machine has no such device."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MedfmError(f"device must be cpu, cuda or cuda:N; got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedfmError(f"device {name!r}: this machine has no CUDA GPU (torch sees none); use --device cpu")
    return device


def save_clip_weights(model: MedfmClip, config: dict, path: Path, loss: str, initialised_from: str = "random",
                      captions: str = "basic", float16: bool = False) -> Path:
    """The trainable weights as safetensors (floating tensors as float16 if asked: half the file; the model
    computes in float32 either way), with the architecture and recipe (loss, caption bank, the image tower's
    initialisation: ``random`` or the sha256 of a pretrained encoder's weights) in the metadata."""
    from medfm.models.registry import save_weights

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().to(torch.float16 if float16 and value.is_floating_point() else value.dtype).contiguous()
             for key, value in model.state_dict().items()}
    save_weights(state, path, metadata={"architecture": architecture_json(config), "loss": loss, "captions": captions,
                                        "initialised_from": initialised_from, "dtype": "float16" if float16 else "float32"})
    return path


def _cache_from_rank_0(group: Group, loaded: tuple | None) -> tuple[torch.Tensor, list[Sample], list[str], torch.Tensor]:
    """Rank 0's ``loaded`` cache (:func:`load_cache`) on every rank of ``group`` (the others pass ``None``)."""
    pixels, samples, texts, text_features = loaded if group.main else (None, None, None, None)
    samples, texts = group.broadcast((samples, texts))
    return group.broadcast_tensor(pixels), samples, texts, group.broadcast_tensor(text_features)


def train_clip(data: Path | None = None, out: Path = RUN_FOLDER, epochs: int = 40, loss: str = "clip", resume: bool = False,
               model_name: str = DEFAULT_ENCODER, batch_size: int = 128, lr: float = 2e-3,
               weight_decay: float = 0.05, seed: int = 0, cache: Path | None = None, stop_after: int | None = None,
               init: Path | None = None, captions: str = "basic", caption_share: float = CAPTION_SHARE,
               device: str = "cpu", float16: bool = False, workers: int = 1, group: Group | None = None,
               ray: str | None = None) -> Path | None:
    """Train on the datasets under ``data`` (default :func:`medfm.paths.shared_data_dir`); checkpoints, logs and
    the split manifest go to ``out``, the decoded-image cache to ``cache`` (default ``out/cache.pt``). Returns
    the weights path.

    ``stop_after`` ends the run after that many epochs of an ``epochs``-long schedule (a checkpoint to
    ``resume``), as the first leg of the shipped weights did. ``init``: an encoder folder of ``medfm pretrain``
    (a ``cnn-small`` backbone) whose weights start the image tower; projections and temperature start as usual.
    ``captions``: the template bank (:data:`medfm.train.clip_data.CAPTIONS`), recorded in the weights' metadata.
    ``caption_share``: how often a MedPix image is paired with its real caption rather than a template.
    ``device``: ``cpu`` or a torch device such as ``cuda`` (the cache moves there whole; it is about 240 MB).
    ``float16``: write the final weights in float16 (training and checkpoints stay float32, so a finished run
    resumed with ``float16`` only rewrites its weights).
    ``workers`` processes on this machine share each step's batch (:mod:`medfm.scale.ddp`; ``group`` is the one
    each runs in): rank 0 validates and writes, the others return ``None``. Started by torchrun instead, each
    process joins that group; with ``ray`` (a Ray cluster's address, or ``local``), ``workers`` Ray Train workers
    of one CPU each do (:mod:`medfm.scale.ray_train`). Rank 0 alone reads the data, the cache, ``init`` and the
    checkpoint and sends the others what they need, so a rank on another machine needs none of those files.
    """
    arguments = {key: value for key, value in locals().items() if key != "ray"}
    check_workers(workers, batch_size)
    launched = launcher_group(workers, ray) if group is None else None
    data = shared_data_dir() if data is None else data
    if loss not in LOSSES:
        raise MedfmError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    if captions not in CAPTIONS:
        raise MedfmError(f"captions must be one of {', '.join(CAPTIONS)}; got {captions!r}")
    if not 0.0 <= caption_share <= 1.0:
        raise MedfmError(f"caption share must be within [0, 1]; got {caption_share}")
    target = checked_device(device)
    if ray is not None and target.type != "cpu":
        raise MedfmError("--ray trains on the workers' CPUs; leave --device out")
    sharing = group or launched  # the group this process trains in, once known: its other ranks read no files
    following = sharing is not None and not sharing.main
    if not data.is_dir() and not following:
        raise MedfmError(f"{display_path(data)}: data folder not found")
    if ray is not None:
        from medfm.scale.ray_train import absolute, train_on_ray

        return train_on_ray(ray, workers, partial(train_clip, **{
            **arguments, "workers": 1, "data": absolute(data), "out": absolute(out), "cache": absolute(cache),
            "init": absolute(init)}))
    config = {"name": model_name, **list_encoders()[model_name]}
    tower = f"{model_name}'s image tower"
    # the other ranks start from rank 0's weights, which DDP sends them as it wraps the model
    pretrained = read_pretrained_trunk(init, "cnn-small", tower) if init is not None and not following else None
    if following:
        pixels, samples, texts, text_features = _cache_from_rank_0(sharing, None)
    else:
        loaded = load_cache(build_cache(data, cache or out / "cache.pt", captions=captions), captions)
        pixels, samples, texts, text_features = _cache_from_rank_0(sharing, loaded) if sharing else loaded
    text_index = {text: i for i, text in enumerate(texts)}
    known_texts = dict(zip(texts, text_features, strict=True))
    pixels, text_features = pixels.to(target), text_features.to(target)
    train = np.array([i for i, s in enumerate(samples) if s.split == "train"])
    val = [i for i, s in enumerate(samples) if s.split == "val"]
    if group is None:  # the cache is built: every process reads it
        check_workers(launched.world if launched else workers, batch_size, len(train))
        if workers > 1:
            return run_in_processes(workers, train_clip, arguments)
        group = launched or Group()

    torch.manual_seed(seed)
    model = build_model(config)
    if pretrained is not None:
        load_pretrained_trunk(model.image_tower, pretrained, tower)
    model.to(target)
    initialised_from = pretrained.weights_sha256 if pretrained is not None else "random"
    if loss == "siglip":  # SigLIP's initialisation: t' = log 10, b = -10
        model.logit_scale.data.fill_(math.log(10.0))
    model.logit_bias.requires_grad_(loss == "siglip")  # only the sigmoid loss uses it (and DDP awaits every gradient)
    decay = [p for p in model.parameters() if p.ndim > 1]  # conv and linear weights
    rest = [p for p in model.parameters() if p.ndim <= 1]  # norms, temperature, bias
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = len(train) // batch_size
    total, warmup = epochs * steps_per_epoch, steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    start_epoch, checkpoint = 0, out / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True, map_location="cpu") if resume and group.main and checkpoint.exists() else None
    state = group.broadcast(state)  # rank 0's checkpoint: the others need not see its folder
    if state is not None:
        if state["loss"] != loss:
            raise MedfmError(f"{display_path(checkpoint)} was trained with --loss {state['loss']}, not {loss}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch = state["epoch"] + 1
        initialised_from = state.get("initialised_from", "random")
    network = group.wrap(model)
    encoder = MedfmClipEncoder(model, EncoderInfo(model_name, config["embed_dim"], has_text=True), text_features=known_texts)
    generator, rng = torch.Generator().manual_seed(seed + start_epoch), np.random.default_rng(seed + start_epoch)
    if group.main:
        out.mkdir(parents=True, exist_ok=True)  # the run folder itself (the command checked that its parent exists)
        write_split_manifest(samples, out / "split_manifest.csv")
    for epoch in range(start_epoch, epochs if stop_after is None else min(epochs, stop_after)):
        model.train()
        began, running = time.time(), 0.0
        order = rng.permutation(train)
        for step in range(steps_per_epoch):
            batch = order[step * batch_size:(step + 1) * batch_size]
            ids, positives = sample_texts(samples, batch, text_index, rng, caption_share)
            # every process augments the global batch alike and embeds its share; the loss compares the whole batch
            views = augment(pixels[torch.as_tensor(batch, device=target)], model.image_size, generator)
            image, text = network(group.share(views), text_features[ids.to(target)])
            value = contrastive_loss(loss, model, group.gather(image), text, positives.to(target))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():  # CLIP's cap on the inverse temperature
                model.logit_scale.clamp_(max=math.log(100.0))
            running += value.item()
        if not group.main:  # rank 0 alone validates and writes
            continue
        model.eval()
        measures = evaluate([samples[i] for i in val], embed_cached(model, pixels[val]), encoder, encoder.logit_scale)
        record = {"epoch": epoch, "loss": loss, "captions": captions, "caption_share": caption_share, "lr": lr,
                  "batch_size": batch_size, "train_loss": running / steps_per_epoch, "seconds": time.time() - began,
                  "logit_scale": encoder.logit_scale, **{k: v for k, v in measures.items() if k != "per_dataset"}}
        with open(out / "history.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "epoch": epoch, "loss": loss, "initialised_from": initialised_from}, checkpoint.with_suffix(".partial"))
        checkpoint.with_suffix(".partial").replace(checkpoint)
    if not group.main:
        return None
    return save_clip_weights(model, config, out / f"{model_name}.safetensors", loss, initialised_from, captions, float16)

