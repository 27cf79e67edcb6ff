"""What keeps a server safe on loopback and on a network: a token, cross-site checks, rate limits,
upload limits, response headers, path checks.

The middlewares are plain ASGI so that they cover everything the app serves (API, the
workbench page and its static files) and can stop an upload while it streams in.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException

from medfm.errors import MedfmError

TOKEN_COOKIE = "medfm_token"
#: The header every state-changing request must carry. A page on another site cannot send a
#: custom header without a CORS preflight, which this server never grants, so a request that
#: has it comes from the workbench (or a script), not from a cross-site form or no-cors fetch.
CLIENT_HEADER = "X-Medfm-Client"
#: Methods that change nothing: the cross-site check lets them through.
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: Fewest bits of randomness a user-chosen token may have.
MIN_TOKEN_BITS = 128

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


def request_cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies, read leniently: another application's cookie on the same host
    (``prefs={"theme":"dark"}``, which :class:`http.cookies.SimpleCookie` gives up on) must not hide ours."""
    found: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        if key != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            name, equals, content = part.strip().partition("=")
            if equals and name and name not in found:
                found[name] = content.strip().strip('"')
    return found


def presented_token(scope: Scope) -> str | None:
    """The token a request carries: ``Authorization: Bearer``, else the cookie, else ``?token=``."""
    authorization = _header(scope, b"authorization") or ""
    if authorization.startswith("Bearer "):
        return authorization[7:].strip()
    cookie = request_cookies(scope).get(TOKEN_COOKIE)
    if cookie:
        return cookie
    return parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]


def token_fingerprint(token: str) -> str:
    """A short name for a token in logs and rate-limit buckets; the token cannot be recovered from it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def token_bits(token: str) -> float:
    """An upper estimate of a token's randomness: its length times log2 of the alphabet its characters come from."""
    alphabet = (26 * any(c.islower() for c in token) + 26 * any(c.isupper() for c in token)
                + 10 * any(c.isdigit() for c in token) + 32 * any(not c.isalnum() for c in token))
    return len(token) * math.log2(alphabet) if alphabet > 1 else 0.0


def check_token_strength(token: str) -> str:
    """``token`` if it has at least :data:`MIN_TOKEN_BITS` bits, else a MedfmError saying how to make one."""
    if token_bits(token) < MIN_TOKEN_BITS or len(set(token)) < 8:
        raise MedfmError(f"the token is too weak (under {MIN_TOKEN_BITS} bits): use at least 22 random letters and digits, "
                         "e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    return token


class TokenMiddleware:
    """Every request needs ``token``: header ``Authorization: Bearer``, the cookie, or ``?token=``
    (which sets the HttpOnly cookie so that the page's later requests carry it; ``Secure`` under TLS)."""

    def __init__(self, app: Any, token: str, secure: bool = False) -> None:
        self.app = app
        self.token = token.encode()
        self.cookie_attributes = "; HttpOnly; SameSite=Strict; Path=/" + ("; Secure" if secure else "")

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan events; the app has no websocket routes
            return await self.app(scope, receive, send)
        authorization = _header(scope, b"authorization") or ""
        if authorization.startswith("Bearer ") and self._matches(authorization[7:].strip()):
            return await self.app(scope, receive, send)
        if self._matches(request_cookies(scope).get(TOKEN_COOKIE)):
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if not self._matches(query):
            return await send_error(send, 401, "this server needs its access token: open the URL medfm serve printed, or send Authorization: Bearer TOKEN")
        cookie_header = f"{TOKEN_COOKIE}={query}{self.cookie_attributes}".encode()

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie_header)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class CrossSiteMiddleware:
    """Refuse state-changing requests (POST, PUT, PATCH, DELETE) that do not come from the workbench itself.

    A page on any other site can make the user's browser send a form or a ``no-cors`` fetch
    to this server (on loopback no token stops it; with a token the cookie rides along).
    Such a request is refused when the browser says it is cross-site (``Sec-Fetch-Site``),
    when its ``Origin`` is not this server, and whenever it lacks :data:`CLIENT_HEADER`,
    which only a same-origin script (or a non-browser client) can add.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = cross_site_reason(scope)
            if reason:
                return await send_error(send, 403, reason)
        await self.app(scope, receive, send)


def cross_site_reason(scope: Scope) -> str | None:
    """Why a state-changing request is refused as cross-site, or ``None`` if it may go ahead."""
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"cross-site request refused: changes are accepted only from this server's own page (Sec-Fetch-Site: {fetch_site[:20]})"
    origin = _header(scope, b"origin")
    if origin is not None:
        own_scheme = "https" if scope.get("scheme") == "https" else "http"
        parts = urlsplit(origin)
        if parts.scheme != own_scheme or parts.netloc.lower() != (_header(scope, b"host") or "").lower():
            return "cross-site request refused: changes are accepted only from this server's own page (Origin differs)"
    if not _header(scope, CLIENT_HEADER.lower().encode()):
        return f"request refused: state-changing requests must carry the header {CLIENT_HEADER} (the workbench sends it)"
    return None


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
                   (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                   (b"cross-origin-resource-policy", b"same-origin")]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimitMiddleware:
    """A token bucket per client: ``rate`` requests per second, bursts up to ``burst``; else 429.

    With ``by_token`` (a server that checks tokens) a client is the access token it presents
    (everyone behind one proxy or NAT address is not one client), else its address. Without
    it tokens are not checked, and counting by them would let a client escape its limit by
    sending a new one each time.
    """

    def __init__(self, app: Any, rate: float, burst: int, by_token: bool = False) -> None:
        self.app = app
        self.rate, self.burst, self.by_token = rate, burst, by_token
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
            wait = self._take(client_key(scope, self.by_token))
            if wait:
                return await send_error(send, 429, "too many requests: slow down and retry",
                                        [(b"retry-after", str(max(1, round(wait))).encode())])
        await self.app(scope, receive, send)


def client_key(scope: Scope, by_token: bool) -> str:
    """Who a request counts against: with ``by_token``, ``token:<fingerprint>`` when it carries
    a token, else ``address:<ip>``."""
    token = presented_token(scope) if by_token else None
    if token:
        return f"token:{token_fingerprint(token)}"
    return f"address:{(scope.get('client') or ('unknown',))[0]}"


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
OWN_FOLDERS = ("annotations", "index", "cache", "logs")


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
