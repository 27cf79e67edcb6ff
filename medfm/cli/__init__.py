"""The ``medfm`` command line: each command parses, calls one library function, prints.

One module per command group; :mod:`medfm.cli.output` holds the one JSON printer and the
shared options. Library packages never import this package.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from medfm.cli.catalog import catalog_app, ingest_app
from medfm.cli.classify import classify_app
from medfm.cli.evaluate import evaluate_app
from medfm.cli.forecast import forecast_app
from medfm.cli.generate import generate_app
from medfm.cli.images import images_app
from medfm.cli.labels import labels_app
from medfm.cli.models import models_app
from medfm.cli.language import language_app, language_evaluate_app
from medfm.cli.pacs import pacs_app
from medfm.cli.representation import representation_app
from medfm.cli.search import index_app, search_app
from medfm.cli.segment import segment_app
from medfm.cli.serve import serve_app
from medfm.cli.train import finetune_app, train_app
from medfm.cli.upscale import upscale_app
from medfm.errors import USER_ENVIRONMENT_ERRNOS, MedfmError, os_error_text
from medfm.threads import set_threads

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Offline medical imaging toolkit: ingest, inspect, convert and de-identify images.",
)
for commands in (images_app, ingest_app, search_app, classify_app, segment_app, labels_app, serve_app, language_app, upscale_app,
                 forecast_app, finetune_app, generate_app, representation_app):
    app.registered_commands.extend(commands.registered_commands)
app.add_typer(catalog_app, name="catalog")
app.add_typer(index_app, name="index")
evaluate_app.registered_commands.extend(language_evaluate_app.registered_commands)
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(pacs_app, name="pacs")
app.add_typer(train_app, name="train")
app.add_typer(models_app, name="models")
# Plain help and usage errors: Rich's formatting would import Rich on every `--help`,
# which alone costs more than the 0.3 s a command line may take to start.
for typer_app in (app, *(group.typer_instance for group in app.registered_groups)):
    typer_app.rich_markup_mode = None


@app.callback()
def global_options(
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="CPU threads for the models and numpy (default: $MEDFM_THREADS, else half the "
        "CPUs, at most 8; see medfm.threads).")] = None,
) -> None:
    set_threads(threads)


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
        # a last resort for a read-only or full disk, a missing folder...: the user's to fix, so not an internal error
        if isinstance(exc, OSError) and exc.errno in USER_ENVIRONMENT_ERRNOS:
            typer.echo(f"medfm: error: {os_error_text(exc)}", err=True)
            sys.exit(2)
        if os.environ.get("MEDFM_DEBUG"):
            raise
        typer.echo(f"medfm: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                   "(set MEDFM_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
