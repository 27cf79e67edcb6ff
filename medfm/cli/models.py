"""``medfm models``: the model hub — what is registered, what it is for, its card."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from medfm.cli.output import JsonOption, print_json

models_app = typer.Typer(no_args_is_help=True, help="The model hub: list registered models, show their cards.")


@models_app.command("list")
def list_command(
    kind: Annotated[str | None, typer.Option("--kind", help="encoder, segmenter, auto-segmenter, ...")] = None,
    modality: Annotated[str | None, typer.Option("--modality", help="Only models meant for this modality (e.g. CT, US).")] = None,
    organ: Annotated[str | None, typer.Option("--organ", help="Only models meant for this organ (e.g. colon).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every registered model with its kind, modalities and organs."""
    from medfm.models.hub import list_models

    entries = list_models(kind, modality, organ)
    if as_json:
        print_json([asdict(entry) for entry in entries])
        return
    for entry in entries:
        weights = "shipped weights" if entry.ships_weights else "checkpoint or training needed"
        typer.echo(f"{entry.name:28} {entry.kind:15} {', '.join(entry.modalities)} | {', '.join(entry.organs)} ({weights})")


@models_app.command("show")
def show_command(name: Annotated[str, typer.Argument(help="A model name from `medfm models list`.")]) -> None:
    """The model's card: data, licence, the commands that reproduce it, its numbers."""
    from medfm.models.hub import model_card

    typer.echo(model_card(name))
