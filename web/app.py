"""Builds the Starlette app: Files API, host route, node endpoints, CORS, errors, metrics."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable

from edgefiles.node.blockstore import StorageFull, as_storage_full
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from . import admin_api, car, files_api, filestore, fsck_api, gateway, openapi, tokens
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import ApiError, BadRequest, InsufficientStorage, MethodNotAllowed, NotFound, ShuttingDown
from .filestore import FilestoreError, FsNotFound
from .flowfuse.errors import FFRouteNotFound, PlatformNotFound
from .host_route import HOST_ROUTE_ALLOW, host_name, serve_host
from .metrics import Metrics, MetricsMiddleware
from .storage import api as storage_api

log = logging.getLogger("edgefiles.web")

FILE_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]  # the collection: uploads, and 400s that name it
ITEM_METHODS = ["GET", "HEAD", "PUT", "DELETE"]  # a CID or a name
METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# RFC 9112 3.2 / RFC 3986 3.2.2: an IP literal or a registered name (possibly empty), then an optional port
HOST_VALUE = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?")


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
        methods = allow_header(allow.split(",")) if allow else None
        method = "GET" if request.method == "HEAD" else request.method  # a HEAD gets GET's answer's head
        message = f"{method} is not allowed on {request.url.path}"
        message += f"; it takes {methods}" if methods else ""
        refused = MethodNotAllowed(message, headers={"Allow": methods} if methods else None)
        return in_facade_shape(request.url.path, refused)
    if exc.status_code == 404:
        return route_not_found(request.url.path)
    return JSONResponse({"code": "ERR_HTTP", "message": str(exc.detail)}, exc.status_code, CORS_HEADERS)


def allow_header(methods: Iterable[str]) -> str:
    """An `Allow` value: `methods` and OPTIONS, in one order whatever set they come from."""
    taken = {method.strip() for method in methods} - {"OPTIONS", ""}
    rank = {method: i for i, method in enumerate(METHOD_ORDER)}
    order = sorted(taken, key=lambda method: (rank.get(method, len(rank)), method))
    return ", ".join([*order, "OPTIONS"])


def route_methods(router: Router, scope: Scope) -> str | None:
    """The `Allow` of the path of `scope`: the methods of every route whose pattern takes it
    (None: none does, or only a mount, whose methods its routes know)."""
    methods: set[str] = set()
    for route in router.routes:
        if route.matches(scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return allow_header(methods) if methods else None


def head_refusal(scope: Scope, hosts: list[bytes]) -> str | None:
    """Why the Host headers `hosts` of `scope` make it a 400 (RFC 9112 3.2): none in an HTTP/1.1
    request, two of them (a proxy that reads the first could route it elsewhere), or a value
    that is no host[:port]; and two Authorization headers (a proxy's credentials, and a
    client's that the node would have taken instead). None when they are fine."""
    if len(hosts) > 1:
        return "a request has one Host header"
    if sum(1 for key, _ in scope["headers"] if key == b"authorization") > 1:
        return "a request has at most one Authorization header"
    if not hosts:
        return "an HTTP/1.1 request needs a Host header" if scope.get("http_version") == "1.1" else None
    if not HOST_VALUE.fullmatch(hosts[0]):
        return f"Host {hosts[0].decode('latin-1')[:100]!r} is not host[:port]"
    return None


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


async def full_disk_or_unexpected(request: Request, exc: Exception) -> Response:
    """A write that found the disk full outside an upload's own checks (a name's, in SQLite)
    is a 507 that says so, and the connection goes on; any other such error, `unexpected_error`."""
    full = as_storage_full(exc)
    if not isinstance(full, StorageFull):
        return await unexpected_error(request, exc)
    log.warning("%s %s refused: the disk is full (%s)", request.method, request.url.path, full)
    return await storage_full(request, full)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return in_facade_shape(request.url.path, ApiError(f"internal error: {type(exc).__name__}"))


def unchanged(app: ASGIApp) -> ASGIApp:
    return app


class EdgeMiddleware:
    """CORS preflight for every path, the host route before any API routing, and the end of a
    request cut off by the node stopping: uvicorn cancels one still running when it stops
    waiting (an upload whose client stalled), whose own cleanup has run by then (an upload
    aborted, nothing stored); it ends here with a 503 and one log line, not uvicorn's
    traceback. A cancellation at any other time is re-raised."""

    def __init__(self, app: ASGIApp, ctx: AppContext, router: Router,
                 api_answers: Callable[[ASGIApp], ASGIApp] = unchanged):
        self.api_answers = api_answers  # what every answer but the host route's passes through
        self.app = api_answers(app)
        self.ctx = ctx
        self.router = router

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
                await self.api_answers(in_facade_shape(scope["path"], ShuttingDown()))(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        hosts = [value for key, value in scope["headers"] if key == b"host"]
        refusal = head_refusal(scope, hosts)
        if refusal is not None:  # no host is known: the API's answer
            await self.api_answers(in_facade_shape(scope["path"], BadRequest(refusal)))(scope, receive, send)
            return
        name = host_name(hosts[0].decode("latin-1") if hosts else "", self.ctx.host_suffix)
        if scope["method"] == "OPTIONS":  # a preflight, or a client asking what a path takes
            allow = HOST_ROUTE_ALLOW if name is not None else route_methods(self.router, scope)
            headers = {**CORS_HEADERS, **({"Allow": allow} if allow else {})}
            answer: ASGIApp = Response(status_code=204, headers=headers)
            await (answer if name is not None else self.api_answers(answer))(scope, receive, send)
            return
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
        Route("/api/v2/files/", files_api.files, methods=FILE_METHODS, include_in_schema=False),
        Route("/api/v2/files/{tail:anypath}", files_api.files, methods=ITEM_METHODS),
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
            StorageFull: storage_full, sqlite3.OperationalError: full_disk_or_unexpected,
            OSError: full_disk_or_unexpected, Exception: unexpected_error,
        },
    )
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    app.state.metrics = Metrics(ctx.core, ctx.names.registry, ctx.swarm.counters)
    api_answers: Callable[[ASGIApp], ASGIApp] = unchanged
    if ctx.flowfuse is not None:
        from .flowfuse.facade import with_security_headers

        api_answers = with_security_headers
    return MetricsMiddleware(EdgeMiddleware(app, ctx, app.router, api_answers), app.state.metrics)
