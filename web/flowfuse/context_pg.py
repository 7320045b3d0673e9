"""The context store in PostgreSQL (`context.options.type: postgres`), for nodes that keep
Node-RED context in a database server as upstream's sequelize driver can.

No cache here: the server may be shared, so every request reads what it needs; each change
is one transaction. Sets of one project are serialised by a lock in this process (as with
SQLite); several nodes sharing one server are not serialised against each other.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .context import json_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS edgefiles_context (
    seq BIGSERIAL PRIMARY KEY, project TEXT NOT NULL, scope TEXT NOT NULL, value TEXT NOT NULL,
    UNIQUE (project, scope)
)
"""


class PostgresContextStore:
    def __init__(self, pool: Any):
        self._pool = pool
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    async def open(cls, options: dict) -> PostgresContextStore:
        import asyncpg

        pool = await asyncpg.create_pool(
            host=options.get("host", "127.0.0.1"), port=int(options.get("port", 5432)),
            database=options.get("database"), user=options.get("username"),
            password=options.get("password"), min_size=1, max_size=8,
        )
        async with pool.acquire() as conn:
            await conn.execute(SCHEMA)
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    def lock(self, project: str) -> asyncio.Lock:
        return self._locks.setdefault(project, asyncio.Lock())

    async def scope(self, project: str, scope: str) -> dict | None:
        sql = "SELECT value FROM edgefiles_context WHERE project = $1 AND scope = $2"
        value = await self._pool.fetchval(sql, project, scope)
        return json.loads(value) if value is not None else None

    async def scope_names(self, project: str) -> list[str]:
        sql = "SELECT scope FROM edgefiles_context WHERE project = $1 ORDER BY seq"
        return [row["scope"] for row in await self._pool.fetch(sql, project)]

    async def used(self, project: str) -> int:
        # JavaScript's length: a character past U+FFFF counts twice (context.js_length)
        astral = r"char_length(regexp_replace(value, '[^\U00010000-\U0010FFFF]+', '', 'g'))"
        sql = f"SELECT COALESCE(SUM(char_length(value) + {astral}), 0) FROM edgefiles_context"
        sql += " WHERE project = $1"
        return int(await self._pool.fetchval(sql, project))

    async def save(self, project: str, changed: dict[str, dict | None]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            for scope, value in changed.items():
                if value:
                    await conn.execute(
                        "INSERT INTO edgefiles_context (project, scope, value) VALUES ($1, $2, $3) "
                        "ON CONFLICT (project, scope) DO UPDATE SET value = excluded.value",
                        project, scope, json_text(value),
                    )
                else:
                    sql = "DELETE FROM edgefiles_context WHERE project = $1 AND scope = $2"
                    await conn.execute(sql, project, scope)

    async def page(self, project: str, limit: int, cursor: int) -> tuple[list, int, int | None]:
        rows = await self._pool.fetch(
            "SELECT seq, scope, value FROM edgefiles_context WHERE project = $1 AND seq > $2 "
            "ORDER BY seq LIMIT $3", project, cursor, limit,
        )
        sql = "SELECT COUNT(*) FROM edgefiles_context WHERE project = $1"
        count = await self._pool.fetchval(sql, project)
        data = [{"scope": r["scope"], "values": json.loads(r["value"])} for r in rows]
        return data, int(count), rows[-1]["seq"] if len(rows) == limit else None
