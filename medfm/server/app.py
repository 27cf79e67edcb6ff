"""``create_app(settings)``: the FastAPI application behind ``medfm serve``."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from medfm import __version__
from medfm.errors import MedfmError
from medfm.server.audit import AuditMiddleware
from medfm.server.errors import Conflict, InternalErrorMiddleware, NotFound, client_message
from medfm.server.routes import (
    annotations, ask, catalog, evaluate, generate, jobs, pacs, report, report_versions, search, seg_loop, sessions, structures,
    text_prompts, uploads,
)
from medfm.server.security import (
    CrossSiteMiddleware, LoopbackHostMiddleware, RateLimitMiddleware, SecurityHeadersMiddleware, TokenMiddleware,
    UploadLimitMiddleware,
)
from medfm.server.settings import ServerSettings
from medfm.server.state import ServerState
from medfm.server.uploads import OffsetMismatch


def create_app(settings: ServerSettings) -> FastAPI:
    """The API of docs/server-api.md under /api, offline docs at /docs, the workbench at /."""
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        state.close()

    # FastAPI's own /docs page loads Swagger UI from a CDN; fastapi-offline serves the same
    # Swagger UI from its package, so the docs work without internet
    app = FastAPIOffline(title="medfm", version=__version__, redoc_url=None, lifespan=lifespan)
    app.state.medfm = state
    for module in (catalog, uploads, sessions, annotations, search, jobs, evaluate, pacs, structures, seg_loop, generate,
                   report, report_versions, ask, text_prompts):
        app.include_router(module.router)
    _add_error_handlers(app, settings.data_dir)
    _mount_workbench(app, settings)
    # the last added middleware runs first: response headers on every answer (refusals too), the
    # audit log, the token (or loopback host) check, the cross-site check, the rate limit, the upload limit
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RateLimitMiddleware, rate=settings.rate_per_second, burst=settings.rate_burst,
                       by_token=settings.token_required)
    app.add_middleware(CrossSiteMiddleware)
    if settings.token_required:
        if not settings.token:
            raise MedfmError(f"a server on {settings.host} needs a token (only loopback addresses run without one)")
        app.add_middleware(TokenMiddleware, token=settings.token, secure=settings.tls)
    else:
        app.add_middleware(LoopbackHostMiddleware)
    app.add_middleware(AuditMiddleware, log=state.audit)
    app.add_middleware(SecurityHeadersMiddleware)
    return app


def _add_error_handlers(app: FastAPI, data_dir: Path) -> None:
    def _one_line(text: str) -> str:
        return client_message(text, data_dir)

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=409)

    @app.exception_handler(OffsetMismatch)
    async def wrong_offset(_request: Request, exc: OffsetMismatch) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(exc)), "received": exc.received}, status_code=409)

    @app.exception_handler(MedfmError)
    async def bad_input(_request: Request, exc: MedfmError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # bad input like any other (400): one line naming the field; the offending value is left
        # out (it could be anything the client sent)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")) or "request"
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=400)


def _mount_workbench(app: FastAPI, settings: ServerSettings) -> None:
    if settings.web_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="workbench")
    else:
        page = "<!doctype html><title>medfm</title><p>The workbench is not installed (no web folder); the API is at /api and its docs at /docs.</p>"
        app.add_api_route("/", lambda: HTMLResponse(page), include_in_schema=False)

