"""What every command shares: the one JSON printer and the common options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medfm.errors import MedfmError


def print_json(value: Any) -> None:
    """``value`` as strict, indented JSON: numpy values as numbers, undefined values (NaN) as ``null``."""
    from medfm.serialize import json_ready

    typer.echo(json.dumps(json_ready(value), indent=2, allow_nan=False))


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None), so that the library function's defaults hold for the rest."""
    return {name: value for name, value in options.items() if value is not None}


def parse_numbers(pairs: list[str], option: str) -> dict[str, float]:
    """``OPTION NAME=NUMBER`` options as a dict."""
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise MedfmError(f"{option} takes NAME=NUMBER (e.g. min_score=0.5); got {pair!r}")
    return values


CatalogOption = Annotated[
    str | None,
    typer.Option("--catalog", help="Catalog URL (sqlite:///FILE, postgresql://USER@HOST/DB) or SQLite file; "
                 "default $MEDFM_CATALOG, else catalog.db in the medfm data folder."),
]
ShowPhiOption = Annotated[bool, typer.Option("--show-phi", help="Also print patient identifiers.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print strict JSON (undefined values are null).")]
ModelOption = Annotated[str | None, typer.Option("--model", help="Model name (see the model registry).")]
CheckpointOption = Annotated[Path | None, typer.Option("--checkpoint", help="Local weights for the model.")]
IndexOption = Annotated[str, typer.Option("--index", help="Index folder, or chroma://HOST:PORT/COLLECTION.")]
ProgressOption = Annotated[bool, typer.Option(help="Show a progress bar on stderr.")]
