"""``medfm pacs``: search a PACS over DICOMweb, pull studies into the catalog, push segmentations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medfm.cli.output import JsonOption, print_json
from medfm.errors import display_path

pacs_app = typer.Typer(no_args_is_help=True, help="Search a PACS (DICOMweb), pull studies into the catalog, push DICOM SEG.")

UrlArgument = Annotated[str, typer.Argument(metavar="URL", help="DICOMweb base URL, e.g. http://pacs:8042/dicom-web.")]
TokenOption = Annotated[str | None, typer.Option("--token", envvar="MEDFM_PACS_TOKEN", help="Bearer token for the PACS.")]
ShowPhiOption = Annotated[bool, typer.Option("--show-phi", help="Also print patient name and id.")]


def _connect(url: str, token: str | None) -> Any:
    from medfm.io.dicomweb import DicomWeb

    return DicomWeb(url, token=token)



def _phi_lines(item: dict[str, Any]) -> None:
    for key in ("patient_name", "patient_id"):
        if key in item:
            typer.echo(f"    {key}: {item[key] or '-'}  [PHI]")


@pacs_app.command("studies")
def studies(
    url: UrlArgument,
    modality: Annotated[str | None, typer.Option("--modality", help="Only studies holding this modality, e.g. CT.")] = None,
    date: Annotated[str | None, typer.Option("--date", help="Study date YYYYMMDD, or a range YYYYMMDD-YYYYMMDD.")] = None,
    accession: Annotated[str | None, typer.Option("--accession", help="Accession number.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many studies.")] = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """Studies on the PACS: UID, date, modalities, series and instance counts, description."""
    found = _connect(url, token).search_studies(modality=modality, study_date=date, accession=accession,
                                                limit=limit, show_phi=show_phi)
    if as_json:
        print_json(found)
        return
    for study in found:
        typer.echo(f"{study['study_uid']}  {study['study_date'] or '-':<8}  {'/'.join(study['modalities']) or '-':<8} "
                   f"{study['num_series'] or 0:>3} series {study['num_instances'] or 0:>5} instances  {study['description'] or '-'}")
        _phi_lines(study)


@pacs_app.command("series")
def series(
    url: UrlArgument,
    study_uid: Annotated[str, typer.Argument(metavar="STUDY_UID", help="Study Instance UID from `medfm pacs studies`.")],
    modality: Annotated[str | None, typer.Option("--modality", help="Only series of this modality, e.g. SEG.")] = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """The series of one study: UID, modality, number, instances, description."""
    found = _connect(url, token).search_series(study_uid, show_phi, modality=modality)
    if as_json:
        print_json(found)
        return
    for item in found:
        typer.echo(f"{item['series_uid']}  {item['modality'] or '-':<4} #{item['series_number'] or '-':<4} "
                   f"{item['num_instances'] or 0:>5} instances  {item['description'] or '-'}")
        _phi_lines(item)


@pacs_app.command("pull")
def pull(
    url: UrlArgument,
    study_uid: Annotated[str, typer.Argument(metavar="STUDY_UID", help="Study Instance UID to retrieve.")],
    series_uid: Annotated[str | None, typer.Option("--series", help="Only this Series Instance UID.")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog", help="Catalog URL or SQLite file (default: medfm's catalog).")] = None,
    folder: Annotated[Path | None, typer.Option("--folder", help="Where the files go (default: pacs/ in the medfm data folder).")] = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retrieve a study (or one series) and catalogue it as dataset "pacs"; exit code 1 if any file was bad."""
    from medfm.catalog.pacs import pull as pull_study

    report = pull_study(_connect(url, token), study_uid, series_uid=series_uid, catalog=catalog, folder=folder)
    if as_json:
        print_json({"catalog": report.catalog, "added": report.added, "updated": report.updated,
                     "unchanged": report.unchanged, "bad": report.bad, "series_uids": report.series_uids,
                     "image_ids": report.image_ids})
    else:
        typer.echo(f"{report.catalog}: {len(report.series_uids)} series pulled; {report.added} images added, "
                   f"{report.updated} updated, {report.unchanged} files unchanged, {len(report.bad)} bad; "
                   f"image ids {', '.join(map(str, report.image_ids)) or '-'}")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    if report.bad:
        raise typer.Exit(1)


@pacs_app.command("push")
def push(
    url: UrlArgument,
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="DICOM SEG files written by medfm.")],
    token: TokenOption = None,
) -> None:
    """Store DICOM SEG files on the PACS (STOW-RS); prints each stored SOP Instance UID."""
    from medfm.catalog.pacs import push_segmentation

    pacs = _connect(url, token)
    for file in files:
        typer.echo(f"{display_path(file)}: stored {push_segmentation(pacs, file)}")
