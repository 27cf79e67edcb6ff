"""The ``medfm`` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medfm.errors import MedfmError, display_path
from medfm.eval.cli import evaluate_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Offline medical imaging toolkit: ingest, inspect, convert and de-identify images.",
)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="Image file or DICOM series folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    show_phi: Annotated[bool, typer.Option("--show-phi", help="Also print patient identifiers.")] = False,
) -> None:
    """Shape, spacing, orientation, modality and value range of an image."""
    from medfm.io import detect_format, load_all
    from medfm.io.info import describe

    fmt = detect_format(path)
    images = load_all(path)
    summaries = [{"path": display_path(path), "format": fmt.name, **describe(im, show_phi)} for im in images]
    if as_json:
        print_json(summaries[0] if len(summaries) == 1 else summaries)
        return
    for summary in summaries:
        typer.echo(_format_summary(summary))


def _format_summary(summary: dict[str, Any]) -> str:
    fields = {key: summary[key] for key in ("modality", "shape", "dtype", "num_slices", "num_frames", "num_channels", "spacing_mm", "origin_mm", "orientation", "value_range")}
    fields["affine"] = summary["coordinate_system"]
    extra = {**summary["metadata"], **{key: f"{value}  [PHI]" for key, value in summary.get("phi", {}).items()}}
    width = max(map(len, [*fields, *extra]))
    lines = [f"{summary['path']} ({summary['format']})"]
    for key, value in fields.items():
        lines.append(f"  {key:<{width}}  {value}")
    lines.extend(f"    {row}" for row in summary["affine"])
    lines.extend(f"  {key:<{width}}  {value}" for key, value in extra.items())
    return "\n".join(lines)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Image file or DICOM folder.")],
    destination: Annotated[Path, typer.Argument(help="Output file (format from its suffix) or folder.")],
) -> None:
    """Convert between formats; a folder of several DICOM series gives one file per series."""
    from medfm.io.convert import convert as convert_images

    for written in convert_images(source, destination):
        typer.echo(display_path(written))


CatalogOption = Annotated[
    str | None,
    typer.Option("--catalog", help="Catalog URL (sqlite:///FILE, postgresql://USER@HOST/DB) or SQLite file; "
                 "default $MEDFM_CATALOG, else catalog.db in the medfm data folder."),
]
ShowPhiOption = Annotated[bool, typer.Option("--show-phi", help="Also print patient identifiers.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    catalog: CatalogOption = None,
    dataset: Annotated[str | None, typer.Option(help="Name of the collection the new images belong to.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Record every image under PATHS in the catalog; exit code 1 if any file was bad."""
    from medfm.catalog import ingest as ingest_paths

    report = ingest_paths(paths, catalog, dataset=dataset, progress=progress)
    typer.echo(f"{report.catalog}: {report.added} images added, {report.updated} updated; "
               f"files: {report.unchanged} unchanged, {report.skipped} skipped (not images), {len(report.bad)} bad")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    if report.bad:
        raise typer.Exit(1)


catalog_app = typer.Typer(no_args_is_help=True, help="Find the images that were ingested.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(evaluate_app, name="evaluate")


def _print_records(records: list[Any], as_json: bool, show_phi: bool) -> None:
    if as_json:
        print_json([record.to_dict(show_phi) for record in records])
        return
    for record in records:
        shape = "x".join(str(n) for n in record.shape)
        typer.echo(f"{record.id:>6}  {record.modality:<4} {record.body_part or '-':<12} {shape:<16} "
                   f"{record.dataset or '-':<12} {record.description or '-'}  {record.source_path}")
        for key, value in (record.phi.items() if show_phi else ()):
            typer.echo(f"        {key}: {value}  [PHI]")


@catalog_app.command("list")
def catalog_list(
    catalog: CatalogOption = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """Every catalogued image, oldest first: id, modality, body part, shape, dataset, description, path."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog) as store:
        _print_records(store.query(dataset=dataset, limit=limit), as_json, show_phi)


@catalog_app.command("query")
def catalog_query(
    catalog: CatalogOption = None,
    modality: Annotated[str | None, typer.Option(help="Modality, e.g. CT, MR, OT (any case).")] = None,
    body_part: Annotated[str | None, typer.Option(help="Body part examined, e.g. HEAD (any case).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name.")] = None,
    text: Annotated[str | None, typer.Option(help="Text anywhere in the description, path or dataset name.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """Images matching every filter given."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog) as store:
        records = store.query(modality=modality, body_part=body_part, dataset=dataset, text=text, limit=limit)
        _print_records(records, as_json, show_phi)


@catalog_app.command("show")
def catalog_show(
    image_id: Annotated[int, typer.Argument(metavar="ID", help="Image id from `medfm catalog list`.")],
    catalog: CatalogOption = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """One image: its metadata and files."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog) as store:
        record = store.get(image_id).to_dict(show_phi)
    if as_json:
        print_json(record)
        return
    for key, value in record.items():
        if key not in ("files", "metadata", "phi"):
            typer.echo(f"{key:<13} {'-' if value is None else value}")
    for key, value in record["metadata"].items():
        typer.echo(f"  {key:<13} {value}")
    for key, value in record.get("phi", {}).items():
        typer.echo(f"  {key:<13} {value}  [PHI]")
    for file in record["files"]:
        typer.echo(f"  file  {file['sha256'][:16]}  {file['size']:>12}  {file['path']}")


@app.command()
def deid(
    source: Annotated[Path, typer.Argument(help="DICOM file, or folder searched recursively.")],
    destination: Annotated[Path, typer.Argument(help="Output file, or folder mirroring the input's layout.")],
    report: Annotated[Path | None, typer.Option("--report", help="Write a JSON report of every change (no original values).")] = None,
    uid_secret: Annotated[str | None, typer.Option("--uid-secret", envvar="MEDFM_UID_SECRET", help="Secret that makes new UIDs and pseudonyms the same across runs (default: random per run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """De-identify DICOM by the PS3.15 Basic Profile; UIDs are remapped consistently across files."""
    from medfm.io.deid import deidentify

    result = deidentify(source, destination, uid_secret=uid_secret.encode() if uid_secret else None, report=report)
    for item in result.burned_in:
        typer.echo(f"medfm: warning: {item.path}: pixels may show burned-in text and are not cleaned ({item.burned_in})", err=True)
    for problem in result.failed:
        typer.echo(f"medfm: failed: {problem.path}: {problem.reason}", err=True)
    if as_json:
        print_json(result.summary())
    else:
        typer.echo(f"{display_path(destination)}: {len(result.files)} de-identified, {len(result.skipped)} skipped, {len(result.failed)} failed")
    if result.failed:
        raise MedfmError(f"{len(result.failed)} file(s) could not be de-identified")


@app.command()
def demo(catalog: CatalogOption = None) -> None:
    """Build a small example collection (shipped test files, synthetic phantoms) and catalogue it."""
    from medfm.demo import format_table, run

    result = run(catalog)
    report = result.report
    typer.echo(f"Examples in {display_path(result.folder)}")
    if report.added or report.updated:
        typer.echo(f"{report.catalog}: {report.added} images added, {report.updated} updated")
    else:
        typer.echo(f"{report.catalog}: already catalogued, nothing added")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    for line in format_table(result.records):
        typer.echo(line)


def main() -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        app()
    except MedfmError as exc:
        typer.echo(f"medfm: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("medfm: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("MEDFM_DEBUG"):
            raise
        typer.echo(f"medfm: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                   "(set MEDFM_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
