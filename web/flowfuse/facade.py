"""The FlowFuse facade's state: config, the platform that grants tokens, the file table."""

from __future__ import annotations

import asyncio
from collections import Counter

from edgefiles.ans.names import Names
from edgefiles.ans.record import NameRecord
from edgefiles.node.core import Core
from starlette.requests import Request

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
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > BODY_LIMIT:
        raise FFBodyTooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > BODY_LIMIT:
            raise FFBodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


class FlowFuse:
    def __init__(self, config: FlowFuseConfig, core: Core, names: Names):
        self.config = config
        self.core = core
        self.names = names
        self.platform = Platform(config.base_url)
        self.files = FileTable(core, names)
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
        await self.platform.close()
        if self.context is not None:
            await self.context.close()


class FileTable:
    """Per project namespace: which names are files, which are directories, bytes used.

    Kept up to date from the registry (local writes and records from peers alike), so a
    write never walks the project's files: quota and directory checks are lookups.
    """

    def __init__(self, core: Core, names: Names):
        self.core = core
        self.names = names
        self._sizes: dict[str, dict[str, int]] = {}
        self._used: dict[str, int] = {}
        self._dirs: dict[str, Counter[str]] = {}
        self._unsized: dict[str, dict[str, bytes]] = {}  # files from peers whose root is not here yet
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        names.registry.listeners.add(self._changed)

    def exists(self, ns: str, name: str) -> bool:
        return name in self._table(ns)

    def is_dir(self, ns: str, name: str) -> bool:
        self._table(ns)
        return self._dirs[ns][name] > 0

    def used(self, ns: str) -> int:
        self._table(ns)
        self._size_arrived(ns)
        return self._used[ns]

    async def write(self, ns: str, name: str, body: bytes, append: bool) -> None:
        async with self._lock(ns, name):  # appends to one file land one after another
            current = self.names.registry.get(name, ns) if append else None
            if current is not None:
                await self.names.append_bytes(current.cid, body, (ns, name))
            else:
                await self.names.store_bytes(body, (ns, name))

    async def delete(self, ns: str, name: str) -> bool:
        async with self._lock(ns, name):
            return await self.names.delete(name, ns) is not None

    def _lock(self, ns: str, name: str) -> asyncio.Lock:
        key = (ns, name)
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 10_000:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _table(self, ns: str) -> dict[str, int]:
        table = self._sizes.get(ns)
        if table is None:
            table, self._used[ns], self._dirs[ns], self._unsized[ns] = {}, 0, Counter(), {}
            self._sizes[ns] = table
            for record in self.names.registry.live(ns):
                self._set(ns, record.name, record.cid)
        return table

    def _changed(self, record: NameRecord, _previous: NameRecord | None) -> None:
        if record.namespace in self._sizes:  # else built from the registry when first used
            self._set(record.namespace, record.name, record.cid)

    def _set(self, ns: str, name: str, cid: bytes | None) -> None:
        """Point `name` at file `cid` (None: deleted). A file whose root has not arrived from
        peers counts 0 bytes until it has (see `_size_arrived`)."""
        table, dirs, unsized = self._sizes[ns], self._dirs[ns], self._unsized[ns]
        unsized.pop(name, None)
        old = table.pop(name, None)
        if old is not None:
            self._used[ns] -= old
            for prefix in _parents(name):
                dirs[prefix] -= 1
        if cid is not None:
            size = self.core.file_size(cid)
            if size is None:
                unsized[name], size = cid, 0
            table[name] = size
            self._used[ns] += size
            for prefix in _parents(name):
                dirs[prefix] += 1

    def _size_arrived(self, ns: str) -> None:
        for name, cid in list(self._unsized[ns].items()):
            size = self.core.file_size(cid)
            if size is not None:
                del self._unsized[ns][name]
                self._used[ns] += size - self._sizes[ns][name]
                self._sizes[ns][name] = size


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
