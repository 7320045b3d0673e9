"""The node's content core: block store, pins, DAG completeness and collection behind one
object every route, facade and the names layer (`ans/names.py`) use. It knows nothing of
names: `node/` depends on nothing above it.

Threads. On the event loop: `open`, `close`, `commit`, `import_bytes`, `import_append`,
`collect_garbage`, `keep_below`. On worker threads (they block on disk or on peers):
`get_block`, `read_bytes`, and readers walking DAGs. Either: `is_complete`, `progress`,
`file_size`, `prefetch`, `pinned_roots`, `store_totals`; the caches they keep are guarded
by one lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from . import exporter, fsck, gc, pins
from .blockstore import Batch, BlockStore, CorruptBlock
from .cid import is_identity
from .db import Database, open_db
from .groupcommit import GroupCommitter
from .identity import NodeKey
from .importer import Entry, NotResumable, import_bytes, resume_file
from .profiles import Profile

log = logging.getLogger("edgefiles")
PROGRESS_FRESH = 0.25  # seconds a survey of an incomplete DAG answers status requests
SAVE_RECENCY_EVERY = 60.0  # seconds: a crash loses at most this much of the GC's read order
RECLAIM_ABANDONED = 16 << 20  # bytes of failed uploads in the packs before they are given back
GC_BACKOFF_MAX = 12  # a collector that keeps failing tries again at most every 12 rounds (1 min)
CACHED_ROOTS = 10_000
COMPLETE_ROOTS = 100_000  # every named upload marks its root complete: ~10 MB at most
T = TypeVar("T", dict, set)
SMALL_IMPORT = 1 << 20  # imported on the event loop: cheaper than a hop to a thread
READ_THREADS = 2  # stored blocks read and verified ahead of walks and file reads (hashing releases the GIL)


@dataclass(frozen=True)
class CoreSettings:
    data_dir: Path
    profile: Profile
    pin_uploads_for: float = 12 * 3600.0
    store_quota: int | None = None


@dataclass(frozen=True)
class Imported:
    """A file written to the store, not committed yet."""

    batch: Batch
    root: bytes
    size: int


class BlockSource(Protocol):
    """Where blocks that are not stored here come from (the swarm)."""

    def reachable(self) -> bool:
        """Whether any peer could be asked now (else reads do not look for what to ask)."""
        ...

    def fetch_block(self, cid: bytes) -> bytes | None:
        """Blocking (worker threads only): the block, or None when nobody has it in time."""
        ...

    def prefetch(self, cids: list[bytes]) -> None:
        """From any thread: blocks a reader will need next, asked for now."""
        ...

    def fetch_dags(self, roots: list[bytes]) -> int:
        """Blocking (worker threads only): every missing block of these DAGs, fetched and
        stored as far as peers have them; the bytes fetched."""
        ...


class NoPeers:
    """A node alone: nothing comes from elsewhere."""

    def reachable(self) -> bool:
        return False

    def fetch_block(self, cid: bytes) -> bytes | None:
        return None

    def prefetch(self, cids: list[bytes]) -> None:
        return None

    def fetch_dags(self, roots: list[bytes]) -> int:
        return 0


class Core:
    def __init__(self, settings: CoreSettings, key: NodeKey, db: Database, store: BlockStore,
                 blocks: BlockSource):
        """Use `Core.open`: it builds the parts."""
        self.settings = settings
        self.key = key
        self.db = db
        self.store = store
        self._blocks = blocks
        # a read-ahead reads only blocks stored here: those still to come from peers are waited
        # for by each reader in its turn, not by the read pool, which every reader shares
        self.reader = exporter.DagReader(
            self.get_block, self.prefetch, store.get_many, store.sizes,
            lambda cids, places: store.get_many(cids, places=places, to_send=True))
        self._sealed_reader = exporter.DagReader(self.get_block, self.prefetch,
                                                 partial(store.get_many, authenticated=True), store.sizes)
        self.read_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read")  # walks' read-ahead
        self._committer = GroupCommitter(store, db)
        self._cache_lock = threading.Lock()
        self._complete: set[bytes] = set()
        self._progress: dict[bytes, tuple[float, int]] = {}  # root -> (when surveyed, missing)
        self._sizes: dict[bytes, int] = {}  # file sizes of roots stored here lately

    def read_sealed(self, node: exporter.Node, start: int, end: int, pool: Executor) -> Iterator[bytes]:
        """Bytes [start, end) of a sealed object's ciphertext, its leaves read ahead on `pool`
        and NOT hashed against their CIDs: the caller authenticates every byte itself, segment
        by segment (AES-GCM, which any other byte fails), before any plaintext leaves. For any
        other read, `reader`."""
        return self._sealed_reader.read_range(node, start, end, pool)

    @classmethod
    async def open(cls, settings: CoreSettings, key: NodeKey, blocks: BlockSource | None = None) -> Core:
        """The core of the node in `settings.data_dir`, complete; `blocks`: where blocks not
        stored here come from (none: a node alone)."""
        db_path = settings.data_dir / "state.sqlite"
        db = await open_db(db_path)
        try:
            store = BlockStore(settings.data_dir / "blocks", db_path, settings.store_quota)
        except BaseException:  # the database's thread would keep the process alive
            await db.close()
            raise
        return cls(settings, key, db, store, blocks or NoPeers())

    async def close(self) -> None:
        self.read_pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()
        await self.db.close()

    # blocks -------------------------------------------------------------------------
    def get_block(self, cid: bytes) -> bytes:
        data = self.store.get(cid)
        if data is None:
            data = self._blocks.fetch_block(cid)
        if data is None:
            raise exporter.NotFound("block not stored on this node")
        return data

    def prefetch(self, cids: list[bytes]) -> None:
        """Blocks a reader is about to read: those not stored here are asked of peers now."""
        if not self._blocks.reachable():
            return
        here = self.store.present(cids)
        missing = [c for c in cids if c not in here]
        if missing:
            self._blocks.prefetch(missing)

    async def commit(self, batch: Batch, roots: list[bytes]) -> None:
        """Make an upload durable, its roots pinned for the upload grace period: synced packs,
        then index + pins in one transaction, shared with every upload that finishes at the
        same moment."""
        expires = self.upload_pin_expiry()
        await self._committer.commit(batch, [(root, pins.upload_reason(root), expires) for root in roots])

    # pins ---------------------------------------------------------------------------
    def pinned_roots(self) -> int:
        """Roots held by at least one unexpired pin."""
        return pins.count_live_roots(self.store.read_connection(), int(time.time()))

    def upload_pin_expiry(self) -> float:
        return time.time() + self.settings.pin_uploads_for

    # DAG completeness -----------------------------------------------------------------
    def is_complete(self, root: bytes) -> bool:
        """Whether every block of the DAG under `root` is stored here (an identity CID is its
        own block: complete everywhere)."""
        return self.known_complete(root) or self._survey(root, first_gap=True)[0]

    def known_complete(self, root: bytes) -> bool:
        """`is_complete` as far as it is known without reading (never blocks): a DAG found
        complete before, or an identity CID."""
        return root in self._complete or is_identity(root)

    def progress(self, root: bytes) -> tuple[bool, int]:
        """(complete, bytes still to fetch) of a DAG for status pages. The missing figure of
        an incomplete DAG is reused for a moment: it walks the whole DAG, and clients poll."""
        if root in self._complete or is_identity(root):
            return True, 0
        now = time.monotonic()
        seen = self._progress.get(root)
        if seen is not None and now - seen[0] < PROGRESS_FRESH:
            return False, seen[1]
        complete, missing = self._survey(root, first_gap=False)
        if complete:
            return True, 0
        # a root that never arrived has no size to estimate from; 0 would read as "done" to a
        # script that waits for it, so the estimate is at least a byte
        missing = max(missing, 1)
        with self._cache_lock:
            _bounded(self._progress)[root] = (now, missing)
        return False, missing

    def mark_complete(self, root: bytes) -> None:
        """Every block of `root` is stored (a rollout finished fetching it)."""
        with self._cache_lock:
            _bounded(self._complete, COMPLETE_ROOTS).add(root)

    def _survey(self, root: bytes, first_gap: bool) -> tuple[bool, int]:
        """(complete, missing bytes) from a walk of what is stored; a complete root is remembered."""
        try:
            complete, missing = self.reader.survey(root, self.store.present, first_gap=first_gap)
        except (exporter.NotUnixFS, CorruptBlock):
            return False, 0
        if complete:
            self.mark_complete(root)
        return complete, missing

    # whole small files (facades) ------------------------------------------------------
    async def import_bytes(self, data: bytes) -> Imported:
        """`data` as one file, written but not committed."""
        batch = self.store.batch()
        try:
            if len(data) <= SMALL_IMPORT:
                entry = import_bytes(self.settings.profile, data, batch.put)
            else:
                entry = await asyncio.to_thread(import_bytes, self.settings.profile, data, batch.put)
        except Exception:  # the quota or the disk ran out: nothing of it stays
            self.store.abandon(batch)
            raise
        self._remember_size(entry.cid, entry.size)
        return Imported(batch, entry.cid, entry.size)

    async def import_append(self, root: bytes, data: bytes) -> Imported:
        """The file at `root` with `data` appended, written but not committed. Reuses the
        file's full leaves, so the cost follows the appended bytes (a file built another way
        is re-imported whole)."""
        batch = self.store.batch()

        def build() -> Entry:
            try:
                builder = resume_file(self.settings.profile, root, self.get_block, batch.put)
            except NotResumable:
                return import_bytes(self.settings.profile, self.read_bytes(root) + data, batch.put)
            builder.write(data)
            return builder.finish()

        try:
            entry = await asyncio.to_thread(build)  # may read blocks from peers
        except Exception:
            self.store.abandon(batch)
            raise
        self._remember_size(entry.cid, entry.size)
        return Imported(batch, entry.cid, entry.size)

    def _remember_size(self, root: bytes, size: int) -> None:
        with self._cache_lock:
            _bounded(self._sizes)[root] = size

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

    # collection -----------------------------------------------------------------------
    async def collect_garbage(self, limit: int) -> gc.GcReport:
        report = await asyncio.to_thread(gc.collect, self.store, limit)
        with self._cache_lock:
            self._complete.clear()  # a root whose blocks were freed is no longer complete
        if report.freed_blocks or report.compacted_packs:
            log.info(
                "gc: freed %d blocks (%.1f MiB), compacted %d packs (%.1f MiB back on disk)",
                report.freed_blocks, report.freed_bytes / 2**20, report.compacted_packs,
                report.reclaimed_bytes / 2**20,
            )
        return report

    async def keep_below(self, limit: int | None, every: float = 5.0) -> None:
        """The garbage collector's loop: runs whenever the store holds more than `limit` bytes
        (None: never), and whenever failed uploads left RECLAIM_ABANDONED in the packs.
        Every `SAVE_RECENCY_EVERY` it also saves what was read lately, the order it frees in."""
        saved, failures = time.monotonic(), 0
        while True:
            try:
                if limit is not None and self.store.size > limit:
                    await self.collect_garbage(limit)
                elif self.store.abandoned >= RECLAIM_ABANDONED:
                    report = await asyncio.to_thread(gc.reclaim_abandoned, self.store)
                    log.info("gc: %.1f MiB of failed uploads given back to the disk (%d packs compacted)",
                             report.reclaimed_bytes / 2**20, report.compacted_packs)
                if limit is not None and time.monotonic() - saved >= SAVE_RECENCY_EVERY:
                    await asyncio.to_thread(self.store.save_recency)
                    saved = time.monotonic()
                failures = 0
            except Exception as exc:
                if not failures:  # a full disk fails every round until space is freed: said once
                    log.exception("garbage collection failed; retrying with backoff")
                else:
                    log.debug("garbage collection failed again: %s", exc)
                failures += 1
            await asyncio.sleep(every * min(2 ** failures, GC_BACKOFF_MAX))

    # checking -------------------------------------------------------------------------
    async def fsck(self, named: list[fsck.NamedTarget], repair: bool,
                   progress: fsck.Progress | None = None) -> fsck.Report:
        """Check the store (and with `repair` mend it, fetching what is missing from peers);
        `named`: the names' targets, as users know them."""
        report = await asyncio.to_thread(fsck.run, self.store, lambda: named, repair,
                                         self._blocks.fetch_dags, progress)
        if repair:
            with self._cache_lock:
                self._complete.clear()  # a dropped block may have belonged to a complete root
        return report

    def store_totals(self) -> tuple[int, int]:
        return self.store.totals()


def _bounded(table: T, limit: int = CACHED_ROOTS) -> T:
    """The table, emptied first when it has grown past what a cache of hints should hold
    (what it forgets is found again by a walk of the store)."""
    if len(table) > limit:
        table.clear()
    return table
