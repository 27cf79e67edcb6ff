"""What every command shares: the one JSON printer and the common options."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from medfm.errors import MedfmError


def print_json(value: Any) -> None:
    """``value`` as strict, indented JSON: numpy values as numbers, undefined values (NaN) as ``null``."""
    typer.echo(json_text(value))


def write_json(value: Any, path: Path) -> None:
    """``value`` as :func:`print_json` prints it, into ``path`` (replaced whole, or left as it was on failure)."""
    from medfm.io.formats import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json_text(value) + "\n")


def json_text(value: Any) -> str:
    """The one JSON layout of every command's output."""
    from medfm.serialize import json_ready

    return json.dumps(json_ready(value), indent=2, allow_nan=False)


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None), so that the library function's defaults hold for the rest."""
    return {name: value for name, value in options.items() if value is not None}


def parse_numbers(pairs: list[str], option: str) -> dict[str, float]:
    """``OPTION NAME=NUMBER`` options as a dict."""
    from medfm.pairs import parse_pairs

    values = {}
    for name, text in parse_pairs(pairs, option, "min_score=0.5").items():
        try:
            values[name] = float(text)
        except ValueError:
            raise MedfmError(f"{option} takes NAME=NUMBER (e.g. min_score=0.5); got {name}={text!r}") from None
    return values


CatalogOption = Annotated[
    str | None,
    typer.Option("--catalog", help="Catalog URL (sqlite:///FILE, postgresql://USER@HOST/DB) or SQLite file; "
                 "default $MEDFM_CATALOG, else catalog.db in the medfm data folder."),
]
ShowPhiOption = Annotated[bool, typer.Option("--show-phi", help="Also print patient identifiers.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print strict JSON (undefined values are null).")]
RayOption = Annotated[str | None, typer.Option(
    "--ray", metavar="ADDRESS|local", help="Run on a Ray cluster (HOST:PORT, ray://HOST:PORT) or on a local one started for this "
    "command (local); needs pip install 'medfm[ray]'. Input paths must be readable by every worker.")]
WorkersOption = Annotated[int, typer.Option("--workers", min=1, help="Ray workers with --ray (each loads the model once).")]
TRAIN_WORKERS_HELP = ("Processes sharing each step's batch (torch DDP, gloo): on this machine, or Ray Train workers with "
                      "--ray; the batch must divide by it. Across machines: --ray or torchrun.")
TrainWorkersOption = Annotated[int, typer.Option("--workers", help=TRAIN_WORKERS_HELP)]
ModelOption = Annotated[str | None, typer.Option("--model", help="Model name (see the model registry).")]
CheckpointOption = Annotated[Path | None, typer.Option("--checkpoint", help="Local weights for the model.")]
IndexOption = Annotated[str, typer.Option("--index", help="Index folder, chroma://HOST:PORT/COLLECTION (Chroma server), or a Milvus collection: http://HOST:PORT/COLLECTION (server) or PATH.db/COLLECTION (milvus-lite).")]
ResultsOption = Annotated[Path | None, typer.Option("--results", help="Also write the results as JSON to this file.")]
ProgressOption = Annotated[bool, typer.Option(help="Show a progress bar on stderr.")]


def _create_folders_for_this_command(ctx: typer.Context, value: bool) -> bool:
    """``--mkdir``: whether this command's outputs may create missing folders (without it they may not),
    until the command ends. Commands only declare the option: this callback applies it."""
    from medfm.io.formats import CREATE_FOLDERS

    token = CREATE_FOLDERS.set(value)
    ctx.call_on_close(lambda: CREATE_FOLDERS.reset(token))
    return value


MkdirOption = Annotated[bool, typer.Option("--mkdir", callback=_create_folders_for_this_command,
                                           help="Create the output's missing folders (else a missing folder is refused).")]


SummaryOption = Annotated[Path | None, typer.Option("--summary", help="Write the batch's JSON summary (results and failures) here.")]


def check_summary_folder(summary_file: Path | None) -> None:
    """Refuse a ``--summary`` into a missing folder (unless ``--mkdir``) before the batch runs, not after it."""
    check_output_folders(summary_file)


def check_output_folders(*outputs: Path | None) -> None:
    """Refuse outputs (files or folders to write; None: not asked for) whose folder is missing, unless ``--mkdir``,
    before the command trains or scores anything rather than when it writes at the end."""
    from medfm.io.formats import check_output_folder

    if int(os.environ.get("RANK", "0") or 0) > 0:  # under torchrun, rank 0 alone writes, on its own machine's folders
        return
    for output in outputs:
        if output is not None:
            check_output_folder(output.parent)


def finish_batch(report: Any, summary_file: Path | None, as_json: bool, describe: Callable[[dict[str, Any]], str],
                 print_results: bool = True) -> None:
    """Print a batch's results (``describe`` gives one result's text; ``as_json``: the JSON summary instead;
    neither unless ``print_results``), one line per failed input on stderr, write the ``--summary`` file;
    exit 2 if any input failed."""
    if summary_file is not None:
        report.write_summary(summary_file)
    if as_json:
        print_json(report.summary())
    elif print_results:
        for result in report.results:
            typer.echo(describe(result))
    if report.inputs == 1 and report.failures:  # one input: its error alone, as without a batch
        raise MedfmError(f"{report.failures[0]['input']}: {report.failures[0]['reason']}")
    for failed in report.failures:
        typer.echo(f"medfm: failed: {failed['input']}: {failed['reason']}", err=True)
    if report.failures:
        raise MedfmError(f"{len(report.failures)} of {report.inputs} inputs failed")
AdapterOption = Annotated[Path | None, typer.Option("--adapter", help="Adapter file from `medfm finetune`, loaded over "
                                                    "the model it was made for (refused over any other).")]
