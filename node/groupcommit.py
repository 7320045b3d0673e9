"""Group commit: uploads that finish together share one pack sync and one SQLite transaction.

One upload alone pays what it always paid (a sync, a transaction); under load the cost of
both is spread over every upload waiting at that moment, which is what small writes need.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosqlite

from .blockstore import STORAGE_ERRNOS, Batch, BlockStore, StorageFull
from .db import Database
from .pins import pin

InTx = Callable[[aiosqlite.Connection], Awaitable[None]]


@dataclass
class _Waiting:
    batch: Batch
    root: bytes
    reason: str
    expires: float | None
    done: asyncio.Future
    also: InTx | None = None


class GroupCommitter:
    def __init__(self, store: BlockStore, db: Database):
        self._store = store
        self._db = db
        self._queue: list[_Waiting] = []
        self._drainer: asyncio.Task | None = None

    async def commit(
        self, batch: Batch, root: bytes, reason: str, expires: float | None, also: InTx | None = None
    ) -> None:
        """Return once the batch is durable, indexed and its root pinned (or raise); `also`
        runs in the same transaction (a facade's name write rides along with its blocks)."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(batch, root, reason, expires, loop.create_future(), also)
        self._queue.append(waiting)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        # shielded: a client that leaves now must not cancel the commit of the whole group
        await asyncio.shield(waiting.done)

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            try:
                await self._commit_group(group)
            except BaseException as exc:
                for w in group:
                    self._store.abandoned(w.batch)
                    if not w.done.done():
                        w.done.set_exception(_storage_error(exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for w in group:
                self._store.committed(w.batch)
                if not w.done.done():
                    w.done.set_result(None)

    async def _commit_group(self, group: list[_Waiting]) -> None:
        packs = set().union(*(w.batch.packs for w in group))
        await asyncio.to_thread(self._store.sync_packs, packs)
        async with self._db.transaction() as conn:
            for w in group:
                rows = self._store.index_rows(w.batch)
                await conn.executemany("INSERT OR IGNORE INTO blocks VALUES (?, ?, ?, ?)", rows)
                await pin(conn, w.root, w.reason, w.expires)
                if w.also is not None:
                    await w.also(conn)


def _storage_error(exc: BaseException) -> BaseException:
    """A full disk, in the file system or in SQLite, becomes StorageFull; the rest stays as is."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return StorageFull(exc.strerror or str(exc))
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        return StorageFull(str(exc))
    return exc
