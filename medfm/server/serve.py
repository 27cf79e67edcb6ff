"""Running the server: what ``medfm serve`` calls after parsing its options."""

from __future__ import annotations

import os
import secrets
import socket

from medfm.errors import MedfmError
from medfm.server.settings import ServerSettings

#: Where ``medfm serve`` reads the token when ``--token`` is not given.
TOKEN_ENV = "MEDFM_TOKEN"


def resolve_token(settings: ServerSettings, given: str | None) -> str | None:
    """``given``, else ``$MEDFM_TOKEN``, else a new random token when the host is not loopback."""
    token = given or os.environ.get(TOKEN_ENV) or None
    if token is None and settings.token_required:
        token = secrets.token_urlsafe(24)
    return token


def workbench_url(settings: ServerSettings) -> str:
    """The URL to open, carrying the token when the server needs one."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    query = f"?token={settings.token}" if settings.token_required else ""
    return f"http://{host}:{settings.port}/{query}"


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MedfmError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(settings: ServerSettings, demo: bool = False, announce=print) -> None:
    """Start the server and block until it is stopped; ``announce`` gets the one line with the URL.

    With ``demo`` the example studies are catalogued first (idempotent) and the catalog's
    search index is built as a background job, so the server answers at once.
    """
    import uvicorn

    from medfm.server.app import create_app

    _check_port_free(settings.host, settings.port)
    app = create_app(settings)
    if demo:
        from medfm.demo import run

        state = app.state.medfm
        run(state.catalog)
        state.index_new_images()
    announce(f"medfm: workbench at {workbench_url(settings)}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
