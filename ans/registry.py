"""Persisted name table: applies local writes and merged remote records, tells listeners."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

import aiosqlite
from edgefiles.node.cid import is_cid
from edgefiles.node.db import Database
from edgefiles.node.events import Listeners
from edgefiles.node.identity import NodeKey

from . import record as rec_mod
from .clock import HybridClock, now_ms
from .merge import Table, merge, too_far_ahead
from .record import NameRecord

log = logging.getLogger("edgefiles.ans")

AlsoInTx = Callable[[aiosqlite.Connection, list[NameRecord]], Awaitable[None]]

API_NAMESPACE = ""
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # fullmatch: `$` would let a final "\n" in
MAX_NAME = 237
NAME_RULE = (f"lower-case DNS labels [a-z0-9-] of 1-63 chars, no '-' at either end, joined by dots, "
             f"<= {MAX_NAME} chars")


def is_valid_name(name: str) -> bool:
    """Lower-case DNS labels joined by dots, so `<name>.actyx.localhost` is a host name."""
    return 0 < len(name) <= MAX_NAME and all(_LABEL.fullmatch(label) for label in name.split("."))


class NameRefused(ValueError):
    """A name no one may set; `is_cid`: it is a CID, which as a name would hide that content."""

    def __init__(self, message: str, is_cid: bool):
        super().__init__(message)
        self.is_cid = is_cid


def check_name(name: str) -> None:
    """NameRefused when `name` cannot be set: the node's rule, told by the command line too."""
    if is_cid(name):
        raise NameRefused(f"{name!r} is a CID and cannot be used as a name", True)
    if not is_valid_name(name):
        raise NameRefused(f"{name!r} is not a valid name: {NAME_RULE}", False)


class Registry:
    def __init__(self, db: Database, key: NodeKey):
        self._db = db
        self._key = key
        self.table: Table = {}
        self._spaces: dict[str, dict[str, NameRecord]] = {}  # namespace -> name -> record, as `table`
        self.clock = HybridClock()
        # every record that won, with the one it replaced (None for a new name)
        self.listeners: Listeners[Callable[[NameRecord, NameRecord | None], None]] = Listeners()
        self.local_writes: Listeners[Callable[[NameRecord], None]] = Listeners()  # records signed here
        self.bad_records = 0  # received with signatures that fail
        self.future_records = 0  # received with a clock over 5 min ahead of ours
        self._drop_logged: dict[str, float] = {}  # why -> when a drop for it was last logged

    async def load(self) -> None:
        for (blob,) in await self._db.fetchall("SELECT record FROM names"):
            r = rec_mod.decode(blob)
            self._keep(r)
        rows = await self._db.fetchall("SELECT value FROM state WHERE key = 'hlc'")
        last = tuple(map(int, rows[0][0].decode().split(":"))) if rows else (0, 0)
        for r in self.table.values():
            last = max(last, r.clock)
        self.clock = HybridClock(last)  # type: ignore[arg-type]

    def get(self, name: str, namespace: str = API_NAMESPACE) -> NameRecord | None:
        r = self.table.get((namespace, name))
        return r if r is not None and r.cid is not None else None

    def live(self, namespace: str = API_NAMESPACE) -> list[NameRecord]:
        """The namespace's names that point somewhere, by name (the namespace's records only:
        a node's thousands of facade files do not slow its accounts or its app names)."""
        space = self._spaces.get(namespace, {})
        return [space[name] for name in sorted(space) if space[name].cid is not None]

    def _keep(self, record: NameRecord) -> None:
        self.table[record.key] = record
        self._spaces.setdefault(record.namespace, {})[record.name] = record

    async def write(
        self, name: str, cid: bytes | None, namespace: str = API_NAMESPACE, also: AlsoInTx | None = None,
        meta: bytes | None = None,
    ) -> NameRecord:
        """A local set (cid) or delete (None): a new signed record that wins over what we know."""
        async with self._db.transaction() as conn:
            (record,) = await self.write_many_in(conn, [(namespace, name, cid, meta)], also)
            return record

    async def write_many(self, items: list[tuple[str, str, bytes | None, bytes | None]]) -> list[NameRecord]:
        """Local writes of (namespace, name, cid, metadata) in one transaction: all or none."""
        async with self._db.transaction() as conn:
            return await self.write_many_in(conn, items)

    async def write_many_in(
        self, conn: aiosqlite.Connection, items: list[tuple[str, str, bytes | None, bytes | None]],
        also: AlsoInTx | None = None,
    ) -> list[NameRecord]:
        """Local writes of (namespace, name, cid, metadata) inside the caller's transaction,
        staged together (e.g. every file write of one group commit)."""
        records = [rec_mod.sign(self._key, ns, name, cid, self.clock.tick(), meta)
                   for ns, name, cid, meta in items]
        changed = await self.stage(conn, records, also, signed_here=True)
        if changed:
            self._db.after_commit.append(lambda: self._written_here(changed))
        return records

    def _written_here(self, records: list[NameRecord]) -> None:
        for record in records:
            for hook in self.local_writes:
                hook(record)

    async def apply(self, records: list[NameRecord], also: AlsoInTx | None = None) -> list[NameRecord]:
        """Merge records (local or received); persists and announces the winners.

        `also` runs inside the same transaction, so e.g. a pin changes atomically with its name.
        """
        if not any(self._might_win(r) for r in records):
            return []  # nothing new (e.g. a table exchange after a short break): no transaction
        async with self._db.transaction() as conn:
            return await self.stage(conn, records, also)

    def _might_win(self, record: NameRecord) -> bool:
        current = self.table.get(record.key)
        return current is None or merge(current, record) is not current

    async def stage(
        self, conn: aiosqlite.Connection, records: list[NameRecord], also: AlsoInTx | None = None,
        signed_here: bool = False,
    ) -> list[NameRecord]:
        """Inside a transaction: the winners among `records`, written; the in-memory table and
        listeners follow once it commits. Winners are judged under the transaction, so two
        writers of one name cannot both believe they won."""
        changed = self._winners(records, signed_here)
        if not changed:
            return []
        await conn.executemany(
            "INSERT OR REPLACE INTO names VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r.namespace, r.name, r.cid, *r.clock, r.writer, rec_mod.encode(r)) for r in changed],
        )
        await conn.execute(
            "INSERT OR REPLACE INTO state VALUES ('hlc', ?)",
            (f"{self.clock.last[0]}:{self.clock.last[1]}".encode(),),
        )
        if also is not None:
            await also(conn, changed)
        self._db.after_commit.append(lambda: self._announce(changed))
        return changed

    def _winners(self, records: list[NameRecord], signed_here: bool = False) -> list[NameRecord]:
        now = now_ms()
        pending: Table = {}
        for r in records:
            if not signed_here and not rec_mod.is_valid(r):
                self.bad_records += 1
                self._dropped("with bad signatures", self.bad_records, r)
                continue
            if not signed_here and too_far_ahead(r, now):  # our own clock may be ahead of our wall clock
                self.future_records += 1
                self._dropped("from a clock over 5 min ahead of ours", self.future_records, r)
                continue
            self.clock.observe(r.clock, now)
            current = pending.get(r.key) or self.table.get(r.key)
            winner = r if current is None else merge(current, r)
            if winner is not current:
                pending[r.key] = winner
        return list(pending.values())

    def _dropped(self, why: str, count: int, record: NameRecord) -> None:
        """Logged once a minute for each reason however many come: a flood of forgeries, or
        a skewed peer resending its every record, must not flood the log too."""
        now = time.monotonic()
        if now - self._drop_logged.get(why, float("-inf")) >= 60:
            self._drop_logged[why] = now
            log.warning("dropping name records %s (%d so far; this one for %r)", why, count, record.name)

    def _announce(self, changed: list[NameRecord]) -> None:
        for r in changed:
            previous = self.table.get(r.key)
            self._keep(r)
            for listener in self.listeners:
                listener(r, previous)
