"""The HTTP admin API for products that provision their own users (admin users only): the
`edgefiles admin` commands over HTTP, with the command line's option names as JSON fields and
its `--json` answers as bodies."""

from __future__ import annotations

from typing import Any

from edgefiles.ans.admin import answer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import AppContext
from .cors import CORS_HEADERS
from .flowfuse.errors import PlatformBadRequest, PlatformConflict, PlatformForbidden, PlatformNotFound
from .tokens import read_json, signed_in

# (method, route) -> (kind, action, the path parameter's field)
COMMANDS: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("POST", "/api/v1/admin/orgs"): ("org", "add", None),
    ("POST", "/api/v1/admin/users"): ("user", "add", None),
    ("POST", "/api/v1/admin/users/{id}/tokens"): ("token", "create", "user"),
    ("DELETE", "/api/v1/admin/users/{id}"): ("user", "rm", "id"),
    ("POST", "/api/v1/admin/things"): ("thing", "add", None),
    ("POST", "/api/v1/admin/groups"): ("group", "add", None),
    ("POST", "/api/v1/admin/groups/{id}/members"): ("group", "member", "group_id"),
}


async def admin(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    if not signed_in(request).admin:
        raise PlatformForbidden("the admin API is for admin users")
    kind, action, param = COMMANDS[(request.method, request.scope["route"].path)]
    body: Any = {} if request.method == "DELETE" else await read_json(request)
    if not isinstance(body, dict):
        raise PlatformBadRequest("the body is a JSON object with the command line's option names")
    fields = {k.replace("-", "_"): v for k, v in body.items()}
    command = {**fields, "kind": kind, "action": action}
    if action == "member":
        command["member_action"] = "add"
    if param is not None:
        command[param] = request.path_params["id"]
    reply = await answer(ctx.accounts, command)
    if "error" in reply:
        error = PlatformNotFound if reply.get("missing") else PlatformConflict if reply.get("conflict") else \
            PlatformBadRequest
        raise error(reply["error"])
    if request.method == "DELETE":
        return Response(status_code=204, headers=CORS_HEADERS)
    return JSONResponse(reply["result"], 201, headers=CORS_HEADERS)
