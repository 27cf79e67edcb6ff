"""``medfm train generator``: a conditional image generator trained on the user's own images.

Rectified flow matching (default: the network learns the velocity ``ε - x`` of the straight
path ``x_t = (1 - t) x + t ε`` at uniform t) or DDPM (noise prediction under MONAI's linear
1,000-step schedule, :class:`monai.networks.schedulers.DDPMScheduler`), on MONAI's
``DiffusionModelUNet``. With ``masks``, the generator learns image–mask pairs: the mask is one more
channel of every training image (:mod:`medfm.train.generator_data`), so each sample comes with its
label map. A latent generator (``latent``; by default at 128² and above) first fits MONAI's
``AutoencoderKL`` for a share of the budget (:mod:`medfm.train.autoencoder`) and learns to generate
its scaled latents instead of pixels. The condition (a class or a MiniLM-embedded text) is dropped for
10 % of the examples so that one network also predicts unconditionally (classifier-free
guidance at sampling). An exponential moving average of the weights (PyTorch's
``AveragedModel``) is what ships.

Everything is built in a hidden ``.GEN_DIR.partial`` folder beside GEN_DIR and renamed at the
end, so GEN_DIR is either absent or complete. The decoded images are cached there once; the
checkpoint is written to a temporary file and renamed (a SIGKILL leaves the previous one
intact), and ``resume=True`` continues from it with the time already spent counted.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.errors import MedfmError, display_path
from medfm.models.generators.generator import (AUTOENCODER_FILE, CARD_FILE, CONFIG_FILE, DDPM_TIMESTEPS, DEFAULT_GUIDANCE,
                                               DEFAULT_STEPS, METHODS, WEIGHTS_FILE, Generator, network_channels)
from medfm.models.generators.latent import DEFAULT_AUTOENCODER, latent_factor
from medfm.models.generators.network import (CONDITIONS, build_unet, default_network, downsampling_factor, ema_average,
                                             parameter_count)
from medfm.train.generator_data import collect, decode, decode_masks
from medfm.train.run_folder import partial_folder, save_checkpoint, write_json

CHECKPOINT_FILE, STATE_FILE, PIXELS_FILE = "checkpoint.pt", "training.json", "pixels.npz"
#: Share of training examples whose condition is dropped (classifier-free guidance).
CONDITION_DROPOUT = 0.1
#: A text generator keeps its training texts as the conditions sampled without one, if there are at most this many.
MAX_LISTED_TEXTS = 64
#: Training images the edit gate's reference statistics are taken from.
QUALITY_IMAGES = 64
#: Image side from which a generator is latent unless told otherwise.
LATENT_FROM_SIZE = 128
#: Share of a latent generator's budget that fits its autoencoder.
AUTOENCODER_SHARE = 0.3


def train_generator(
    data: str | os.PathLike, out: str | os.PathLike, *, condition: str = "class", column: str | None = None,
    size: int = 64, method: str = "flow", masks: bool = False, latent: bool | None = None, budget_minutes: float = 10.0,
    resume: bool = False,
    network: Mapping[str, Any] | None = None, batch_size: int | None = None, learning_rate: float = 3e-4,
    ema_decay: float = 0.999, max_steps: int | None = None, checkpoint_seconds: float = 60.0, seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train a generator on ``data`` (manifest or folder, see :mod:`medfm.train.generator_data`) and write GEN_DIR
    ``out``; returns the training summary. ``masks``: learn image–mask pairs from the manifest's ``mask`` column;
    ``latent``: generate an autoencoder's latents (default: from :data:`LATENT_FROM_SIZE`).
    ``network`` overrides the U-Net's arguments
    (:data:`medfm.models.generators.network.DEFAULT_NETWORKS`); ``max_steps`` caps the steps within the budget."""
    if condition not in CONDITIONS:
        raise MedfmError(f"--condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
    if method not in METHODS:
        raise MedfmError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if not budget_minutes > 0:
        raise MedfmError(f"--budget-min must be above 0 minutes; got {budget_minutes}")
    latent = size >= LATENT_FROM_SIZE and not masks if latent is None else latent
    if latent and masks:
        raise MedfmError("--latent and --masks do not go together: a pair generator makes its masks in pixels")
    out = Path(out)
    build = partial_folder(out, resume, CHECKPOINT_FILE, "generator folder", "training")
    if not out.parent.is_dir():
        raise MedfmError(f"{display_path(out.parent)}: no such folder for the generator")
    items = collect(data, condition, column, masks)
    if resume:
        state = json.loads((build / STATE_FILE).read_text())
        if state["data_sha256"] != items.digest:
            raise MedfmError(f"{display_path(data)}: changed since the interrupted training started; start a new one")
        settings = state["settings"]
        cached = np.load(build / PIXELS_FILE)
        pixels, labels = cached["pixels"], [None if c == "" else str(c) for c in cached["conditions"]]
    else:
        settings = _settings(condition, size, method, network, batch_size, learning_rate, ema_decay, seed, items.conditions,
                             latent)
        log(f"decoding {len(items.paths)} images at {size}x{size}")
        pixels, channels = decode(items, size)
        settings["channels"] = channels
        if masks:
            mask_channel, settings["mask_labels"] = decode_masks(items, size)
            pixels = np.concatenate([pixels, mask_channel], axis=1)
        build_unet(settings["network"], network_channels(settings), condition, len(settings["classes"]))  # a bad --network fails here
        labels = items.conditions
        build.mkdir()
        np.savez(build / PIXELS_FILE, pixels=pixels, conditions=np.array([c or "" for c in labels]))
        write_json(build / STATE_FILE, {"data_sha256": items.digest, "settings": settings, "budget_minutes": budget_minutes})
    torch.manual_seed(settings["seed"])
    unet = build_unet(settings["network"], network_channels(settings), condition, len(settings["classes"]))
    ema = torch.optim.swa_utils.AveragedModel(unet, avg_fn=ema_average(settings["ema_decay"]))
    optimiser = torch.optim.AdamW(unet.parameters(), lr=settings["learning_rate"], weight_decay=0.0)
    progress: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "losses": [], "resumed_at_steps": []}
    if resume:
        checkpoint = torch.load(build / CHECKPOINT_FILE, weights_only=False)
        unet.load_state_dict(checkpoint["network"])
        ema.load_state_dict(checkpoint["ema"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        progress = checkpoint["progress"]
        progress["resumed_at_steps"].append(progress["step"])
        log(f"resumed at step {progress['step']} after {progress['elapsed_s']:.0f} s")
    images = torch.from_numpy(pixels).float() / 127.5 - 1.0
    autoencoder_summary = None
    if "latent" in settings:
        from medfm.train.autoencoder import fit_autoencoder

        if not resume:  # a run killed while its autoencoder trains has this to resume from
            _save_checkpoint(build, unet, ema, optimiser, progress)
        _, images, autoencoder_summary = fit_autoencoder(build, images, settings, budget_minutes * 60.0 * AUTOENCODER_SHARE,
                                                         max_steps, checkpoint_seconds, log)
        if not progress["step"]:
            progress["elapsed_s"] = autoencoder_summary["training_seconds"]
    model = Generator(unet, {**settings, "name": out.name, "condition": condition, "method": method})
    model.network.train()
    rng = np.random.default_rng(settings["seed"] + progress["step"])
    noise_source = torch.Generator().manual_seed(settings["seed"] + progress["step"])
    scheduler = _ddpm_scheduler() if method == "ddpm" else None
    budget_s = budget_minutes * 60.0
    started = time.monotonic() - progress["elapsed_s"]
    last_checkpoint = time.monotonic()
    while time.monotonic() - started < budget_s and (max_steps is None or progress["step"] < max_steps):
        warmup = min(1.0, (progress["step"] + 1) / 50)
        for group in optimiser.param_groups:
            group["lr"] = settings["learning_rate"] * warmup
        chosen = rng.integers(0, len(images), settings["batch_size"])
        batch = images[chosen]
        batch_labels = [None if labels[i] is None or rng.random() < CONDITION_DROPOUT else labels[i] for i in chosen]
        loss = _loss(model, batch, batch_labels, scheduler, noise_source)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimiser.step()
        ema.update_parameters(unet)
        progress["step"] += 1
        progress["losses"].append(loss.item())
        progress["elapsed_s"] = time.monotonic() - started
        if time.monotonic() - last_checkpoint >= checkpoint_seconds:
            _save_checkpoint(build, unet, ema, optimiser, progress)
            last_checkpoint = time.monotonic()
            log(f"step {progress['step']}, {progress['elapsed_s']:.0f} s, loss {np.mean(progress['losses'][-20:]):.4f}")
    _save_checkpoint(build, unet, ema, optimiser, progress)
    log(f"trained {progress['step']} steps in {progress['elapsed_s']:.0f} s")
    quality = None if settings.get("mask_labels") else _edit_gate_reference(pixels, settings, log)  # pairs are never edited
    summary = {
        "steps": progress["step"], "training_seconds": round(progress["elapsed_s"], 1),
        "resumed_at_steps": progress["resumed_at_steps"], "train_images": len(pixels),
        "images_per_condition": dict(Counter(c for c in labels if c is not None)),
        "loss_first_10": float(np.mean(progress["losses"][:10])), "loss_last_10": float(np.mean(progress["losses"][-10:])),
        "budget_minutes": budget_minutes, "data_sha256": items.digest, "parameters": parameter_count(unet),
        **({"autoencoder": autoencoder_summary} if autoencoder_summary else {}),
    }
    _write_generator_dir(build, out, ema.module, settings, condition, method, quality, summary)
    return {"generator_dir": display_path(out), **summary}


def parse_network(text: str | None) -> dict[str, Any] | None:
    """``--network``'s JSON object of U-Net arguments (None passes through)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise MedfmError(f"--network takes a JSON object of U-Net arguments; {exc}") from None
    if not isinstance(value, dict):
        raise MedfmError(f"--network takes a JSON object of U-Net arguments; got {text!r}")
    return value


def _settings(condition: str, size: int, method: str, network: Mapping[str, Any] | None, batch_size: int | None,
              learning_rate: float, ema_decay: float, seed: int, conditions: list[str | None], latent: bool) -> dict[str, Any]:
    reduction = latent_factor(DEFAULT_AUTOENCODER) if latent else 1
    arguments = {**default_network(size // reduction), **(network or {})}
    factor = downsampling_factor(arguments) * reduction
    if size < 8 or size % factor:
        raise MedfmError(f"--size must be a multiple of {factor} (the U-Net halves it {downsampling_factor(arguments).bit_length() - 1} "
                         f"times" + (f", over latents {reduction}x smaller" if latent else "") + f"); got {size}")
    distinct = sorted({c for c in conditions if c is not None})
    if condition == "class" and len(distinct) < 2:
        raise MedfmError(f"class conditioning needs at least 2 classes; the data has {len(distinct)}")
    classes = distinct if condition == "class" or (condition == "text" and len(distinct) <= MAX_LISTED_TEXTS) else []
    return {"size": size, "network": arguments, "classes": classes, "batch_size": batch_size or (16 if size <= 64 else 8),
            "learning_rate": learning_rate, "ema_decay": ema_decay, "seed": seed,
            **({"latent": {"autoencoder": DEFAULT_AUTOENCODER, "factor": reduction}} if latent else {})}


def _ddpm_scheduler():
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=DDPM_TIMESTEPS)


def _loss(model: Generator, batch: torch.Tensor, labels: list[str | None], scheduler, noise_source: torch.Generator) -> torch.Tensor:
    """Flow: MSE of the predicted velocity against ``ε - x``; DDPM: MSE of the predicted noise."""
    noise = torch.randn(batch.shape, generator=noise_source)
    if scheduler is None:
        t = torch.rand(len(batch), generator=noise_source)
        noisy = (1 - t[:, None, None, None]) * batch + t[:, None, None, None] * noise
        return torch.nn.functional.mse_loss(model.predict(noisy, t, labels, 1.0), noise - batch)
    timesteps = torch.randint(0, DDPM_TIMESTEPS, (len(batch),), generator=noise_source)
    noisy = scheduler.add_noise(batch, noise, timesteps)
    return torch.nn.functional.mse_loss(model.predict(noisy, timesteps.float(), labels, 1.0), noise)


def _save_checkpoint(build: Path, unet: torch.nn.Module, ema: torch.nn.Module, optimiser: torch.optim.Optimizer,
                     progress: dict[str, Any]) -> None:
    save_checkpoint(build / CHECKPOINT_FILE, {"network": unet.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                "progress": progress})



def _edit_gate_reference(pixels: np.ndarray, settings: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from medfm.models.generators.quality import fit_quality_reference

    log("measuring the edit gate's reference")
    chosen = np.random.default_rng(settings["seed"]).permutation(len(pixels))[:QUALITY_IMAGES]
    return fit_quality_reference(pixels[chosen, :settings["channels"]].astype(np.float32) / 255.0, settings["seed"])


def _write_generator_dir(build: Path, out: Path, network: torch.nn.Module, settings: dict[str, Any], condition: str,
                         method: str, quality: dict[str, Any] | None, summary: dict[str, Any]) -> None:
    from medfm.models.registry import save_weights, sha256_of

    from medfm.train.autoencoder import CHECKPOINT_FILE as AUTOENCODER_CHECKPOINT
    from medfm.train.autoencoder import SUMMARY_FILE as AUTOENCODER_SUMMARY

    save_weights({k: v.to(torch.float16) for k, v in network.state_dict().items()}, build / WEIGHTS_FILE)
    latent = {}
    if "latent" in settings:
        latent = {"latent": {**settings["latent"], "scale_factor": summary["autoencoder"]["scale_factor"],
                             "weights": {"file": AUTOENCODER_FILE, "sha256": sha256_of(build / AUTOENCODER_FILE),
                                         "dtype": "float16"}}}
    config = {
        "name": out.name, "kind": "generator", "family": "medfm_generator", "method": method, "condition": condition,
        "classes": settings["classes"], "size": settings["size"], "channels": settings["channels"],
        **({"mask_labels": settings["mask_labels"]} if settings.get("mask_labels") else {}),
        "network": settings["network"], "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(build / WEIGHTS_FILE),
                                                    "dtype": "float16"},
        **latent,
        "sampling": {"steps": DEFAULT_STEPS[method], "guidance": DEFAULT_GUIDANCE if condition != "none" else 1.0},
        "training": {**summary, "batch_size": settings["batch_size"], "learning_rate": settings["learning_rate"],
                     "ema_decay": settings["ema_decay"], "condition_dropout": CONDITION_DROPOUT, "seed": settings["seed"]},
        **({"quality": quality} if quality else {}),
    }
    write_json(build / CONFIG_FILE, config)
    (build / CARD_FILE).write_text(generator_card(config))
    for name in (CHECKPOINT_FILE, STATE_FILE, PIXELS_FILE, AUTOENCODER_CHECKPOINT, AUTOENCODER_SUMMARY):
        (build / name).unlink(missing_ok=True)
    os.replace(build, out)


def generator_card(config: dict[str, Any]) -> str:
    """The markdown card of a freshly trained generator (what it is, how it was trained, how to use it)."""
    training = config["training"]
    conditions = training["images_per_condition"]
    kind = "Unconditional" if config["condition"] == "none" else f"{config['condition'].capitalize()}-conditional"
    lines = [f"# {config['name']}", "",
             f"{kind} image generator ({config['method']}, "
             f"{config['size']}x{config['size']}, {config['channels']} channel(s)) trained by `medfm train generator` "
             "on the user's own images. **Every image it makes is synthetic** and is marked so in the files medfm writes.",
             "", "## Conditions", ""]
    lines += [f"- `{name}`: {count} training images" for name, count in sorted(conditions.items())] or ["- none (unconditional)"]
    if config.get("mask_labels"):
        lines += ["", "## Image–mask pairs", "",
                  f"Every sample comes with its label map (mask label values {config['mask_labels']}), learnt as one more "
                  "channel of the training images; `medfm generate` writes `images/`, `masks/` and a `manifest.csv` that "
                  "`medfm train seg` reads."]
    if "latent" in config:
        autoencoder = training["autoencoder"]
        lines += ["", "## Latent space", "",
                  f"MONAI `AutoencoderKL` {config['latent']['autoencoder']}, {autoencoder['parameters']:,} parameters, "
                  f"float16: {autoencoder['steps']} steps in {autoencoder['training_seconds']} s (L1 + KL, no perceptual or "
                  f"adversarial term); L1 {autoencoder['l1_first_10']:.4f} (first 10 steps) → {autoencoder['l1_last_10']:.4f} "
                  f"(last 10). The U-Net generates its latents, {config['latent']['factor']}x smaller per side, scaled by "
                  f"{config['latent']['scale_factor']:.4g}."]
    lines += ["", "## Training", "",
              f"- MONAI `DiffusionModelUNet` {config['network']}, {training['parameters']:,} parameters; EMA weights "
              f"(decay {training['ema_decay']}) stored as float16",
              f"- {training['steps']} steps of batch {training['batch_size']} in {training['training_seconds']} s "
              f"(budget {training['budget_minutes']} min), resumed at steps {training['resumed_at_steps'] or 'never'}; "
              f"loss {training['loss_first_10']:.4f} (first 10 steps) → {training['loss_last_10']:.4f} (last 10)",
              f"- {training['train_images']} training images, data sha256 `{training['data_sha256']}`",
              f"- condition dropout {training['condition_dropout']} for classifier-free guidance; sampling defaults: "
              f"{config['sampling']['steps']} steps, guidance {config['sampling']['guidance']}",
              "", "## Quality", "",
              "Not measured by training: compare samples with held-out real images with `medfm evaluate frd`."
              + (" The edit gate's reference (radiomic OOD statistics of the training images) is in `config.json` "
                 "(`quality`)." if "quality" in config else ""), ""]
    return "\n".join(lines)
