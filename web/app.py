"""Builds the Starlette app: Files API, host route, node endpoints, CORS, errors, metrics."""

from __future__ import annotations

import asyncio
import logging

from edgefiles.node.blockstore import StorageFull
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import admin_api, car, files_api, filestore, fsck_api, gateway, openapi, tokens
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import ApiError, BadRequest, InsufficientStorage, MethodNotAllowed, NotFound, ShuttingDown
from .filestore import FilestoreError, FsNotFound
from .flowfuse.errors import FFRouteNotFound, PlatformNotFound
from .host_route import host_name, serve_host
from .metrics import Metrics, MetricsMiddleware
from .storage import api as storage_api

log = logging.getLogger("edgefiles.web")

FILE_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]


async def health(request: Request) -> Response:
    return JSONResponse({"statusCode": 200, "status": "ok"}, headers=CORS_HEADERS)


async def uploader_page(request: Request) -> Response:
    from edgefiles.uploader import render

    ctx: AppContext = request.app.state.ctx
    return HTMLResponse(render(ctx.host_suffix, ctx.api_port or request.url.port),
                        headers={"Cache-Control": "no-cache"})


async def to_uploader(request: Request) -> Response:
    return RedirectResponse("/uploader/", status_code=301)


async def metrics(request: Request) -> Response:
    body = request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return in_facade_shape(request.url.path, exc)


def in_facade_shape(path: str, exc: ApiError) -> Response:
    """`exc` in the error body of the facade `path` belongs to, which is the shape its clients
    read (a Filestore client reads `error`, a Storage API client the wrapper), whichever layer
    raised it: the router's 405, the reader's 416, an unexpected 500."""
    tag = openapi.tag_of(path)
    if tag == "filestore" and not isinstance(exc, FilestoreError):
        shaped = FilestoreError(exc.message, {**exc.extra_headers(), **exc.headers})
        shaped.status = exc.status
        return shaped.response()
    if tag == "storage":
        return storage_api.failure(exc)
    return exc.response()


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:  # Starlette says which methods the route takes; OPTIONS is ours
        allow = (exc.headers or {}).get("Allow")
        refused = MethodNotAllowed(headers={"Allow": f"{allow}, OPTIONS"} if allow else None)
        return in_facade_shape(request.url.path, refused)
    if exc.status_code == 404:
        return route_not_found(request.url.path)
    return JSONResponse({"code": "ERR_HTTP", "message": str(exc.detail)}, exc.status_code, CORS_HEADERS)


def route_not_found(path: str) -> Response:
    """No route matched (a path no route's pattern takes, e.g. one holding a newline): the 404
    in the error body of the facade the path belongs to, which is the shape its clients read."""
    text = f"no route for {path}"
    tag = openapi.tag_of(path)
    if tag == "flowfuse":
        return FFRouteNotFound(text).response()
    if tag == "filestore":
        return FsNotFound(text).response()
    if tag in ("tokens", "admin"):
        return PlatformNotFound(text).response()
    if tag == "storage":
        return storage_api.failure(NotFound(text))
    return NotFound(text).response()


async def client_gone(request: Request, exc: Exception) -> Response:
    log.info("client went away during %s %s; nothing was stored", request.method, request.url.path)
    return Response(status_code=400)


async def storage_full(request: Request, exc: Exception) -> Response:
    """The store's quota or its disk ran out under a write that no route turned into a 507 of
    its own (a facade's small upload, read whole): nothing of it was kept."""
    return in_facade_shape(request.url.path, InsufficientStorage(f"not stored: {exc}"))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return in_facade_shape(request.url.path, ApiError(f"internal error: {type(exc).__name__}"))


class EdgeMiddleware:
    """CORS preflight for every path, the host route before any API routing, and the end of a
    request cut off by the node stopping: uvicorn cancels one still running when it stops
    waiting (an upload whose client stalled), whose own cleanup has run by then (an upload
    aborted, nothing stored); it ends here with a 503 and one log line, not uvicorn's
    traceback. A cancellation at any other time is re-raised."""

    def __init__(self, app: ASGIApp, ctx: AppContext):
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._route(scope, receive, noting_send)
        except asyncio.CancelledError:
            if not self.ctx.stopping:
                raise
            log.info("%s %s cut off: the node is stopping", scope["method"], scope["path"])
            if not started:
                await in_facade_shape(scope["path"], ShuttingDown())(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await Response(status_code=204, headers=CORS_HEADERS)(scope, receive, send)
            return
        hosts = [value for key, value in scope["headers"] if key == b"host"]
        if len(hosts) > 1:  # RFC 9112 3.2: a proxy that reads the first could route it elsewhere
            refused = in_facade_shape(scope["path"], BadRequest("a request has one Host header"))
            await refused(scope, receive, send)
            return
        name = host_name(hosts[0].decode("latin-1") if hosts else "", self.ctx.host_suffix)
        if name is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await serve_host(request, name, self.ctx)
        except ApiError as exc:
            response = exc.response()
        await response(scope, receive, send)


def create_app(ctx: AppContext) -> ASGIApp:
    routes = [
        Route("/api/v2/auth", files_api.auth, methods=["POST"]),
        Route("/api/v2/files", files_api.files, methods=FILE_METHODS),
        Route("/api/v2/files/{tail:anypath}", files_api.files, methods=FILE_METHODS),
        Route("/api/v2/names", files_api.names, methods=["GET"]),
        Route("/api/v2/car", car.receive, methods=["POST"]),
        Route("/ipfs/{tail:anypath}", gateway.ipfs, methods=["GET", "HEAD"]),
        *[Route(path, admin_api.admin, methods=[method]) for method, path in admin_api.COMMANDS],
        *[Route(path, endpoint, methods=methods) for path, endpoint, methods in filestore.ROUTES],
        *storage_api.ROUTES,
        Route("/api/v1/user", tokens.user, methods=["GET"]),
        Route("/api/v1/user/tokens", tokens.tokens, methods=["GET", "POST"]),
        Route("/api/v1/user/tokens/{token_id}", tokens.token, methods=["DELETE"]),
        Route("/api/v2/node/id", files_api.node_id, methods=["GET"]),
        Route("/api/v2/node/info", files_api.node_info, methods=["GET"]),
        Route("/api/v2/node/fsck", fsck_api.start, methods=["POST"]),
        Route("/api/v2/node/fsck/{id}", fsck_api.status, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/", to_uploader, methods=["GET"]),
        Route("/uploader", to_uploader, methods=["GET"]),
        Route("/uploader/", uploader_page, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route("/api/", openapi.docs_page, methods=["GET"]),
        Route("/docs", openapi.docs_page, methods=["GET"]),
    ]
    if ctx.flowfuse is not None:
        from . import flowfuse

        routes += flowfuse.routes()
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: api_error, HTTPException: http_error, ClientDisconnect: client_gone,
            StorageFull: storage_full, Exception: unexpected_error,
        },
    )
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    app.state.metrics = Metrics(ctx.core, ctx.names.registry, ctx.swarm.counters)
    inner: ASGIApp = app
    if ctx.flowfuse is not None:
        from .flowfuse.facade import with_security_headers

        inner = with_security_headers(app)
    return MetricsMiddleware(EdgeMiddleware(inner, ctx), app.state.metrics)
