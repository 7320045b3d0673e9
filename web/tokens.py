"""The FlowFuse platform's user and personal-access-token routes, on the node's accounts:
`/api/v1/user` and `/api/v1/user/tokens[/<id>]`, with `Authorization: Bearer ffpat_...`."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from edgefiles.ans.accounts import Token, User, iso
from edgefiles.ans.clock import now_ms
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .body import parse_json, read_capped
from .context import AppContext
from .cors import CORS_HEADERS
from .flowfuse.errors import PlatformBadRequest, PlatformNotFound, PlatformUnauthorized

MAX_BODY = 64 << 10


def bearer_user(request: Request) -> User | None:
    """The user of the request's `Authorization: Bearer ffpat_…` token; None for a missing,
    wrong, expired or revoked one."""
    ctx: AppContext = request.app.state.ctx
    token = bearer_token(request)
    return None if token is None else ctx.accounts.authenticate(token)


def bearer_token(request: Request) -> str | None:
    """The token of the request's `Authorization: Bearer …` header, as given (unchecked)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def signed_in(request: Request) -> User:
    """The user of the request's token; 401 (the platform's answer) without a valid one."""
    user = bearer_user(request)
    if user is None:
        raise PlatformUnauthorized()
    return user


async def user(request: Request) -> Response:
    found = signed_in(request)
    return _json({"id": found.id, "email": found.email, "name": found.name, "org_id": found.org_id,
                  "admin": found.admin})


async def tokens(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    owner = signed_in(request)
    if request.method == "GET":
        await ctx.accounts.drop_expired()
        listed = [_token_view(t) for t in ctx.accounts.tokens(owner.id)]
        return _json({"count": len(listed), "tokens": listed})
    name, scope, expires_at = _token_request(await read_json(request))
    token, secret = await ctx.accounts.create_token(owner.id, name, scope, expires_at)
    view = _token_view(token)
    del view["createdAt"]
    return _json({**view, "token": secret}, 201)


async def token(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    owner = signed_in(request)
    if await ctx.accounts.revoke_token(request.path_params["token_id"], owner.id) is None:
        raise PlatformNotFound("no such token")
    return Response(status_code=204, headers=CORS_HEADERS)


def _token_request(body: Any) -> tuple[str, list[str], int | None]:
    if not isinstance(body, dict):
        raise PlatformBadRequest("the body is a JSON object: {name, scope, expiresAt}")
    name, scope, expires = body.get("name"), body.get("scope", []), body.get("expiresAt")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise PlatformBadRequest("name: a text of 1 to 200 characters")
    if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
        raise PlatformBadRequest("scope: a list of texts")
    return name.strip(), scope, None if expires is None else _instant(expires)


def _instant(text: Any) -> int:
    """An ISO 8601 time in the future, as ms since the epoch (UTC when no zone is given)."""
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise PlatformBadRequest("expiresAt: an ISO 8601 time (2027-01-31T12:00:00Z) or null") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if ms <= now_ms():
        raise PlatformBadRequest("expiresAt is in the past")
    return ms


def _token_view(t: Token) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "scope": t.scope, "expiresAt": iso(t.expires_at),
            "createdAt": iso(t.created_at)}


async def read_json(request: Request) -> Any:
    raw = await read_capped(request, MAX_BODY, lambda: PlatformBadRequest("the body is over 64 KiB"))
    return parse_json(raw or b"null", partial(PlatformBadRequest, "the body is not JSON"))


def _json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status, headers=CORS_HEADERS)
