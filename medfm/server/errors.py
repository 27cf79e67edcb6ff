"""Errors the server maps to HTTP statuses other than 400 (any other MedfmError is bad input)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medfm.errors import MedfmError

log = logging.getLogger("medfm.server")


def client_message(text: str, data_dir: Path | None) -> str:
    """What a client is told of an error: its first line, with the server's own data folder (its index, sessions,
    uploads, trained models) named as such: where the server keeps its files is its operator's business."""
    line = text.splitlines()[0] if text else "bad request"
    if data_dir is not None:
        for folder in sorted({str(data_dir), str(data_dir.resolve())}, key=len, reverse=True):
            line = line.replace(folder, "<server data>")
    return line


class NotFound(MedfmError):
    """An unknown id: image, session, job or annotation version (404)."""


class Conflict(MedfmError):
    """The request clashes with work in progress, e.g. a second training while one runs (409)."""


class InternalErrorMiddleware:
    """A bug while answering a request becomes a bare 500 whose log names only the exception's type.

    Its text, and a traceback's, may hold patient data. (FastAPI's own handler for
    ``Exception`` answers too, but then re-raises for the server to print the traceback.)
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            log.error("%s %s failed: %s", scope.get("method"), scope.get("path"), type(exc).__name__)
            if not started:
                body = b'{"detail": "internal server error"}'
                await send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
