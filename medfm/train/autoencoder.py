"""The first stage of a latent generator (``medfm train generator --latent``): MONAI's ``AutoencoderKL`` fitted to the
training images, then their scaled latents, which the second stage's U-Net learns to generate.

The loss is MONAI's generative tutorials' without its perceptual and adversarial terms (their
networks need downloaded weights or a discriminator's training time): L1 reconstruction plus a
KL term of weight :data:`KL_WEIGHT`. The stage's checkpoint is written in the generator's build
folder beside the second stage's; once fitted, the autoencoder and its summary stay there, so a
resumed training goes straight to the second stage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.models.generators.generator import AUTOENCODER_FILE
from medfm.models.generators.latent import LatentSpace, build_autoencoder
from medfm.models.generators.network import parameter_count
from medfm.train.run_folder import save_checkpoint, write_json

CHECKPOINT_FILE, SUMMARY_FILE = "autoencoder_checkpoint.pt", "autoencoder.json"
#: Weight of the KL term (MONAI's latent-diffusion tutorials use 1e-6).
KL_WEIGHT = 1e-6
#: Images encoded at a time when the latents are computed.
ENCODE_BATCH = 32


def fit_autoencoder(build: Path, images: torch.Tensor, settings: dict[str, Any], budget_s: float, max_steps: int | None,
                    checkpoint_seconds: float, log: Callable[[str], None]) -> tuple[LatentSpace, torch.Tensor, dict[str, Any]]:
    """The latent space of ``images`` (``(N, C, S, S)`` in [-1, 1]): the autoencoder of ``settings["latent"]``
    trained for ``budget_s`` seconds (at most ``max_steps`` steps) or read back from ``build`` when a previous run
    fitted it; returns it with the training images' scaled latents and the stage's summary."""
    from safetensors.torch import load_file

    from medfm.models.registry import save_weights

    torch.manual_seed(settings["seed"])
    autoencoder = build_autoencoder(settings["latent"]["autoencoder"], settings["channels"])
    if (build / SUMMARY_FILE).is_file():
        autoencoder.load_state_dict({k: v.float() for k, v in load_file(str(build / AUTOENCODER_FILE)).items()})
        summary = json.loads((build / SUMMARY_FILE).read_text())
        log("autoencoder fitted by the interrupted run; encoding the training images")
    else:
        summary = _train(build, autoencoder, images, settings, budget_s, max_steps, checkpoint_seconds, log)
        save_weights({k: v.to(torch.float16) for k, v in autoencoder.state_dict().items()}, build / AUTOENCODER_FILE)
        autoencoder.load_state_dict({k: v.float() for k, v in load_file(str(build / AUTOENCODER_FILE)).items()})
    latents = LatentSpace(autoencoder, 1.0)
    means = torch.cat([latents.encode(images[start:start + ENCODE_BATCH]) for start in range(0, len(images), ENCODE_BATCH)])
    if "scale_factor" not in summary:
        summary["scale_factor"] = float(1.0 / means.std())  # float16 weights: scaled as they will be used
        write_json(build / SUMMARY_FILE, summary)
        (build / CHECKPOINT_FILE).unlink(missing_ok=True)
    latents.scale_factor = summary["scale_factor"]
    return latents, means * latents.scale_factor, summary


def _train(build: Path, autoencoder: torch.nn.Module, images: torch.Tensor, settings: dict[str, Any], budget_s: float,
           max_steps: int | None, checkpoint_seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    optimiser = torch.optim.AdamW(autoencoder.parameters(), lr=settings["learning_rate"])
    progress: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "losses": []}
    if (build / CHECKPOINT_FILE).is_file():
        checkpoint = torch.load(build / CHECKPOINT_FILE, weights_only=False)
        autoencoder.load_state_dict(checkpoint["network"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        progress = checkpoint["progress"]
        log(f"autoencoder resumed at step {progress['step']} after {progress['elapsed_s']:.0f} s")
    autoencoder.train()
    rng = np.random.default_rng(settings["seed"] + progress["step"])
    noise = torch.Generator().manual_seed(settings["seed"] + progress["step"])
    started, last_checkpoint = time.monotonic() - progress["elapsed_s"], time.monotonic()
    while time.monotonic() - started < budget_s and (max_steps is None or progress["step"] < max_steps):
        batch = images[rng.integers(0, len(images), settings["batch_size"])]
        mean, sigma = autoencoder.encode(batch)
        reconstruction = autoencoder.decode(mean + sigma * torch.randn(mean.shape, generator=noise))
        kl = 0.5 * (mean.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1).sum(dim=(1, 2, 3)).mean()
        l1 = torch.nn.functional.l1_loss(reconstruction, batch)
        optimiser.zero_grad(set_to_none=True)
        (l1 + KL_WEIGHT * kl).backward()
        optimiser.step()
        progress["step"] += 1
        progress["losses"].append(l1.item())
        progress["elapsed_s"] = time.monotonic() - started
        if time.monotonic() - last_checkpoint >= checkpoint_seconds:
            save_checkpoint(build / CHECKPOINT_FILE, {"network": autoencoder.state_dict(), "optimiser": optimiser.state_dict(),
                                                      "progress": progress})
            last_checkpoint = time.monotonic()
            log(f"autoencoder step {progress['step']}, {progress['elapsed_s']:.0f} s, L1 {np.mean(progress['losses'][-20:]):.4f}")
    autoencoder.eval()
    return {"steps": progress["step"], "training_seconds": round(progress["elapsed_s"], 1),
            "l1_first_10": float(np.mean(progress["losses"][:10])), "l1_last_10": float(np.mean(progress["losses"][-10:])),
            "parameters": parameter_count(autoencoder)}
