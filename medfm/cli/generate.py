"""``medfm generate``, ``medfm translate``, ``medfm edit``: synthetic images from a conditional generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import MkdirOption, given, print_json

generate_app = typer.Typer()

GeneratorArgument = Annotated[str, typer.Argument(metavar="NAME|GEN_DIR", help="A shipped generator or a folder that "
                                                  "`medfm train generator` wrote.")]
StepsOption = Annotated[int | None, typer.Option("--steps", min=1, help="Sampling steps (default: the generator's).")]
GuidanceOption = Annotated[float | None, typer.Option("--guidance", min=0.0, help="Classifier-free guidance scale "
                                                      "(1: none; default: the generator's).")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Noise seed (default 0; image i of a run uses seed + i).")]
ClassOption = Annotated[str | None, typer.Option("--class", help="Class by name or index (class generators).")]


@generate_app.command("generate")
def generate_command(
    generator: GeneratorArgument,
    out: Annotated[Path, typer.Option("-o", "--output", help="Folder to write the images into.")],
    n: Annotated[int, typer.Option("-n", min=1, help="How many images.")],
    condition: Annotated[str | None, typer.Option("--condition", help="Text condition (or a class name).")] = None,
    class_: ClassOption = None,
    guidance: GuidanceOption = None,
    steps: StepsOption = None,
    seed: SeedOption = None,
    suffix: Annotated[str | None, typer.Option("--suffix", help="Format: .png (default), .nii.gz, .nii or .dcm.")] = None,
    mkdir: MkdirOption = False,
) -> None:
    """Sample N synthetic images (without a condition, spread evenly over the classes), marked synthetic
    and stamped with their provenance; prints the files as JSON. An image–mask pair generator writes
    OUT/images/, OUT/masks/ and OUT/manifest.csv (a `medfm train seg` manifest)."""
    from medfm.tasks.generate import generate

    print_json(generate(generator, out, n, condition=condition, class_=class_,
                        **given(guidance=guidance, steps=steps, seed=seed, suffix=suffix)))


@generate_app.command("translate")
def translate_command(
    generator: GeneratorArgument,
    image: Annotated[Path, typer.Argument(help="Image of the generator's size and channels.")],
    source: Annotated[str, typer.Option("--from", help="The image's class or domain now.")],
    target: Annotated[str, typer.Option("--to", help="The class or domain to move it to.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Output image (.png, .nii.gz, .nii, .dcm).")],
    strength: Annotated[float | None, typer.Option("--strength", help="τ in [0, 1]: how far back the flow is run "
                                                   "(0 keeps the image, 1 regenerates it; default 0.5).")] = None,
    guidance: GuidanceOption = None,
    steps: StepsOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Translate an image between classes or domains (MedShift: back under --from to τ, forward under --to)."""
    from medfm.tasks.generate import translate_file

    print_json(translate_file(generator, image, out, source=source, target=target,
                              **given(strength=strength, guidance=guidance, steps=steps)))


@generate_app.command("edit")
def edit_command(
    generator: GeneratorArgument,
    image: Annotated[Path, typer.Argument(help="Image of the generator's size and channels.")],
    mask: Annotated[Path, typer.Option("--mask", help="Mask of the region to regenerate (non-zero), on the image's grid.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Output image (.png, .nii.gz, .nii, .dcm).")],
    condition: Annotated[str | None, typer.Option("--condition", help="Text condition (or a class name) for the region.")] = None,
    class_: ClassOption = None,
    guidance: GuidanceOption = None,
    steps: StepsOption = None,
    seed: SeedOption = None,
    refuse_flagged: Annotated[bool, typer.Option("--refuse-flagged", help="Write nothing (exit 2) when the quality "
                                                 "gate flags the edit as out of distribution.")] = False,
    mkdir: MkdirOption = False,
) -> None:
    """Inpaint the masked region under a condition, with the quality gate's OOD scores (image and region)."""
    from medfm.tasks.generate import edit_file

    print_json(edit_file(generator, image, mask, out, condition=condition, class_=class_, refuse_flagged=refuse_flagged,
                         **given(guidance=guidance, steps=steps, seed=seed)))
