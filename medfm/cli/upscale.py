"""``medfm upscale``, ``medfm train upscale`` and ``medfm evaluate upscale``: super-resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.evaluate import evaluate_app
from medfm.cli.output import MkdirOption, ResultsOption, print_json, write_json
from medfm.cli.train import train_app

upscale_app = typer.Typer()

ScaleOption = Annotated[int, typer.Option("--scale", help="Upscaling factor: 2 or 4.")]
UpscaleModelOption = Annotated[str | None, typer.Option("--model", help="Registered upscaler name or a model folder "
                                                                         "from `medfm train upscale` (default medfm-upscale).")]


@upscale_app.command("upscale")
def upscale_command(
    source: Annotated[Path, typer.Argument(help="Image, volume, video or DICOM series folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (its suffix picks the format), or an existing "
                                                              "folder for <name>_x<scale> in the input's format.")],
    scale: ScaleOption = 2,
    model: UpscaleModelOption = None,
    through_plane: Annotated[bool, typer.Option("--through-plane", help="Upscale a volume along its slice axis only.")] = False,
    mkdir: MkdirOption = False,
) -> None:
    """Super-resolve an image, each slice of a volume (or across slices), or a video with its neighbouring frames."""
    from medfm.tasks.upscale import upscale_file

    print_json(upscale_file(source, output, scale, model, through_plane))


@train_app.command("upscale")
def train_upscale_command(
    data: Annotated[list[Path], typer.Argument(help="Folders (with or without manifest.csv) or CSV manifests of images and videos.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write (must not exist).")],
    scale: ScaleOption = 2,
    budget_min: Annotated[float, typer.Option("--budget-min", help="Wall-time budget in minutes, counted across resumes.")] = 10.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted training of this model folder.")] = False,
    crop: Annotated[int | None, typer.Option("--crop", min=8, help="Low-resolution training crop side in pixels (default 64).")] = None,
    max_sources: Annotated[int | None, typer.Option("--max-sources", min=1, help="Training sources per dataset (default 200).")] = None,
    float32: Annotated[bool, typer.Option("--float32", help="Keep float32 weights (default: float16, measured as written).")] = False,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps, even within the budget.")] = None,
    mkdir: MkdirOption = False,
) -> None:
    """Train the compact super-resolution network; prints the summary with held-out PSNR/SSIM against bicubic and Lanczos."""
    from medfm.cli.output import given
    from medfm.train.upscale import train_upscaler

    recipe = given(crop=crop, max_sources_per_dataset=max_sources)
    if not resume:
        recipe["scale"] = scale
    print_json(train_upscaler(data, out, budget_min, resume, half=not float32, max_steps=max_steps,
                              log=lambda line: typer.echo(line, err=True), **recipe))


@evaluate_app.command("upscale")
def evaluate_upscale_command(
    data: Annotated[list[Path], typer.Argument(help="The folders or manifests the model was trained on: their held-out groups are measured.")],
    model: UpscaleModelOption = None,
    scale: ScaleOption = 2,
    results: ResultsOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Held-out PSNR and SSIM of a super-resolution model against bicubic and Lanczos."""
    from medfm.models.registry import DEFAULT_UPSCALER, create_upscaler
    from medfm.train.upscale_data import find_sources
    from medfm.train.upscale_eval import evaluate_upscaler

    held_out = [source for source in find_sources(data) if source.held_out]
    summary = evaluate_upscaler(create_upscaler(model or DEFAULT_UPSCALER), held_out, scale,
                                log=lambda line: typer.echo(line, err=True))
    if results is not None:
        write_json(summary, results)
    print_json(summary)
