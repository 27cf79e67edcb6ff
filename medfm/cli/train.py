"""``medfm train``: reproduce medfm's own models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import given, print_json
from medfm.errors import display_path

train_app = typer.Typer(no_args_is_help=True, help="Train medfm's own models.")

DataOption = Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets "
                                                  "(default $MEDFM_SHARED_DATA, else ../shared/data beside the repository).")]


@train_app.command("clip")
def train_clip_command(
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder: image cache, checkpoint.pt, history.jsonl, weights "
                                                           "(default runs/medfm-clip).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs over the training split (default: the shipped model's schedule).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="clip (default), convirt or siglip.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    cache: Annotated[Path | None, typer.Option("--cache", help="Decoded-image cache (default OUT/cache.pt).")] = None,
) -> None:
    """Train medfm-clip-small (image tower + projections against the frozen MiniLM); prints the weights path."""
    from medfm.train.clip import train_clip

    options = given(data=data, out=out, epochs=epochs, loss=loss, cache=cache)
    typer.echo(display_path(train_clip(resume=resume, **options)))

@train_app.command("interactive")
def train_interactive_command(
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint, weights and the validation manifest.")],
    minutes: Annotated[float, typer.Option("--minutes", help="Wall-time budget, counted across resumes.")] = 45.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    data: DataOption = None,
    cache: Annotated[Path, typer.Option("--cache", help="Decoded-data cache, outside the repository.")] = Path("/tmp/medfm_interactive_cache.npz"),
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per step (default: the shipped model's).")] = None,
) -> None:
    """Train medfm-interactive with simulated clicks, boxes, scribbles and correction loops; prints validation Dice."""
    from medfm.paths import shared_data_dir
    from medfm.train.interactive import train

    print_json(train(out, minutes, resume, cache, data or shared_data_dir(), log=typer.echo, **given(batch_size=batch_size)))




@train_app.command("abstention")
def train_abstention_command(
    model: Annotated[str | None, typer.Option("--model", help="Image-text model to calibrate (default: the shipped one).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Local weights for the model.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets (default ../shared/data).")] = None,
    keep: Annotated[float | None, typer.Option("--keep", min=0.5, max=1.0, help="Fraction of in-set validation cases kept.")] = None,
) -> None:
    """Calibrate the similarity thresholds under which zero-shot answers and search hits abstain; prints
    them (from the val split) with their held-out AUROC and rates (test split) as JSON."""
    from medfm.models import create_encoder
    from medfm.models.registry import DEFAULT_ENCODER
    from medfm.train.abstention import calibrate_abstention

    print_json(calibrate_abstention(create_encoder(model or DEFAULT_ENCODER, checkpoint), **given(data=data, keep=keep)))
