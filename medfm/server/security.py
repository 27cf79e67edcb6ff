"""What keeps a server reachable from a network safe: a token, rate limits, upload limits, path checks.

The middlewares are plain ASGI so that they cover everything the app serves (API, the
workbench page and its static files) and can stop an upload while it streams in.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import threading
import time
from collections.abc import Sequence
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException

from medfm.errors import MedfmError

TOKEN_COOKIE = "medfm_token"

Scope = dict[str, Any]


async def send_error(send: Any, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A JSON ``{"detail": ...}`` response sent straight from a middleware."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class TokenMiddleware:
    """Every request needs ``token``: header ``Authorization: Bearer``, the cookie, or ``?token=``
    (which sets the HttpOnly cookie so that the page's later requests carry it)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan events; the app has no websocket routes
            return await self.app(scope, receive, send)
        authorization = _header(scope, b"authorization") or ""
        if authorization.startswith("Bearer ") and self._matches(authorization[7:].strip()):
            return await self.app(scope, receive, send)
        cookie = SimpleCookie(_header(scope, b"cookie") or "")
        if TOKEN_COOKIE in cookie and self._matches(cookie[TOKEN_COOKIE].value):
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if not self._matches(query):
            return await send_error(send, 401, "this server needs its access token: open the URL medfm serve printed, or send Authorization: Bearer TOKEN")
        cookie_header = f"{TOKEN_COOKIE}={query}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie_header)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class LoopbackHostMiddleware:
    """On a loopback server (no token), answer only requests addressed to a loopback host name.

    Any web page the user visits could point a domain of its own at 127.0.0.1 (DNS
    rebinding) and then read this token-less API from the user's browser; the Host header
    still names that domain, so such requests get 403.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not is_loopback_name(host_name(_header(scope, b"host") or "")):
            return await send_error(send, 403, "this server answers only requests addressed to 127.0.0.1, localhost or [::1]")
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """The name part of a Host header: ``127.0.0.1:8000`` → ``127.0.0.1``, ``[::1]:8000`` → ``::1``."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0]


def is_loopback_name(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name.lower() == "localhost"


#: What pages from this server may load and do: only its own scripts, styles, images and API.
#: Swagger UI at /docs starts itself with an inline script, so /docs also allows inline scripts.
CONTENT_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                  "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_POLICY = CONTENT_POLICY.replace("default-src 'self'", "default-src 'self'; script-src 'self' 'unsafe-inline'")


class SecurityHeadersMiddleware:
    """Headers that keep a page from loading anything off this server, being framed or sniffed.

    The workbench must work offline, and the catalog's text (series descriptions come from
    DICOM files anyone can write) must never run as script.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        policy = DOCS_POLICY if scope.get("path", "").startswith("/docs") else CONTENT_POLICY
        headers = [(b"content-security-policy", policy.encode()), (b"x-content-type-options", b"nosniff"),
                   (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimitMiddleware:
    """A token bucket per client address: ``rate`` requests per second, bursts up to ``burst``; else 429."""

    def __init__(self, app: Any, rate: float, burst: int) -> None:
        self.app = app
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _take(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1, now)
            return 0.0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            wait = self._take((scope.get("client") or ("unknown",))[0])
            if wait:
                return await send_error(send, 429, "too many requests: slow down and retry",
                                        [(b"retry-after", str(max(1, round(wait))).encode())])
        await self.app(scope, receive, send)


class UploadLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413: by Content-Length, and while streaming."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"request body is larger than the server's limit of {self.max_bytes // (1024 * 1024)} MiB"
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await send_error(send, 413, too_large)
        received = 0

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # an HTTPException passes through FastAPI's body parsing unchanged
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted_receive, send)


#: Folders of the data directory that hold medfm's own files, never images to ingest.
OWN_FOLDERS = ("annotations", "index", "cache")


def inside_data_dir(relative: str, data_dir: Path) -> Path:
    """``data_dir / relative`` resolved, if it and everything under it stay inside ``data_dir``.

    Refuses absolute paths, ``..`` escapes and symbolic links (at any depth) that lead
    outside, before anything is read; and the data directory itself or medfm's own folders
    in it (saved annotations would be catalogued as images).
    """
    root = data_dir.resolve()
    if not relative or os.path.isabs(relative):
        raise MedfmError(f"path must be relative to the data directory; got {relative!r}")
    try:
        path = (root / relative).resolve()
        exists = path.exists()
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system
        raise MedfmError(f"path {relative[:80]!r} is not a usable file name") from None
    if not path.is_relative_to(root):
        raise MedfmError(f"path {relative!r} leads outside the data directory")
    if path == root or any(path.is_relative_to(root / own) for own in OWN_FOLDERS):
        raise MedfmError(f"path {relative!r} holds medfm's own files; give a folder of images inside the data directory")
    if not exists:
        raise MedfmError(f"path {relative!r} does not exist in the data directory")
    for folder, subfolders, names in os.walk(path):
        for name in subfolders + names:
            if not Path(folder, name).resolve().is_relative_to(root):
                raise MedfmError(f"path {relative!r} holds a link leading outside the data directory")
    return path
