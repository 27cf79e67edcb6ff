"""Running the server: what ``medfm serve`` calls after parsing its options."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from medfm.errors import MedfmError
from medfm.server.security import check_token_strength
from medfm.server.settings import ServerSettings

#: Where ``medfm serve`` reads the token when ``--token`` is not given.
TOKEN_ENV = "MEDFM_TOKEN"


def resolve_token(settings: ServerSettings, given: str | None, token_file: Path | None = None) -> str | None:
    """``given``, else the first word of ``token_file``, else ``$MEDFM_TOKEN``, else a new random
    token when the host is not loopback. A token the user chose must have at least 128 bits, and is
    checked even on loopback (:attr:`ServerSettings.token_required`): a token given and then not
    enforced would protect nothing while the user thinks it does."""
    if given and token_file:
        raise MedfmError("give --token or --token-file, not both")
    if token_file is not None:
        try:
            lines = token_file.read_text().split()
        except OSError as exc:
            raise MedfmError(f"cannot read --token-file {token_file}: {exc.strerror or type(exc).__name__}") from None
        if not lines:
            raise MedfmError(f"--token-file {token_file} is empty")
        given = lines[0]
    token = given or os.environ.get(TOKEN_ENV) or None
    if token is not None:
        return check_token_strength(token)
    return secrets.token_urlsafe(24) if settings.token_required else None


def reachable_host(host: str) -> str:
    """A name clients can use for ``host``: an address of this machine for the wildcard ``0.0.0.0`` / ``::``."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    try:  # the address of the interface a packet would leave by (connecting a UDP socket sends nothing)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        if not address.startswith("0."):
            return address
    except OSError:
        pass
    return socket.gethostname()


def workbench_url(settings: ServerSettings) -> str:
    """The URL to open, carrying the token when the server needs one."""
    host = reachable_host(settings.host)
    host = f"[{host}]" if ":" in host else host
    query = f"?token={settings.token}" if settings.token_required else ""
    scheme = "https" if settings.tls else "http"
    return f"{scheme}://{host}:{settings.port}/{query}"


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MedfmError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _check_tls_files(settings: ServerSettings) -> None:
    """Both TLS files or neither, each a readable certificate chain / private key pair."""
    if (settings.certfile is None) != (settings.keyfile is None):
        raise MedfmError("TLS needs both --certfile and --keyfile")
    if settings.tls:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.certfile, settings.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise MedfmError(f"cannot use --certfile {settings.certfile} with --keyfile {settings.keyfile}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None


def serve(settings: ServerSettings, demo: bool = False, announce=print) -> None:
    """Start the server and block until it is stopped; ``announce`` gets the one line with the URL.

    With ``demo`` the example studies are catalogued first (idempotent) and the catalog's
    search index is built as a background job, so the server answers at once.
    """
    import uvicorn

    from medfm.server.app import create_app

    _check_tls_files(settings)
    _check_port_free(settings.host, settings.port)
    app = create_app(settings)
    if demo:
        from medfm.demo import run

        state = app.state.medfm
        run(state.catalog)
        state.index_new_images()
    announce(f"medfm: workbench at {workbench_url(settings)}")
    tls = {"ssl_certfile": str(settings.certfile), "ssl_keyfile": str(settings.keyfile)} if settings.tls else {}
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False, **tls)
