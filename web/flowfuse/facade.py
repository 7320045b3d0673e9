"""The FlowFuse facade's state: config, the platform that grants tokens, the named files."""

from __future__ import annotations

import asyncio
import sqlite3

from edgefiles.ans.files import NamedFiles
from edgefiles.ans.names import Names
from edgefiles.node.core import Core
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..body import read_capped
from ..errors import BadRequest
from ..paths import raw_tail, url_segment
from .config import FlowFuseConfig
from .errors import FFBadRequest, FFBodyTooLarge, FFUnauthorized
from .platform import Grant, Platform

NAMESPACE_PREFIX = "flowfuse/"

# helmet as upstream configures it (defaults, frameguard deny, no HSTS), on /v1/* only: the
# host route serves SPAs, which these would break. Upstream's hook adds them to every reply,
# errors included.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self';base-uri 'self';font-src 'self' https: data:;"
    "form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';"
    "script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';"
    "upgrade-insecure-requests",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Origin-Agent-Cluster": "?1",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-DNS-Prefetch-Control": "off",
    "X-Download-Options": "noopen",
    "X-Frame-Options": "DENY",
    "X-Permitted-Cross-Domain-Policies": "none",
    "X-XSS-Protection": "0",
}


BODY_LIMIT = 10 * 1024 * 1024  # upstream's fastify bodyLimit


def with_security_headers(app: ASGIApp) -> ASGIApp:
    """`app`, with SECURITY_HEADERS on every answer to a path under /v1/."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


def checked_segments(raw: list[str]) -> list[str]:
    """Raw path segments decoded and checked by the one path validator, in FlowFuse's error shape."""
    try:
        return [url_segment(seg) for seg in raw]
    except BadRequest as exc:
        raise FFBadRequest(exc.message) from None


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 once it passes upstream's 10 MiB (declared or sent)."""
    return await read_capped(request, BODY_LIMIT, FFBodyTooLarge)


class FlowFuse:
    def __init__(self, config: FlowFuseConfig, core: Core, names: Names):
        self.config = config
        self.core = core
        self.names = names
        self.platform = Platform(config.base_url)
        self.files = NamedFiles(core, names)
        self.context = None
        self._writing: dict[str, asyncio.Lock] = {}

    def writing(self, namespace: str) -> asyncio.Lock:
        """Held by a file write of `namespace` from its quota check until it is stored."""
        return self._writing.setdefault(namespace, asyncio.Lock())

    async def open(self) -> None:
        """Open the context store: SQLite by default (upstream's `storage` file, relative paths
        inside the data directory; default `flowfuse-context.sqlite`), or PostgreSQL when
        `context.options.type` is `postgres` (host, port, database, username, password)."""
        from .context import ContextStore

        options = self.config.context_options
        kind = options.get("type", "sqlite")
        if kind == "postgres":
            from .context_pg import PostgresContextStore

            try:
                self.context = await PostgresContextStore.open(options)
            except (OSError, ImportError) as exc:
                raise ValueError(f"cannot reach the PostgreSQL context store: {exc}") from None
            except Exception as exc:  # asyncpg's own errors: bad login, missing database
                raise ValueError(f"PostgreSQL context store: {exc}") from None
            return
        if kind != "sqlite":
            raise ValueError(f"context store type {kind!r} is not supported (sqlite or postgres)")
        path = self.core.settings.data_dir / str(options.get("storage", "flowfuse-context.sqlite"))
        try:
            self.context = await ContextStore.open(path)
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"cannot open the SQLite context store {path}: {exc}") from None

    @staticmethod
    def require_bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:] or " " in header[7:]:
            raise FFUnauthorized()  # upstream splits at spaces and wants two parts exactly
        return header

    async def authorize(self, request: Request, project: str) -> Grant:
        grant = await self.platform.check(self.require_bearer(request), project)
        if grant is None:
            raise FFUnauthorized()
        return grant

    async def authorize_path(self, request: Request, prefix: str, project_at: int,
                             judged: int | None = None) -> tuple[list[str], Grant]:
        """(the raw path's segments after `prefix`, percent-decoded and checked, the platform's
        grant for the project id at `project_at` among them). A hostile project id is a 400
        before the platform hears of it. Then a token the platform refuses is a 401, before
        any other segment is judged: upstream authenticates first, so a path is judged for its
        caller only (a token is looked for first: none is a 401 whatever the path). Segments
        are taken from the raw path: an encoded slash ("a%2fb") is one segment that holds a
        slash, not two that a route could match. `judged`: only so many segments are (a route
        no longer than that is unknown anyway)."""
        self.require_bearer(request)
        raw = raw_tail(request, prefix).split("/")
        if raw[project_at + 1 :] == [""]:  # `project/`: nothing after the project, as `project`
            raw.pop()
        raw = raw[:judged]
        project = checked_segments(raw[project_at : project_at + 1])[0]
        grant = await self.authorize(request, project)
        return checked_segments(raw), grant

    async def close(self) -> None:
        self.files.close()
        await self.platform.close()
        if self.context is not None:
            await self.context.close()
