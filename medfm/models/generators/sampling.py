"""Sampling, translation and inpainting with a :class:`~medfm.models.generators.generator.Generator`.

Flow generators integrate the learned velocity with Euler steps: from noise (t = 1) to data
(t = 0) to sample; MedShift's translation runs the same ODE backwards (data to t = τ)
under the source condition, then forwards (τ to 0) under the target, so that τ trades
structure kept against how far the image moves toward the target; inpainting replaces, at
every step, the known region by the source image re-noised to the current time along its
own straight path, so that only the masked region is generated (flow inpainting, RePaint's
idea without its resampling jumps). DDPM generators sample with MONAI's DDIM scheduler (or, slowly,
its ancestral DDPM scheduler over every training step: :func:`ancestral_sample`).

Every tensor is ``(N, C, S, S)``, pixels in [0, 1] at the boundary; an image–mask pair generator's samples
carry the mask as one more channel (:func:`medfm.models.generators.pixels.split_mask` parts them).
"""

from __future__ import annotations

from typing import Any

import torch

from medfm.errors import MedfmError
from medfm.models.generators.generator import DDPM_TIMESTEPS, Generator


def _to_model(generator: Generator, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] as the network generates them: in its pixel range, encoded for a latent generator."""
    low, high = generator.pixel_range
    x = low + pixels * (high - low)
    return x if generator.latent is None else generator.latent.encode(x)


def _to_pixels(generator: Generator, x: torch.Tensor) -> torch.Tensor:
    """What the network generates as pixels in [0, 1] (a latent generator's latents decoded first)."""
    low, high = generator.pixel_range
    if generator.latent is not None:
        x = generator.latent.decode(x)
    return ((x - low) / (high - low)).clamp(0.0, 1.0)


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _noises(generator: Generator, seeds: list[int]) -> torch.Tensor:
    """``(N, C, S, S)`` noise of the network's sample shape, image n from its own ``seeds[n]`` (one image is
    reproducible from its seed alone)."""
    return torch.cat([_noise((1, *generator.sample_shape), seed) for seed in seeds])


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise MedfmError(f"steps must be a positive whole number; got {steps!r}")


def _euler(generator: Generator, x: torch.Tensor, start: float, end: float, steps: int,
           labels: list[str | None], guidance: float) -> torch.Tensor:
    """Integrate the flow ODE from time ``start`` to ``end`` (either direction) in ``steps`` Euler steps."""
    times = torch.linspace(start, end, steps + 1)
    for now, after in zip(times[:-1], times[1:]):
        velocity = generator.predict(x, now.expand(len(x)), labels, guidance)
        x = x + (after - now) * velocity
    return x


@torch.no_grad()
def sample(generator: Generator, labels: list[str | None], steps: int, guidance: float, seeds: list[int]) -> torch.Tensor:
    """One image per resolved condition in ``labels`` (None: unconditional), image n from noise seeded by ``seeds[n]``."""
    _check_steps(steps)
    if len(seeds) != len(labels):
        raise MedfmError(f"one seed per image: {len(seeds)} seeds for {len(labels)} images")
    noise = _noises(generator, seeds)
    if generator.method == "flow":
        return _to_pixels(generator, _euler(generator, noise, 1.0, 0.0, steps, labels, guidance))
    return _to_pixels(generator, ddim_sample(generator, noise, labels, steps, guidance))


def ddim_sample(generator: Generator, noise: torch.Tensor, labels: list[str | None], steps: int, guidance: float) -> torch.Tensor:
    """A DDPM generator's samples from ``noise`` with MONAI's DDIM scheduler (η = 0) in ``steps`` steps."""
    from monai.networks.schedulers import DDIMScheduler

    scheduler = _ddpm_scheduler(generator, DDIMScheduler)
    scheduler.set_timesteps(min(steps, scheduler.num_train_timesteps))
    x = noise
    for timestep in scheduler.timesteps:
        predicted = generator.predict(x, timestep.expand(len(x)).float(), labels, guidance)
        x, _ = scheduler.step(predicted, int(timestep), x)
    return x


@torch.no_grad()
def ancestral_sample(generator: Generator, labels: list[str | None], guidance: float, seeds: list[int]) -> torch.Tensor:
    """A DDPM generator's images (pixels in [0, 1]) by MONAI's ``DDPMScheduler`` over every training timestep
    (ancestral sampling, fresh noise at each step, drawn from ``seeds[0]``): the slow sampler DDPMs were
    trained for, which medfm's DDIM replaces and ``benchmarks/generator_heldout.py --ancestral`` measures."""
    from monai.networks.schedulers import DDPMScheduler

    if generator.method != "ddpm":
        raise MedfmError(f"ancestral sampling needs a DDPM generator; {generator.name!r} was trained with {generator.method}")
    if len(seeds) != len(labels):
        raise MedfmError(f"one seed per image: {len(seeds)} seeds for {len(labels)} images")
    scheduler = _ddpm_scheduler(generator, DDPMScheduler)
    scheduler.set_timesteps(scheduler.num_train_timesteps)
    x, step_noise = _noises(generator, seeds), torch.Generator().manual_seed(seeds[0])
    for timestep in scheduler.timesteps:
        predicted = generator.predict(x, timestep.expand(len(x)).float(), labels, guidance)
        x, _ = scheduler.step(predicted, int(timestep), x, generator=step_noise)
    return _to_pixels(generator, x)


def _ddpm_scheduler(generator: Generator, kind: type) -> Any:
    """MONAI scheduler ``kind`` under the noise schedule the generator was trained with (config ``scheduler``:
    MONAI scheduler arguments such as ``schedule``, ``beta_start``, ``beta_end``; default MONAI's linear
    1,000-step one, medfm's own)."""
    try:
        return kind(**{"num_train_timesteps": DDPM_TIMESTEPS, **generator.config.get("scheduler", {})})
    except (TypeError, ValueError) as exc:
        raise MedfmError(f"generator {generator.name!r}: its scheduler arguments {generator.config['scheduler']} do not make "
                         f"a MONAI scheduler ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def require_flow(generator: Generator, what: str) -> None:
    """MedfmError unless ``generator`` is a flow image generator (translation and editing need one)."""
    if generator.mask_labels:
        raise MedfmError(f"{what} takes an image generator; {generator.name!r} makes image–mask pairs")
    if generator.method != "flow":
        raise MedfmError(f"{what} needs a flow generator; {generator.name!r} was trained with {generator.method} "
                         "(train one with --method flow)")


def check_pixels(generator: Generator, pixels: torch.Tensor, what: str) -> None:
    """MedfmError unless ``pixels`` is ``(N, C, S, S)`` in the generator's channels and size."""
    expected = (generator.channels, generator.size, generator.size)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
        raise MedfmError(f"{what} is {tuple(pixels.shape[1:])} (channels, rows, columns); generator {generator.name!r} "
                         f"takes {expected}")


@torch.no_grad()
def translate(generator: Generator, pixels: torch.Tensor, source: str, target: str, strength: float,
              steps: int, guidance: float) -> torch.Tensor:
    """``pixels`` moved from condition ``source`` to ``target`` (MedShift): back to time ``strength`` (τ in
    [0, 1]) under ``source``, then forward under ``target``, with ``steps`` steps for the whole [0, 1]."""
    require_flow(generator, "translation")
    check_pixels(generator, pixels, "the image")
    _check_steps(steps)
    if not 0.0 <= strength <= 1.0:
        raise MedfmError(f"--strength (τ) must lie in [0, 1]; got {strength}")
    if strength == 0.0:
        return pixels.clone()
    count = max(1, round(steps * strength))
    x = _euler(generator, _to_model(generator, pixels), 0.0, strength, count, [source] * len(pixels), guidance)
    return _to_pixels(generator, _euler(generator, x, strength, 0.0, count, [target] * len(pixels), guidance))


@torch.no_grad()
def inpaint(generator: Generator, pixels: torch.Tensor, mask: torch.Tensor, labels: list[str | None],
            steps: int, guidance: float, seed: int) -> torch.Tensor:
    """``pixels`` with the region where ``mask`` (``(N, 1, S, S)``, 1 = generate) is non-zero generated
    under ``labels``; elsewhere the result equals the input."""
    require_flow(generator, "editing")
    check_pixels(generator, pixels, "the image")
    _check_steps(steps)
    if tuple(mask.shape) != (len(pixels), 1, generator.size, generator.size):
        raise MedfmError(f"the mask is {tuple(mask.shape[-2:])}; it must match the image, {generator.size}x{generator.size}")
    region = (mask != 0).float()
    # a latent generator regenerates every latent cell the region touches
    generated = torch.nn.functional.adaptive_max_pool2d(region, generator.sample_shape[1:])
    known = _to_model(generator, pixels)
    noise = _noises(generator, [seed + n for n in range(len(pixels))])
    times = torch.linspace(1.0, 0.0, steps + 1)
    x = noise
    for now, after in zip(times[:-1], times[1:]):
        x = generated * x + (1 - generated) * ((1 - now) * known + now * noise)
        x = x + (after - now) * generator.predict(x, now.expand(len(x)), labels, guidance)
    return region * _to_pixels(generator, x) + (1 - region) * pixels
