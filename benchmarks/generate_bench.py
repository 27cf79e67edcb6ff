"""Sampling speed: medfm's flow sampler against a plain MONAI DDPM sampler of the same network.

Run ``python benchmarks/generate_bench.py [--sizes 64 128] [--steps 20 50] [--batch 8] [--threads 1]
[--ddpm-measured-steps 5] [--gen-dir GEN_DIR --reference FOLDER --frd-images 100]``; prints one JSON
object. For each size, the same class-conditional ``DiffusionModelUNet`` (medfm's default shape for
that size; the trained one of GEN_DIR when given) samples ``--batch`` images:

- medfm: Euler integration of the flow ODE in S steps, classifier-free guidance 2 (two network
  passes per step, batched);
- peer: MONAI's ``DDPMScheduler`` over its 1,000 timesteps with the same guidance. Running all
  1,000 steps per size would take most of an hour on 2 shared cores, so ``--ddpm-measured-steps``
  steps are timed (after one warm-up step) and the time per step is multiplied by 1,000: the JSON
  says so (``"ddpm_extrapolated_from_steps"``). Each step's cost does not depend on the timestep.

The ratio is medfm images/s over DDPM images/s at each step count. With ``--gen-dir`` and
``--reference`` (a folder of real images prepared like the generator's training images),
FRD(samples at S steps, reference) is measured for each S, spread evenly over the classes.
FRD of a 1,000-step DDPM sampler needs a DDPM-trained generator of the same budget, which this
benchmark does not train: it reports ``null`` with the reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from medfm.models.generators import Generator
from medfm.models.generators.network import build_unet, default_network, parameter_count
from medfm.models.generators.sampling import sample

GUIDANCE = 2.0
DDPM_STEPS = 1000


def random_generator(size: int) -> Generator:
    """An untrained two-class generator of medfm's default shape for ``size`` (speed does not depend on the weights)."""
    network = default_network(size)
    config = {"name": f"bench-{size}", "method": "flow", "condition": "class", "classes": ["a", "b"], "size": size,
              "channels": 1, "network": network}
    return Generator(build_unet(network, 1, "class", 2), config)


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


def frd_at_steps(generator: Generator, reference: Path, steps: list[int], count: int) -> dict[str, float]:
    from PIL import Image

    from medfm.eval.frd import compute_frd

    labels = [generator.classes[i % len(generator.classes)] for i in range(count)] if generator.classes else [None] * count
    result = {}
    for step_count in steps:
        with tempfile.TemporaryDirectory() as tmp:
            for start in range(0, count, 16):
                chosen = labels[start:start + 16]
                pixels = sample(generator, chosen, step_count, GUIDANCE, list(range(start, start + len(chosen))))
                for offset, plane in enumerate((pixels.numpy() * 255).round().astype("uint8")):
                    picture = plane[0] if len(plane) == 1 else plane.transpose(1, 2, 0)
                    Image.fromarray(picture).save(Path(tmp) / f"{start + offset:04d}.png")
            result[str(step_count)] = compute_frd(reference, tmp, workers=1).frd
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--ddpm-measured-steps", type=int, default=5)
    parser.add_argument("--gen-dir", type=Path, default=None, help="a trained generator: its size and weights, and FRD")
    parser.add_argument("--reference", type=Path, default=None, help="real images for FRD (with --gen-dir)")
    parser.add_argument("--frd-images", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trained = None
    if args.gen_dir is not None:
        from medfm.models.registry import create_generator

        trained = create_generator(args.gen_dir)
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
        report["sizes"][str(size)] = entry
    if trained is not None and args.reference is not None:
        report["frd_vs_reference"] = {"generator": trained.name, "images": args.frd_images,
                                      "flow_steps": frd_at_steps(trained, args.reference, args.steps, args.frd_images),
                                      "ddpm_1000_steps": None,
                                      "ddpm_note": "needs a DDPM-trained generator of the same budget; not trained here"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
