"""`http://<name>.actyx.localhost:4454/<path>`: every path is content of the name."""

from __future__ import annotations

import time

from edgefiles.node import cid as cids
from starlette.requests import Request
from starlette.responses import Response

from .auth import COOKIE
from .content import Target
from .context import AppContext
from .errors import ApiError, MethodNotAllowed, NotFound
from .files_api import refuse_facade_files, resolve_app_name, split_tail
from .paths import raw_path

HOST_ROUTE_ALLOW = "GET, HEAD, OPTIONS"  # read-only


def host_name(host_header: str | None, suffix: str) -> str | None:
    """The name part of a Host header ending in the suffix (port ignored, case folded)."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        return None
    host = host.rsplit(":", 1)[0] if ":" in host else host
    host = host.rstrip(".")
    tail = "." + suffix
    # ".actyx.localhost" names the empty name (a 404), never the API
    return host[: -len(tail)] if host.endswith(tail) else None


async def serve_host(request: Request, name: str, ctx: AppContext) -> Response:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed("the host route is read-only", headers={"Allow": HOST_ROUTE_ALLOW})
    segments, trailing = split_tail(raw_path(request).removeprefix("/"))
    trailing = trailing or not segments
    cookie = None
    record = ctx.names.registry.get(name)
    if record is not None:
        root = await resolve_app_name(ctx, name)
        by_name = True
    elif cids.is_cid(name):
        claims = ctx.tokens.require(request, allow_cookie=True)
        query = request.query_params.get("access_token")
        if query is not None and "authorization" not in request.headers:  # the query's token was checked
            cookie = query, max(0, int(claims["exp"] - time.time()))
        root, by_name = cids.parse(name), False
        await refuse_facade_files(ctx, root)
    else:
        raise NotFound(f"name {name!r} is not set")
    target = Target(root, segments, trailing, by_name, host_route=True)
    try:
        response = await ctx.content.serve(request, target)
    except ApiError as exc:  # a first visit to a missing path still leaves the page its token
        response = exc.response()
    if cookie is not None:  # it lasts as long as its token: an expired one would only get 401s
        token, max_age = cookie
        response.set_cookie(COOKIE, token, max_age=max_age, httponly=True, samesite="lax", path="/")
    return response
