"""The audit log: one JSON line per request saying who asked for what, in ``<data_dir>/logs/audit.log``.

A line holds the time, the client's address, which token it presented (a fingerprint, never
the token), the method, the route with its ids, the names of the query parameters (their
values may be what a user typed: a patient's name), ``"show_phi": true`` when the request
asked for patient data, the status and the time taken. Never a patient value: routes that
carry DICOM UIDs in their path are logged by their template. The file rotates by size.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, UTC
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from medfm.server.security import Scope, presented_token, token_fingerprint

#: Size at which the log rotates, and rotated files kept (audit.log.1 ... .5).
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


class AuditLog:
    """A rotating JSON-lines file; :meth:`close` it when the server stops."""

    def __init__(self, folder: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "audit.log"
        self._handler = RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # a logger of its own, not in logging's registry: two servers in one process (tests) keep two files
        self._logger = logging.Logger("medfm.audit")
        self._logger.addHandler(self._handler)

    def write(self, entry: dict[str, Any]) -> None:
        self._logger.info(json.dumps(entry, separators=(",", ":")))

    def close(self) -> None:
        self._handler.close()


def audit_entry(scope: Scope, status: int, seconds: float) -> dict[str, Any]:
    """What the audit log says of one answered request (``scope`` after routing)."""
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    token = presented_token(scope)
    route = scope.get("route")
    path = scope.get("path", "")
    if route is not None and any("uid" in name for name in scope.get("path_params", {})):
        path = route.path  # a study or series UID identifies a patient's study
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "client": (scope.get("client") or ("unknown",))[0],
        "token": token_fingerprint(token) if token else None,
        "method": scope.get("method"), "path": path,
        "params": sorted({name for name, _value in query if name != "token"}),
        "show_phi": any(name == "show_phi" and value.lower() in ("1", "true", "yes", "on") for name, value in query),
        "status": status, "ms": round(seconds * 1000, 1),
    }


class AuditMiddleware:
    """Writes every HTTP request to ``log`` once it is answered (refused ones too)."""

    def __init__(self, app: Any, log: AuditLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = 500

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            self.log.write(audit_entry(scope, status, time.monotonic() - started))
