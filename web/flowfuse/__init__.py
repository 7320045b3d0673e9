"""The FlowFuse file server facade (`/v1/...`), built on names and CIDs of the node's core."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import context, files
from .errors import FFUnauthorized
from .facade import FlowFuse

__all__ = ["FlowFuse", "routes"]


async def unknown(request: Request) -> Response:
    """Upstream checks the token before routing: an unknown /v1 route is a 401. Under
    /v1/context/, a project or scope that made the route unknown (empty, or holding an
    encoded slash: "a%2fb") is judged as on the known routes: a 400."""
    if request.url.path.startswith("/v1/context/"):
        await request.app.state.ctx.flowfuse.authorize_path(request, "/v1/context/", 0, judged=2)
    raise FFUnauthorized()


def routes() -> list[Route]:
    methods = ["GET", "POST", "DELETE"]
    c = "/v1/context/{project}"
    return [
        Route(f"{c}/clean", context.clean, methods=["POST"]),
        Route(f"{c}/cache", context.cache_page, methods=["GET"]),
        Route(f"{c}/cache/{{scope}}", context.cache_replace, methods=["POST"]),
        Route(f"{c}/{{scope}}/keys", context.keys, methods=["GET"]),
        Route(f"{c}/{{scope}}", context.set_values, methods=["POST"]),
        Route(f"{c}/{{scope}}", context.get_values, methods=["GET"]),
        Route(f"{c}/{{scope}}", context.delete_scope, methods=["DELETE"]),
        Route("/v1/files/{tail:anypath}", files.files, methods=methods),
        Route("/v1/quota/{tail:anypath}", files.quota, methods=["GET"]),
        Route("/v1/{tail:anypath}", unknown, methods=["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
    ]
