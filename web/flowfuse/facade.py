"""The FlowFuse facade's state: config, the platform that grants tokens, the named files."""

from __future__ import annotations

from edgefiles.ans.files import NamedFiles
from edgefiles.ans.names import Names
from edgefiles.node.core import Core
from starlette.requests import Request

from ..body import read_capped
from .config import FlowFuseConfig
from .errors import FFBodyTooLarge, FFUnauthorized
from .platform import Grant, Platform

NAMESPACE_PREFIX = "flowfuse/"

# helmet as upstream configures it (defaults, frameguard deny, no HSTS), on /v1/* only: the
# host route serves SPAs, which these would break
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


def security_headers() -> dict[str, str]:
    return dict(SECURITY_HEADERS)


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
        self.context = await ContextStore.open(path)

    @staticmethod
    def require_bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise FFUnauthorized()
        return header

    async def authorize(self, request: Request, project: str) -> Grant:
        grant = await self.platform.check(self.require_bearer(request), project)
        if grant is None:
            raise FFUnauthorized()
        return grant

    async def close(self) -> None:
        self.files.close()
        await self.platform.close()
        if self.context is not None:
            await self.context.close()
