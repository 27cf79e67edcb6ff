"""``medfm index build`` and ``search``: similar-case search over a vector index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import (
    AdapterOption,
    CheckpointOption,
    IndexOption,
    JsonOption,
    ModelOption,
    RayOption,
    WorkersOption,
    print_json,
)

index_app = typer.Typer(no_args_is_help=True, help="Vector indexes of image embeddings for similar-case search.")
search_app = typer.Typer()


@index_app.command("build")
def index_build(
    index: IndexOption,
    sources: Annotated[list[str] | None, typer.Argument(metavar="CATALOG_OR_PATHS...", help="A catalog (URL or .db file), or image files, folders of them, or DICOM series folders.")] = None,
    checkpoint: CheckpointOption = None,
    adapter: AdapterOption = None,
    catalog: Annotated[str | None, typer.Option("--catalog", help="Index every image of this catalog.")] = None,
    batch_size: Annotated[int, typer.Option(help="Planes per encoder batch.")] = 32,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Also index the images of this CSV manifest, storing its --columns "
                                                                      "(e.g. caption, for `medfm report`) beside each.")] = None,
    columns: Annotated[str, typer.Option("--columns", help="Comma-separated manifest columns to store.")] = "caption",
    path_column: Annotated[str, typer.Option("--path-column", help="The manifest's image-path column.")] = "path",
    dtype: Annotated[str | None, typer.Option("--dtype", help="How a new local index stores vectors: f32, f16 (half the memory) or i8.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Settings of a new local index: default, or large (100k+ images: wider graph, f16; see docs/scaling.md).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    model: Annotated[str | None, typer.Option("--model", help="Model name (see the model registry; default: the shipped image-text encoder).")] = None,
    ray: RayOption = None,
    workers: WorkersOption = 2,
) -> None:
    """Embed images into an index; resumable: images already indexed are skipped."""
    from medfm.models import create_encoder
    from medfm.io.manifest import read_manifest_columns
    from medfm.models.registry import DEFAULT_ENCODER
    from medfm.scale import encoder_runner
    from medfm.tasks.search import build_index

    metadata = read_manifest_columns(manifest, [c.strip() for c in columns.split(",") if c.strip()], path_column) if manifest else None
    encoder = create_encoder(model or DEFAULT_ENCODER, checkpoint, adapter)
    runner = encoder_runner(ray, encoder, model or DEFAULT_ENCODER, checkpoint, workers, adapter)
    try:
        report = build_index(sources or [], encoder, index, catalog=catalog, metadata=metadata, batch_size=batch_size,
                             progress=progress, runner=runner,
                             **{key: value for key, value in (("dtype", dtype), ("profile", profile)) if value})
    finally:
        runner.close()
    typer.echo(f"{report.index}: {report.added} added, {report.skipped} already indexed, {len(report.bad)} bad")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    if report.bad:
        raise typer.Exit(2)


@search_app.command()
def search(
    index: IndexOption,
    image: Annotated[Path | None, typer.Option("--image", help="Query image.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Query text (image-text models).")] = None,
    item_id: Annotated[int | None, typer.Option("--id", help="Query by an indexed item's stored embedding (its id in the index).")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 10,
    where: Annotated[list[str] | None, typer.Option("--where", help="Only items with KEY=VALUE (repeatable).")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Exhaustive search instead of the approximate graph.")] = False,
    abstain: Annotated[bool, typer.Option("--abstain", help="Drop hits below the model's calibrated similarity threshold "
                                                            "(text queries): none when nothing indexed is like the query.")] = False,
    abstain_threshold: Annotated[float | None, typer.Option("--abstain-threshold", help="Drop hits below this similarity.")] = None,
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """The indexed images most similar to an image, a text or an indexed item, best first."""
    from medfm.index import open_index
    from medfm.pairs import parse_pairs
    from medfm.models import create_encoder
    from medfm.models.registry import abstain_below
    from medfm.tasks.search import search as search_index

    filters = parse_pairs(where or [], "where", "modality=CT")
    with open_index(index) as store:
        # an --id query uses the stored vector: no model to load unless one is given (then it is checked)
        needs_model = image is not None or text is not None or model is not None or checkpoint is not None
        encoder = create_encoder(model or store.model["name"], checkpoint) if needs_model else None
        threshold = abstain_below(abstain, abstain_threshold, store.model["name"], store.model["weights_sha256"], "search")
        hits = search_index(store, encoder, image=image, text=text, item_id=item_id, k=k, where=filters, exact=exact,
                            abstain_below=threshold)
    if threshold is not None and not hits:
        best = "none" if hits.best_score is None else f"{hits.best_score:.4f}"
        typer.echo(f"medfm: no indexed case is similar enough (best similarity {best} < {threshold:.4f})", err=True)
    if as_json:
        print_json([hit.to_dict() for hit in hits])
        return
    for rank, hit in enumerate(hits, start=1):
        extra = " ".join(f"{key}={value}" for key, value in hit.metadata.items() if key != "path")
        typer.echo(f"{rank:>3}  {hit.score:.4f}  {hit.path}  {extra}")
