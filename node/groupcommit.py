"""Group commit: uploads that finish together share one pack sync and one SQLite transaction.

One upload alone pays what it always paid (a sync, a transaction); under load the cost of
both is spread over every upload waiting at that moment, which is what small writes need.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite

from . import blockindex
from .blockstore import Batch, BlockStore, as_storage_full
from .db import Database
from .pins import pin_roots

log = logging.getLogger("edgefiles.store")

# writes the names of a group inside the group's transaction: (the name as the caller gave
# it to `commit`, the root it now points at) each
NameWriter = Callable[[aiosqlite.Connection, list[tuple[Any, bytes]]], Awaitable[None]]


@dataclass
class _Waiting:
    batch: Batch
    pins: list[tuple[bytes, str, float | None]]  # (root, reason, expiry); a name moves to the first
    done: asyncio.Future
    name: Any = None


class GroupCommitter:
    def __init__(self, store: BlockStore, db: Database, write_names: NameWriter | None = None):
        self._store = store
        self._db = db
        self._write_names = write_names
        self._queue: list[_Waiting] = []
        self._drainer: asyncio.Task | None = None

    async def commit(
        self, batch: Batch, pins: list[tuple[bytes, str, float | None]], name: Any = None,
    ) -> None:
        """Return once the batch is durable, indexed and its roots pinned (or raise): `pins`
        holds (root, reason, expiry), each reason pinning only its root (an upload's). With
        `name` (whatever the committer's name writer takes), the name moves to the first root
        in the same transaction: a facade's file write is one commit, shared with every
        write that finishes at the same moment."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(batch, pins, loop.create_future(), name)
        self._queue.append(waiting)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        # shielded: a client that leaves now must not cancel the commit of the whole group
        await asyncio.shield(waiting.done)

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            try:
                raced = await self._commit_group(group)
            except BaseException as exc:
                for w in group:
                    self._store.settle(w.batch, committed=False)
                    if not w.done.done():
                        w.done.set_exception(as_storage_full(exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            elsewhere: dict[Batch, int] = {}
            batches = [w.batch for w in group]
            try:
                if raced:
                    elsewhere = await asyncio.to_thread(self._store.indexed_elsewhere, batches)
            except Exception:
                log.exception("counting the bytes of uploads that raced failed")
            finally:  # the commit is done: its uploads hear so, whatever the count (or a cancel) did
                for w in group:
                    self._store.settle(w.batch, committed=True, unindexed=elsewhere.get(w.batch, 0))
                    if not w.done.done():
                        w.done.set_result(None)

    async def _commit_group(self, group: list[_Waiting]) -> bool:
        """Whether some of the group's rows did not land (their blocks indexed already, by
        another upload of the same content)."""
        batches = [w.batch for w in group]
        await asyncio.to_thread(self._store.sync, batches)
        async with self._db.transaction() as conn:  # a few statements for the whole group
            rows = self._store.index_rows(batches)
            raced = await blockindex.insert_async(conn, rows, self._store.replacing(batches)) < len(rows)
            await pin_roots(conn, [pin for w in group for pin in w.pins])
            names = [(w.name, w.pins[0][0]) for w in group if w.name is not None]
            if names:
                await self._write_names(conn, names)
        return raced
