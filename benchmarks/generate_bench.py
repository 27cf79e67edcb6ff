"""Sampling speed: medfm's flow sampler against a plain MONAI DDPM sampler of the same network, and FRD per step count.

Run ``python benchmarks/generate_bench.py [--sizes 64 128] [--steps 20 50] [--batch 8] [--threads 1]
[--ddpm-measured-steps 5] [--generator GEN_DIR --reference FOLDER [--frd-images 64] [--workers 1]]``; prints
one JSON object. For each size, the same class-conditional ``DiffusionModelUNet`` (medfm's default shape for
that size; the trained one of GEN_DIR when given) samples ``--batch`` images:

- medfm: Euler integration of the flow ODE in S steps, classifier-free guidance 2 (two network
  passes per step, batched);
- peer: MONAI's ``DDPMScheduler`` over its 1,000 timesteps with the same guidance. Running all
  1,000 steps per size would take most of an hour on 2 shared cores, so ``--ddpm-measured-steps``
  steps are timed (after one warm-up step) and the time per step is multiplied by 1,000: the JSON
  says so (``"ddpm_extrapolated_from_steps"``). Each step's cost does not depend on the timestep.

The ratio is medfm images/s over DDPM images/s at each step count. Beside it, the latent generator
``train generator`` makes by default from 128² on (the default U-Net of the latent side over the default
``AutoencoderKL``'s latents, decoded at the end), with its speed-up over the pixel flow generator of the
same size. With ``--generator`` (a grey
generator) and ``--reference`` (a folder of held-out real images, prepared here as the generator's
training prepared its images: 64² or 128², 8-bit), ``--frd-images`` samples per step count S (seeds
0, 1, ..., classes in turn) are scored by medfm's FRD against the reference (``medfm evaluate frd``'s
function), beside the time they took and the target's bar: FRD(reference + Gaussian noise at
MedMNIST-C severity 3, reference), made by ``generator_heldout.py``'s code. FRD of a 1,000-step DDPM
sampler needs a DDPM-trained generator of the same budget, which this benchmark does not train: it
reports ``null`` with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medfm.models.generators import Generator
from medfm.models.generators.latent import DEFAULT_AUTOENCODER, LatentSpace, build_autoencoder, latent_factor
from medfm.models.generators.network import build_unet, default_network, parameter_count
from medfm.models.generators.sampling import sample

sys.path.insert(0, str(Path(__file__).resolve().parent))

GUIDANCE = 2.0
DDPM_STEPS = 1000


def random_generator(size: int) -> Generator:
    """An untrained two-class generator of medfm's default shape for ``size`` (speed does not depend on the weights)."""
    network = default_network(size)
    config = {"name": f"bench-{size}", "method": "flow", "condition": "class", "classes": ["a", "b"], "size": size,
              "channels": 1, "network": network}
    return Generator(build_unet(network, 1, "class", 2), config)


def random_latent_generator(size: int) -> Generator:
    """An untrained two-class latent generator of the shape ``train generator --latent`` gives ``size``² images."""
    factor = latent_factor(DEFAULT_AUTOENCODER)
    network = default_network(size // factor)
    latent = {"autoencoder": DEFAULT_AUTOENCODER, "factor": factor, "scale_factor": 1.0}
    config = {"name": f"bench-latent-{size}", "method": "flow", "condition": "class", "classes": ["a", "b"], "size": size,
              "channels": 1, "network": network, "latent": latent}
    unet = build_unet(network, DEFAULT_AUTOENCODER["latent_channels"], "class", 2)
    return Generator(unet, config, latent=LatentSpace(build_autoencoder(DEFAULT_AUTOENCODER, 1), 1.0))


def flow_seconds(generator: Generator, batch: int, steps: int) -> float:
    labels = [generator.classes[i % len(generator.classes)] for i in range(batch)]
    sample(generator, labels, 1, GUIDANCE, list(range(batch)))  # warm-up
    start = time.perf_counter()
    sample(generator, labels, steps, GUIDANCE, list(range(batch)))
    return time.perf_counter() - start


@torch.no_grad()
def ddpm_seconds_per_step(generator: Generator, batch: int, measured: int) -> float:
    """Seconds per step of MONAI's DDPMScheduler loop (guided), timed over ``measured`` steps after one warm-up."""
    from monai.networks.schedulers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=DDPM_STEPS)
    scheduler.set_timesteps(DDPM_STEPS)
    labels = [generator.classes[i % len(generator.classes)] for i in range(batch)]
    x = torch.randn(batch, generator.channels, generator.size, generator.size, generator=torch.Generator().manual_seed(0))
    timesteps = list(scheduler.timesteps[: measured + 1])
    start = None
    for index, timestep in enumerate(timesteps):
        if index == 1:
            start = time.perf_counter()
        predicted = generator.predict(x, timestep.expand(batch).float(), labels, GUIDANCE)
        x, _ = scheduler.step(predicted, int(timestep), x)
    return (time.perf_counter() - start) / measured


def frd_at_steps(generator: Generator, reference: Path, steps: list[int], count: int, workers: int) -> dict:
    """FRD(``count`` samples at each step count, reference) and the noise bar: FRD(reference + Gaussian noise at
    severity 3, reference); the reference prepared as the generator's training prepared its images."""
    from generator_heldout import NOISE, noisy_copies, prepared, write_pngs

    from medfm.train.generator_eval import frd_summary, reference_images

    if generator.channels != 1:
        raise SystemExit(f"generator {generator.name!r} makes {generator.channels}-channel images; the FRD part takes grey generators")
    labels = [generator.classes[i % len(generator.classes)] for i in range(count)] if generator.classes else [None] * count
    result = {"generator": generator.name, "weights_sha256": generator.weights_sha256, "samples": count,
              "seeds": f"0..{count - 1}, classes in turn", "flow_steps": {}}
    with tempfile.TemporaryDirectory() as tmp:
        real = prepared([str(p) for p in reference_images(reference)], generator.size)
        folder = write_pngs(real, Path(tmp) / "reference")
        result["reference_images"] = len(real)
        noisy = write_pngs(noisy_copies(real, np.random.default_rng(0)), Path(tmp) / "noisy")
        result["noisy_reference"] = {"noise": NOISE, **frd_summary(folder, noisy, workers)}
        for step_count in steps:
            pixels, start_time = [], time.perf_counter()
            for start in range(0, count, 16):
                chosen = labels[start:start + 16]
                pixels.append(sample(generator, chosen, step_count, GUIDANCE, list(range(start, start + len(chosen)))))
            seconds = time.perf_counter() - start_time
            samples = write_pngs((torch.cat(pixels).numpy() * 255).round().astype(np.uint8), Path(tmp) / f"steps-{step_count}")
            result["flow_steps"][str(step_count)] = {"sampling_seconds": seconds, "images_per_s": count / seconds,
                                                     **frd_summary(folder, samples, workers)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--ddpm-measured-steps", type=int, default=5)
    parser.add_argument("--generator", "--gen-dir", type=Path, default=None,
                        help="a trained generator (GEN_DIR): its size and weights, and FRD")
    parser.add_argument("--reference", type=Path, default=None, help="held-out real images for FRD (with --generator)")
    parser.add_argument("--frd-images", type=int, default=64, help="samples per step count for FRD")
    parser.add_argument("--workers", type=int, default=1, help="radiomics processes for FRD")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, load_at_start = time.perf_counter(), os.getloadavg()
    trained = None
    if args.generator is not None:
        from medfm.models.registry import create_generator

        trained = create_generator(args.generator)
    report = {"machine": platform.processor() or platform.machine(), "torch_threads": args.threads, "batch": args.batch,
              "guidance": GUIDANCE, "ddpm_steps": DDPM_STEPS, "ddpm_extrapolated_from_steps": args.ddpm_measured_steps,
              "sizes": {}}
    for size in [trained.size] if trained else args.sizes:
        generator = trained or random_generator(size)
        per_step = ddpm_seconds_per_step(generator, args.batch, args.ddpm_measured_steps)
        ddpm_rate = args.batch / (per_step * DDPM_STEPS)
        entry = {"parameters": parameter_count(generator.network), "ddpm_seconds_per_step": per_step,
                 "ddpm_images_per_s_extrapolated": ddpm_rate, "flow": {}}
        for steps in args.steps:
            seconds = flow_seconds(generator, args.batch, steps)
            entry["flow"][str(steps)] = {"seconds": seconds, "images_per_s": args.batch / seconds,
                                         "speedup_vs_ddpm_1000": (args.batch / seconds) / ddpm_rate}
        if trained is None:
            latent = random_latent_generator(size)
            entry["latent_flow"] = {"parameters": parameter_count(latent.network) + parameter_count(latent.latent.autoencoder)}
            for steps in args.steps:
                seconds = flow_seconds(latent, args.batch, steps)
                entry["latent_flow"][str(steps)] = {
                    "seconds": seconds, "images_per_s": args.batch / seconds,
                    "speedup_vs_pixel_flow": (args.batch / seconds) / entry["flow"][str(steps)]["images_per_s"]}
        report["sizes"][str(size)] = entry
    if trained is not None and args.reference is not None:
        report["frd_vs_reference"] = {**frd_at_steps(trained, args.reference, args.steps, args.frd_images, args.workers),
                                      "ddpm_1000_steps": None,
                                      "ddpm_note": "needs a DDPM-trained generator of the same budget; not trained here"}
    report.update(wall_seconds=time.perf_counter() - started, load_average_at_start_and_end=[load_at_start, os.getloadavg()])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
