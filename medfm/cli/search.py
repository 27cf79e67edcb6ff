"""``medfm index build`` and ``search``: similar-case search over a vector index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import CheckpointOption, IndexOption, JsonOption, ModelOption, parse_where, print_json

index_app = typer.Typer(no_args_is_help=True, help="Vector indexes of image embeddings for similar-case search.")
search_app = typer.Typer()


@index_app.command("build")
def index_build(
    model: Annotated[str, typer.Option("--model", help="Model name (see the model registry).")],
    index: IndexOption,
    sources: Annotated[list[str] | None, typer.Argument(metavar="CATALOG_OR_PATHS...", help="A catalog (URL or .db file), or image files / DICOM series folders.")] = None,
    checkpoint: CheckpointOption = None,
    catalog: Annotated[str | None, typer.Option("--catalog", help="Index every image of this catalog.")] = None,
    batch_size: Annotated[int, typer.Option(help="Planes per encoder batch.")] = 32,
    dtype: Annotated[str | None, typer.Option("--dtype", help="How a new local index stores vectors: f32, f16 (half the memory) or i8.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Embed images into an index; resumable: images already indexed are skipped."""
    from medfm.models import create_encoder
    from medfm.tasks.search import build_index

    report = build_index(sources or [], create_encoder(model, checkpoint), index, catalog=catalog,
                         batch_size=batch_size, progress=progress, **({"dtype": dtype} if dtype else {}))
    typer.echo(f"{report.index}: {report.added} added, {report.skipped} already indexed, {len(report.bad)} bad")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    if report.bad:
        raise typer.Exit(1)


@search_app.command()
def search(
    index: IndexOption,
    image: Annotated[Path | None, typer.Option("--image", help="Query image.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Query text (image-text models).")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 10,
    where: Annotated[list[str] | None, typer.Option("--where", help="Only items with KEY=VALUE (repeatable).")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Exhaustive search instead of the approximate graph.")] = False,
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """The indexed images most similar to an image or a text, best first."""
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.tasks.search import search as search_index

    with open_index(index) as store:
        encoder = create_encoder(model or store.model["name"], checkpoint)
        hits = search_index(store, encoder, image=image, text=text, k=k, where=parse_where(where or []), exact=exact)
    if as_json:
        print_json([hit.to_dict() for hit in hits])
        return
    for rank, hit in enumerate(hits, start=1):
        extra = " ".join(f"{key}={value}" for key, value in hit.metadata.items() if key != "path")
        typer.echo(f"{rank:>3}  {hit.score:.4f}  {hit.path}  {extra}")


