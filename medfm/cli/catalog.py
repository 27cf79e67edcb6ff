"""``medfm ingest``, ``catalog`` and ``demo``: record images and find them again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from medfm.cli.output import (
    CatalogOption,
    JsonOption,
    MkdirOption,
    RayOption,
    ShowPhiOption,
    WorkersOption,
    print_json,
)
from medfm.errors import display_path
from medfm.pairs import parse_pairs

ModalityOption = Annotated[str | None, typer.Option(help="Modality, e.g. CT, MR, OT (any case).")]
BodyPartOption = Annotated[str | None, typer.Option(help="Body part examined, e.g. HEAD (any case).")]
DatasetOption = Annotated[str | None, typer.Option(help="Dataset name.")]
TextOption = Annotated[str | None, typer.Option(help="Text anywhere in the description, path or dataset name.")]
WhereOption = Annotated[list[str] | None, typer.Option(
    "--where", help="KEY=VALUE: a tag (manifest column) with this value, any case, e.g. diagnosis=melanoma; repeatable.")]
HasMaskOption = Annotated[bool, typer.Option("--has-mask", help="Only images with a mask.")]
#: How many images an ingest summary names before it only counts the rest (a line, not a listing).
MAX_LISTED = 5

ingest_app = typer.Typer()
catalog_app = typer.Typer(no_args_is_help=True, help="Find the images that were ingested.")


@ingest_app.command()
def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders (walked recursively).")] = None,
    catalog: CatalogOption = None,
    dataset: Annotated[str | None, typer.Option(help="Name of the collection the new images belong to.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV manifest (image, mask and metadata columns) whose "
                                                   "images to record with their labels.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    ray: RayOption = None,
    workers: WorkersOption = 2,
) -> None:
    """Record every image under PATHS in the catalog; exit code 1 if any file was bad.

    Masks are attached to their image, not recorded as images, when a manifest.csv (or
    --manifest) names them or the folders are images/ + masks/ or imagesTr/ + labelsTr/;
    the manifest's other columns become tags (catalog query --where KEY=VALUE).
    """
    from medfm.catalog import ingest as ingest_paths
    from medfm.scale import open_runner

    runner = open_runner(ray, workers) if ray else None
    try:
        report = ingest_paths(paths or [], catalog, dataset=dataset, manifest=manifest, progress=progress, runner=runner)
    finally:
        if runner is not None:
            runner.close()
    typer.echo(f"{report.catalog}: {report.added} images added, {report.updated} updated; "
               f"files: {report.unchanged} unchanged, {report.skipped} skipped (not images), "
               f"{report.duplicates} duplicates (same DICOM instance as another file), {len(report.bad)} bad")
    if report.duplicates_of:
        copied = [f"image {image_id} (dataset {dataset or '-'})" for image_id, dataset in sorted(report.duplicates_of.items())]
        more = f" and {len(copied) - MAX_LISTED} more" if len(copied) > MAX_LISTED else ""
        typer.echo(f"duplicates of images catalogued before, which stay in their dataset: {', '.join(copied[:MAX_LISTED])}{more}")
    if report.labelled or report.unmatched_labels or report.removed:
        typer.echo(f"labels: {report.labelled} images labelled, {report.label_files} label files attached, "
                   f"{report.unmatched_labels} label files matching no image, "
                   f"{report.removed} images removed (they were label files)")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    if report.bad:
        raise typer.Exit(1)


def _files_label(record: Any) -> str:
    """The record's own files: the file itself, or the series' folder with its file names."""
    paths = [Path(f.path) for f in record.files]
    if len(paths) == 1:
        return display_path(paths[0])
    folder = Path(os.path.commonpath([str(p.parent) for p in paths]))
    names = [display_path(p.relative_to(folder)) for p in paths]
    shown = ", ".join(names) if len(names) <= 3 else f"{names[0]}, {names[1]} ... {names[-1]}"
    return f"{display_path(folder)}{os.sep} {len(paths)} files: {shown}"


def _print_records(records: list[Any], as_json: bool, show_phi: bool) -> None:
    if as_json:
        print_json([record.to_dict(show_phi) for record in records])
        return
    for record in records:
        shape = "x".join(str(n) for n in record.shape)
        mask = f"  mask: {display_path(record.mask.path)}" if record.mask else ""
        typer.echo(f"{record.id:>6}  {record.modality:<4} {record.body_part or '-':<12} {shape:<16} "
                   f"{record.dataset or '-':<12} {record.description or '-'}  {_files_label(record)}{mask}")
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
    """Every catalogued image, oldest first: id, modality, body part, shape, dataset, description, its files."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog, existing=True) as store:
        _print_records(store.query(dataset=dataset, limit=limit, with_files=True), as_json, show_phi)


@catalog_app.command("query")
def catalog_query(
    catalog: CatalogOption = None,
    modality: ModalityOption = None,
    body_part: BodyPartOption = None,
    dataset: DatasetOption = None,
    text: TextOption = None,
    where: WhereOption = None,
    has_mask: HasMaskOption = False,
    limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """Images matching every filter given."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog, existing=True) as store:
        records = store.query(modality=modality, body_part=body_part, dataset=dataset, text=text, limit=limit,
                              with_files=True, where=parse_pairs(where or [], "--where", "diagnosis=melanoma"), has_mask=has_mask)
        _print_records(records, as_json, show_phi)


@catalog_app.command("export")
def catalog_export(
    output: Annotated[Path, typer.Option("-o", "--output", help="Manifest to write (CSV).")],
    catalog: CatalogOption = None,
    modality: ModalityOption = None,
    body_part: BodyPartOption = None,
    dataset: DatasetOption = None,
    text: TextOption = None,
    where: WhereOption = None,
    has_mask: HasMaskOption = False,
    limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    absolute: Annotated[bool, typer.Option(help="Absolute paths instead of paths relative to the manifest's folder.")] = False,
    include_synthetic: Annotated[bool, typer.Option("--include-synthetic", help="Also export images marked synthetic "
                                                    "(left out by default: a manifest feeds training and evaluation).")] = False,
    mkdir: MkdirOption = False,
) -> None:
    """Write the images matching every filter as a manifest: image, mask, dataset, other label files, tags.

    fit-probe reads it with --path-column image --label-column COLUMN; evaluate
    interactive, evaluate robustness and train seg read image and mask (use --has-mask). Images
    marked synthetic (made by a generator) are left out unless --include-synthetic.
    """
    from medfm.catalog import open_catalog
    from medfm.catalog.export import export_manifest

    with open_catalog(catalog, existing=True) as store:
        records = store.query(modality=modality, body_part=body_part, dataset=dataset, text=text, limit=limit,
                              with_files=True, where=parse_pairs(where or [], "--where", "diagnosis=melanoma"), has_mask=has_mask,
                              synthetic=None if include_synthetic else False)
    rows = export_manifest(records, output, absolute=absolute)
    typer.echo(f"{display_path(output)}: {rows} images")


@catalog_app.command("show")
def catalog_show(
    image_id: Annotated[int, typer.Argument(metavar="ID", help="Image id from `medfm catalog list`.")],
    catalog: CatalogOption = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """One image: its metadata and files."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog, existing=True) as store:
        record = store.get(image_id).to_dict(show_phi)
    if as_json:
        print_json(record)
        return
    for key, value in record.items():
        if key not in ("files", "metadata", "phi", "label_files", "tags"):
            typer.echo(f"{key:<13} {'-' if value is None else value}")
    for key, value in record["metadata"].items():
        typer.echo(f"  {key:<13} {value}")
    for key, value in record.get("phi", {}).items():
        typer.echo(f"  {key:<13} {value}  [PHI]")
    for key, value in record["tags"].items():
        typer.echo(f"  tag   {key}: {value}")
    for file in record["files"]:
        typer.echo(f"  file  {file['sha256'][:16]}  {file['size']:>12}  {file['path']}")
    for label in record["label_files"]:
        typer.echo(f"  label {label['sha256'][:16]}  {label['size']:>12}  {label['path']}  ({label['name']})")


@catalog_app.command("rename")
def catalog_rename(
    image_id: Annotated[int, typer.Argument(metavar="ID", help="Image id from `medfm catalog list`.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The name lists show the image by (its description).")],
    catalog: CatalogOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give an image the name lists show it by, as the workbench's Rename does."""
    from medfm.catalog import open_catalog
    from medfm.catalog.browse import display_name

    with open_catalog(catalog, existing=True) as store:
        record = store.rename(image_id, name)
    if as_json:
        print_json({"id": record.id, "name": display_name(record)})
    else:
        typer.echo(f"image {record.id} is now named {display_name(record)!r}")


@catalog_app.command("delete")
def catalog_delete(
    image_id: Annotated[int, typer.Argument(metavar="ID", help="Image id from `medfm catalog list`.")],
    catalog: CatalogOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Remove an image from the catalog, as the workbench's Delete does; its files on disk stay.

    With the default catalog (the one `medfm serve` uses), the image also leaves the medfm data
    folder's search indexes, and its saved annotations are moved to deleted/ in that folder, so
    that no later image shows them.
    """
    from contextlib import ExitStack

    from medfm.catalog import open_catalog
    from medfm.catalog.browse import display_name
    from medfm.index import open_index
    from medfm.paths import catalog_index_dirs, data_dir
    from medfm.tasks.search import delete_images

    with open_catalog(catalog, existing=True) as store, ExitStack() as opened:
        record = store.get(image_id)  # a clear error for an unknown id
        if not yes:
            typer.confirm(f"Delete image {image_id} ({display_name(record)}) from {store.url}?", abort=True)
        indexes = [opened.enter_context(open_index(folder)) for folder in catalog_index_dirs(data_dir())] if catalog is None else []
        delete_images(store, [image_id], indexes)
    set_aside = None
    if catalog is None:
        from medfm.server.annotations import AnnotationStore

        set_aside = AnnotationStore(data_dir() / "annotations").set_aside(image_id, data_dir() / "deleted")
    typer.echo(f"image {image_id} deleted from the catalog" + (f"; its annotations moved to {display_path(set_aside)}" if set_aside else ""))


@ingest_app.command()
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


