"""``medfm models``: the model hub — what is registered, what it is for, its card."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import JsonOption, given, print_json

models_app = typer.Typer(no_args_is_help=True, help="The model hub: list registered models, show their cards, rank generators.")


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


@models_app.command("rank")
def rank_command(
    reference: Annotated[Path, typer.Option("--reference", help="Folder of the user's real images to rank generators for.")],
    metric: Annotated[str | None, typer.Option("--metric", help="frd (lowest first, the default) or precision-recall "
                                               "(highest harmonic mean first).")] = None,
    kind: Annotated[str, typer.Option("--kind", help="The kind of model to rank (only generator).")] = "generator",
    generator: Annotated[list[Path] | None, typer.Option("--generator", help="Also rank this generator folder (repeatable).")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Samples per generator (default: as many as reference images).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Sampling steps (default: each generator's own).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the first sample.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Encoder for precision-recall (default: the shipped one).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="FRD feature extraction processes (default: one per CPU).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Rank every registered generator (and --generator folders) for the reference images by FRD or precision/recall."""
    from medfm.errors import MedfmError
    from medfm.train.generator_eval import rank_generators

    if kind != "generator":
        raise MedfmError(f"--kind {kind!r}: only generators can be ranked against reference images; use --kind generator")
    encoder = None
    if model is not None and metric == "precision-recall":
        from medfm.models.registry import create_encoder

        encoder = create_encoder(model)
    result = rank_generators(reference, folders=generator or (), encoder=encoder,
                             **given(metric=metric, n=n, steps=steps, seed=seed, workers=workers))
    if as_json:
        print_json(result)
        return
    typer.echo(f"{len(result['ranking'])} generator(s) ranked for {result['reference']} ({result['n_reference']} images) "
               f"by {result['settings']['order']}")
    for row in result["ranking"]:
        score = (f"FRD {'-inf' if row['frd'] is None else format(row['frd'], '.4g')}" if result["metric"] == "frd" else
                 f"precision {row['precision']:.3f} recall {row['recall']:.3f} F1 {row['f1']:.3f}")
        typer.echo(f"{row['rank']:>3}. {row['generator']:28} {score} ({row['source']}, {row['n_samples']} samples)")
