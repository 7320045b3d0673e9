"""The node's core: block store, pins and names behind one object every route and facade uses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
from edgefiles.ans.record import NameRecord
from edgefiles.ans.registry import API_NAMESPACE, Registry

from . import exporter, gc, pins
from .blockstore import Batch, BlockStore, CorruptBlock
from .db import Database, open_db
from .groupcommit import GroupCommitter
from .identity import NodeKey
from .importer import NotResumable, import_bytes, resume_file
from .profiles import Profile

log = logging.getLogger("edgefiles")
PROGRESS_FRESH = 0.25  # seconds a survey of an incomplete DAG answers status requests
SAVE_RECENCY_EVERY = 60.0  # seconds: a crash loses at most this much of the GC's read order


@dataclass(frozen=True)
class CoreSettings:
    data_dir: Path
    profile: Profile
    pin_uploads_for: float = 12 * 3600.0
    store_quota: int | None = None


class Core:
    def __init__(self, settings: CoreSettings, key: NodeKey):
        self.settings = settings
        self.key = key
        self.db: Database | None = None
        self.store: BlockStore | None = None
        self.registry: Registry | None = None
        self.reader = exporter.DagReader(self.get_block, self.prefetch)
        self._complete: set[bytes] = set()
        self._progress: dict[bytes, tuple[float, int]] = {}  # root -> (when surveyed, missing)
        self._serving: dict[tuple[str, str], bytes] = {}
        self.fetch_block: Callable[[bytes], bytes | None] | None = None
        self.prefetch_blocks: Callable[[list[bytes]], None] | None = None
        self._sizes: dict[bytes, int] = {}  # file sizes of roots stored here lately
        self._committing: set[bytes] = set()  # roots whose blocks the open transaction adds

    async def open(self) -> None:
        db_path = self.settings.data_dir / "state.sqlite"
        self.db = await open_db(db_path)
        self.store = BlockStore(self.settings.data_dir / "blocks", db_path, self.settings.store_quota)
        self.registry = Registry(self.db, self.key)
        await self.registry.load()
        sql = "SELECT root, reason FROM pins WHERE reason LIKE 'serving:%'"
        for root, reason in await self.db.fetchall(sql):
            self._serving[pins.parse_serving_reason(reason)] = root
        self._committer = GroupCommitter(self.store, self.db, self._write_names)

    async def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.db is not None:
            await self.db.close()

    # blocks -------------------------------------------------------------------------
    def get_block(self, cid: bytes) -> bytes:
        data = self.store.get(cid)
        if data is None and self.fetch_block is not None:
            data = self.fetch_block(cid)  # blocking: readers run on worker threads
        if data is None:
            raise exporter.NotFound("block not stored on this node")
        return data

    def prefetch(self, cids: list[bytes]) -> None:
        """Blocks a reader is about to read: those not stored here are asked of peers now."""
        if self.prefetch_blocks is not None:
            here = self.store.present(cids)
            missing = [c for c in cids if c not in here]
            if missing:
                self.prefetch_blocks(missing)

    async def commit(
        self, batch: Batch, root: bytes, reason: str, expires: float | None,
        name: tuple[str, str] | None = None,
    ) -> None:
        """Make an upload durable and pinned: synced packs, then index + pin in one transaction
        (and, with `name` = (namespace, name), the name moved to `root` in it too)."""
        await self._committer.commit(batch, root, reason, expires, name)

    async def _write_names(self, conn: aiosqlite.Connection, names: list[tuple[str, str, bytes]]) -> None:
        # Their blocks commit in this same transaction, which the readers cannot see yet:
        # without this, every overwrite would keep its previous version pinned as "serving".
        self._committing = {root for _, _, root in names}
        try:
            await self.registry.write_many_in(conn, names, also=self._repin)
        finally:
            self._committing = set()

    # pins ---------------------------------------------------------------------------
    def pinned_roots(self) -> int:
        """Roots held by at least one unexpired pin."""
        return pins.count_live_roots(self.store.read_connection(), int(time.time()))

    def upload_pin_expiry(self) -> float:
        return time.time() + self.settings.pin_uploads_for

    # DAG completeness -----------------------------------------------------------------
    def is_complete(self, root: bytes) -> bool:
        """Whether every block of the DAG under `root` is stored here."""
        return self._known_complete(root) or self._survey(root, first_gap=True)[0]

    def progress(self, root: bytes) -> tuple[bool, int]:
        """(complete, bytes still to fetch) of a DAG for status pages. The missing figure of
        an incomplete DAG is reused for a moment: it walks the whole DAG, and clients poll."""
        if self._known_complete(root):
            return True, 0
        now = time.monotonic()
        seen = self._progress.get(root)
        if seen is not None and now - seen[0] < PROGRESS_FRESH:
            return False, seen[1]
        complete, missing = self._survey(root, first_gap=False)
        if complete:
            return True, 0
        if len(self._progress) > 1000:
            self._progress.clear()
        self._progress[root] = (now, missing)
        return False, missing

    def _known_complete(self, root: bytes) -> bool:
        return root in self._complete or root in self._committing

    def _survey(self, root: bytes, first_gap: bool) -> tuple[bool, int]:
        """(complete, missing bytes) from a walk of what is stored; a complete root is remembered."""
        try:
            complete, missing = self.reader.survey(root, self.store.present, first_gap=first_gap)
        except (exporter.NotUnixFS, CorruptBlock):
            return False, 0
        if complete:
            self._complete.add(root)
        return complete, missing

    # whole small files (facades) ------------------------------------------------------
    async def store_bytes(self, data: bytes, name: tuple[str, str] | None = None) -> bytes:
        """Import `data` as one file, durable; returns its root. With `name` (namespace, name)
        the name moves to it in the same group transaction as the blocks: one commit, shared
        with every write that finishes at the same moment."""
        batch = self.store.batch()
        if len(data) <= 1 << 20:  # small: cheaper here than a hop to a thread
            root = import_bytes(self.settings.profile, data, batch.put).cid
        else:
            root = (await asyncio.to_thread(import_bytes, self.settings.profile, data, batch.put)).cid
        self._remember_size(root, len(data))
        await self._commit_named(batch, root, name)
        return root

    def _remember_size(self, root: bytes, size: int) -> None:
        if len(self._sizes) > 10_000:
            self._sizes.clear()
        self._sizes[root] = size

    async def _commit_named(self, batch: Batch, root: bytes, name: tuple[str, str] | None) -> None:
        await self.commit(batch, root, pins.upload_reason(root), self.upload_pin_expiry(), name)

    async def append_bytes(self, root: bytes, data: bytes, name: tuple[str, str] | None = None) -> bytes:
        """The file at `root` with `data` appended, durable; reuses its full leaves, so the
        cost follows the appended bytes (a file built another way is re-imported whole)."""
        batch = self.store.batch()

        def build() -> bytes:
            try:
                builder = resume_file(self.settings.profile, root, self.get_block, batch.put)
            except NotResumable:
                return import_bytes(self.settings.profile, self.read_bytes(root) + data, batch.put).cid
            builder.write(data)
            entry = builder.finish()
            self._remember_size(entry.cid, entry.size)
            return entry.cid

        new_root = await asyncio.to_thread(build)  # may read blocks from peers
        await self._commit_named(batch, new_root, name)
        return new_root

    def read_bytes(self, root: bytes) -> bytes:
        """A whole file (blocking: call from a worker thread for big ones)."""
        node = self.reader.load(root)
        return b"".join(self.reader.read_range(node, 0, node.size))

    def file_size(self, root: bytes) -> int | None:
        """Size of a file from its root block; None while that block is not here yet (never
        fetched from peers: this is asked on the event loop)."""
        if root in self._sizes:
            return self._sizes[root]
        if not self.store.has(root):
            return None
        try:
            return self.reader.load(root).size
        except (exporter.NotFound, exporter.NotUnixFS, CorruptBlock):
            return 0

    async def collect_garbage(self, limit: int) -> gc.GcReport:
        report = await asyncio.to_thread(gc.collect, self.store, limit)
        self._complete.clear()  # a root whose blocks were freed is no longer complete
        if report.freed_blocks or report.compacted_packs:
            log.info(
                "gc: freed %d blocks (%.1f MiB), compacted %d packs (%.1f MiB back on disk)",
                report.freed_blocks, report.freed_bytes / 2**20, report.compacted_packs,
                report.reclaimed_bytes / 2**20,
            )
        return report

    async def keep_below(self, limit: int, every: float = 5.0) -> None:
        """The garbage collector's loop: runs whenever the store holds more than `limit` bytes.
        Every `SAVE_RECENCY_EVERY` it also saves what was read lately, the order it frees in."""
        saved = time.monotonic()
        while True:
            if self.store.size > limit:
                try:
                    await self.collect_garbage(limit)
                except Exception:
                    log.exception("garbage collection failed; retrying later")
            if time.monotonic() - saved >= SAVE_RECENCY_EVERY:
                await asyncio.to_thread(self.store.save_recency)
                saved = time.monotonic()
            await asyncio.sleep(every)

    def store_totals(self) -> tuple[int, int]:
        return self.store.totals()

    # names ----------------------------------------------------------------------------
    def resolve_name(self, name: str, namespace: str = API_NAMESPACE) -> bytes | None:
        """The newest complete target of a name; while a newer one is incomplete, the previous."""
        record = self.registry.get(name, namespace)
        if record is None:
            return None
        if self.is_complete(record.cid):
            return record.cid
        return self._serving.get((namespace, name), record.cid)

    async def set_name(self, name: str, cid: bytes, namespace: str = API_NAMESPACE) -> None:
        await self.registry.write(name, cid, namespace, also=self._repin)

    async def delete_name(self, name: str, namespace: str = API_NAMESPACE) -> bytes | None:
        record = self.registry.get(name, namespace)
        if record is None:
            return None
        await self.registry.write(name, None, namespace, also=self._repin)
        return record.cid

    async def apply_remote(self, records: list[NameRecord]) -> None:
        """Merge records from peers; winners are pinned (and their DAGs rolled out) like local writes."""
        await self.registry.apply(records, also=self._repin)

    async def _repin(self, conn: aiosqlite.Connection, changed: list[NameRecord]) -> None:
        """Runs inside the name's transaction: its pin moves with it. While a new target is
        incomplete, the previous complete one stays pinned (and served) under `serving:`."""
        await pins.move_pins(conn, [(r.cid, pins.name_reason(r.namespace, r.name)) for r in changed])
        for r in changed:
            key = (r.namespace, r.name)
            previous = self.registry.table.get(key)
            if r.cid is None:
                await self._set_serving(conn, key, None)
                continue
            if self.is_complete(r.cid):
                await self._set_serving(conn, key, None)
            elif previous is not None and previous.cid is not None and key not in self._serving:
                if self.is_complete(previous.cid):
                    await self._set_serving(conn, key, previous.cid)

    async def _set_serving(
        self, conn: aiosqlite.Connection, key: tuple[str, str], root: bytes | None
    ) -> None:
        if root is None and key not in self._serving:
            return
        await pins.move_pins(conn, [(root, pins.serving_reason(*key))])
        if root is None:
            del self._serving[key]
        else:
            self._serving[key] = root

    def wanted_roots(self) -> set[bytes]:
        """Targets of live names that are not complete here: what the rollout must fetch."""
        targets = {r.cid for r in self.registry.table.values() if r.cid is not None}
        return {cid for cid in targets if not self.is_complete(cid)}

    async def rollout_done(self, root: bytes) -> None:
        """A named DAG is complete: names on it stop serving their previous target."""
        self._complete.add(root)
        keys = [k for k in self._serving if (r := self.registry.table.get(k)) is not None and r.cid == root]
        if keys:
            async with self.db.transaction() as conn:
                for key in keys:
                    await self._set_serving(conn, key, None)
