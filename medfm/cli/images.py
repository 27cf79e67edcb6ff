"""``medfm info``, ``convert`` and ``deid``: look at, convert and de-identify image files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

images_app = typer.Typer()

from medfm.cli.output import MkdirOption, ProgressOption, SummaryOption, check_summary_folder, finish_batch, print_json
from medfm.errors import MedfmError, display_path


@images_app.command()
def info(
    paths: Annotated[list[Path], typer.Argument(help="Image files or DICOM series folders; a folder of images gives each of its images.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: one image's summary, or the summary of a batch.")] = False,
    show_phi: Annotated[bool, typer.Option("--show-phi", help="Also print patient identifiers.")] = False,
    summary_file: SummaryOption = None,
    progress: ProgressOption = True,
    mkdir: MkdirOption = False,
) -> None:
    """Shape, spacing, orientation, modality and value range of images; a bad one is reported and the rest go on."""
    from medfm.io.info import describe_path
    from medfm.tasks.batch import describe_files, expand_paths

    check_summary_folder(summary_file)
    inputs = expand_paths(paths)
    if len(paths) == 1 and len(inputs) == 1 and summary_file is None:
        summaries = describe_path(inputs[0].path, show_phi)
        if as_json:
            print_json(summaries[0] if len(summaries) == 1 else summaries)
            return
        for summary in summaries:
            typer.echo(_format_summary(summary))
        return
    report = describe_files(inputs, show_phi, progress=progress)
    finish_batch(report, summary_file, as_json,
                 lambda result: "\n".join(_format_summary(summary) for summary in result["images"]))


def _format_summary(summary: dict[str, Any]) -> str:
    fields = {key: summary[key] for key in ("modality", "shape", "dtype", "num_slices", "num_frames", "num_channels", "spacing_mm", "origin_mm", "orientation", "value_range")}
    fields["affine"] = summary["coordinate_system"]
    if "not_decoded" in summary:
        fields["not_decoded"] = summary["not_decoded"]
    extra = {**summary["metadata"], **{key: f"{value}  [PHI]" for key, value in summary.get("phi", {}).items()}}
    width = max(map(len, [*fields, *extra]))
    lines = [f"{summary['path']} ({summary['format']})"]
    for key, value in fields.items():
        lines.append(f"  {key:<{width}}  {value}")
    lines.extend(f"    {row}" for row in summary["affine"])
    lines.extend(f"  {key:<{width}}  {value}" for key, value in extra.items())
    return "\n".join(lines)


@images_app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Image file or DICOM folder.")],
    destination: Annotated[Path, typer.Argument(help="Output file (format from its suffix) or folder.")],
    window: Annotated[str | None, typer.Option("--window", help="Window the values to 8-bit grey first: CENTER,WIDTH "
                                                                "(e.g. 40,400) or brain, lung, bone, soft-tissue (a CT to PNG).")] = None,
    mkdir: MkdirOption = False,
) -> None:
    """Convert between formats; a folder of several DICOM series gives one file per series."""
    from medfm.io.convert import convert as convert_images
    from medfm.io.convert import parse_window

    for written in convert_images(source, destination, window=parse_window(window) if window else None):
        typer.echo(display_path(written))


@images_app.command()
def deid(
    source: Annotated[Path, typer.Argument(help="DICOM file, or folder searched recursively.")],
    destination: Annotated[Path, typer.Argument(help="Output file, or folder mirroring the input's layout.")],
    report: Annotated[Path | None, typer.Option("--report", help="Write a JSON report of every change (no original values).")] = None,
    uid_secret: Annotated[str | None, typer.Option("--uid-secret", envvar="MEDFM_UID_SECRET", help="Secret that makes new UIDs and pseudonyms the same across runs (default: random per run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    mkdir: MkdirOption = False,
) -> None:
    """De-identify DICOM by the PS3.15 Basic Profile; UIDs are remapped consistently across files."""
    from medfm.io.deid import deidentify

    result = deidentify(source, destination, uid_secret=uid_secret.encode() if uid_secret else None, report=report)
    for item in result.burned_in:
        typer.echo(f"medfm: warning: {item.path}: pixels may show burned-in text and are not cleaned ({item.burned_in})", err=True)
    for problem in result.failed:
        typer.echo(f"medfm: failed: {problem.source}: {problem.reason}", err=True)
    if as_json:
        print_json(result.summary())
    else:
        typer.echo(f"{display_path(destination)}: {len(result.files)} de-identified, {len(result.skipped)} skipped, {len(result.failed)} failed")
    if result.failed:
        raise MedfmError(f"{len(result.failed)} file(s) could not be de-identified")


