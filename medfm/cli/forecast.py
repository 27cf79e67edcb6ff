"""``medfm forecast`` and ``medfm train forecast``: the next images of an ordered sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import MkdirOption, print_json
from medfm.cli.train import train_app

forecast_app = typer.Typer()


@forecast_app.command("forecast")
def forecast_command(
    sequence: Annotated[list[Path], typer.Argument(help="A video or multi-frame image, or two or more 2D images in time order (or any order, with --order date).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Multi-frame file to write: .mp4, .gif, .nii.gz or .npz.")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="How many images to forecast, one sequence step apart.")] = 1,
    method: Annotated[str, typer.Option("--method", help="ode (the forecaster), last (repeat the last image) or "
                                                         "linear (continue the last change).")] = "ode",
    model: Annotated[str | None, typer.Option("--model", help="Forecaster model folder from `medfm train forecast` "
                                                              "(needed by --method ode).")] = None,
    order: Annotated[str, typer.Option("--order", help="given (the order on the command line) or date (several DICOM "
                                                       "images sorted by acquisition date; gaps reported in days).")] = "given",
    mkdir: MkdirOption = False,
) -> None:
    """Forecast the next images of a sequence (ImageFlowNet-style latent neural ODE, or a baseline)."""
    from medfm.tasks.forecast import forecast_files

    print_json(forecast_files(sequence, output, steps, method, model, order))


@train_app.command("forecast")
def train_forecast_command(
    data: Annotated[list[Path], typer.Argument(help="Folders (with or without manifest.csv) or CSV manifests; their videos are used.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write (must not exist).")],
    budget_min: Annotated[float, typer.Option("--budget-min", help="Wall-time budget in minutes, counted across resumes.")] = 10.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted training of this model folder.")] = False,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps, even within the budget.")] = None,
    mkdir: MkdirOption = False,
) -> None:
    """Train the latent neural-ODE forecaster; prints held-out PSNR/SSIM against repeating the last image and linear extrapolation."""
    from medfm.train.forecast import train_forecaster

    print_json(train_forecaster(data, out, budget_min, resume, max_steps=max_steps, log=lambda line: typer.echo(line, err=True)))
