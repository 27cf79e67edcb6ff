"""``medfm serve``: the REST API and the browser workbench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import AdapterOption, CatalogOption
from medfm.errors import MedfmError

serve_app = typer.Typer()


@serve_app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback requires a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    catalog: CatalogOption = None,
    token: Annotated[str | None, typer.Option(help="Access token (default $MEDFM_TOKEN; generated when the host is not loopback).")] = None,
    pacs: Annotated[str | None, typer.Option("--pacs", help="DICOMweb base URL of a PACS to search, pull from and push to.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Catalogue the example studies first and index them in the background.")] = False,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", help="Largest request body accepted, in MiB.")] = 512,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="Read the access token from this file (not visible in ps).")] = None,
    certfile: Annotated[Path | None, typer.Option("--certfile", help="TLS certificate chain (PEM): serve HTTPS; use it off loopback.")] = None,
    keyfile: Annotated[Path | None, typer.Option("--keyfile", help="TLS private key (PEM) of --certfile.")] = None,
    image_cache_mb: Annotated[int, typer.Option("--image-cache-mb", help="Memory for images kept loaded, in MiB.")] = 1024,
    session_mb: Annotated[int, typer.Option("--session-mb", help="Memory for open segmentation sessions, in MiB.")] = 1024,
    adapter: AdapterOption = None,
) -> None:
    """Serve the REST API (docs/server-api.md) and the browser workbench; prints the URL to open."""
    from medfm.paths import default_catalog_url
    from medfm.server.serve import resolve_token
    from medfm.server.serve import serve as run_server
    from medfm.server.settings import ServerSettings, attach_adapter

    if not 1 <= port <= 65535:
        raise MedfmError(f"--port must be from 1 to 65535; got {port}")
    for option, value in (("--max-upload-mb", max_upload_mb), ("--image-cache-mb", image_cache_mb), ("--session-mb", session_mb)):
        if value < 1:
            raise MedfmError(f"{option} must be at least 1; got {value}")
    settings = ServerSettings(host=host, port=port, catalog_url=catalog or default_catalog_url(), pacs_url=pacs,
                              max_upload_bytes=max_upload_mb * 2**20, image_cache_bytes=image_cache_mb * 2**20,
                              session_bytes=session_mb * 2**20, certfile=certfile, keyfile=keyfile)
    if adapter is not None:
        attach_adapter(settings, adapter)
    settings.token = resolve_token(settings, token, token_file)
    run_server(settings, demo, announce=typer.echo)


