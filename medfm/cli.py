"""The ``medfm`` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medfm.errors import MedfmError, display_path

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
    lines = [f"{summary['path']} ({summary['format']})"]
    for key in ("modality", "shape", "dtype", "num_slices", "num_frames", "num_channels", "spacing_mm", "origin_mm", "orientation", "value_range"):
        lines.append(f"  {key:<13} {summary[key]}")
    lines.append(f"  {'affine':<13} {summary['coordinate_system']}")
    lines.extend(f"    {row}" for row in summary["affine"])
    for key, value in summary["metadata"].items():
        lines.append(f"  {key:<13} {value}")
    for key, value in summary.get("phi", {}).items():
        lines.append(f"  {key:<13} {value}  [PHI]")
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
