"""Durable, verified block store: the one interface to blocks, in the spirit of boxo's
`blockstore.Blockstore` (has / get / present / batched puts / delete / iterate, plus what
collection and compaction need).

Blocks are appended to pack files (`packs`) and become visible only when their index rows
(`blockindex`) commit in SQLite after the packs were synced, so a crash leaves at most
unreferenced bytes at a pack's tail. Pack layout, direct I/O, the index and read recency
are this module's business: nothing outside `node/` sees them.

Threads: every method may be called from any thread; writes (`commit`, `delete`,
`compact`) block and belong on worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgpack

from . import blockindex
from .cid import digest_of, is_identity, normalize, to_str, verify_block
from .db import Readers, open_writer, write_transaction
from .packs import STORAGE_ERRNOS, Packs, Place, record_span

log = logging.getLogger("edgefiles.store")

RECENT_READS = "recent-reads.msgpack"  # next to the packs: read recency kept across restarts
HINTS_KEPT = 200_000  # entries of each in-memory hint table
COMPACT_CHUNK = 32 << 20  # bytes copied per write while compacting


class CorruptBlock(Exception):
    """A stored block no longer matches its CID."""

    def __init__(self, cid: bytes):
        super().__init__(f"block {to_str(cid)} fails its hash check")
        self.cid = cid


class StorageFull(Exception):
    """The disk or the store quota has no room for the upload."""


def as_storage_full(exc: BaseException) -> BaseException:
    """A full disk, in the file system or in SQLite, as StorageFull; anything else as it is."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return StorageFull(exc.strerror or str(exc))
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        return StorageFull(str(exc))
    return exc


@dataclass(eq=False)  # identity-hashed: the store keeps a weak set of open batches
class Batch:
    """Blocks written by one upload or transfer; visible only once committed."""

    store: BlockStore
    places: dict[bytes, Place] = field(default_factory=dict)
    packs: set[int] = field(default_factory=set)
    bytes: int = 0  # of the blocks written by this batch
    settled: bool = False
    reused: set[bytes] = field(default_factory=set)  # already stored: kept from collection
    replaces: set[bytes] = field(default_factory=set)  # stored damaged or gone: this copy's row replaces
    replaced_bytes: int = 0  # of the copies it replaces (stored already, they count no more)

    def __len__(self) -> int:
        return len(self.places)

    def __contains__(self, cid: bytes) -> bool:
        return normalize(cid) in self.places

    def read(self, cid: bytes) -> bytes | None:
        """A block written in this batch, before it is committed (its CID was checked when
        it was put, and its pack is kept while the batch is open); None when it is not here."""
        place = self.places.get(normalize(cid))
        return None if place is None else self.store._packs.read(place)

    def put(self, cid: bytes, data: bytes) -> None:
        self.put_many([(cid, data)])

    def put_many(self, blocks: list[tuple[bytes, bytes]], bulk: bool = False) -> None:
        """Blocks whose CIDs come from their bytes; those stored already are only marked
        reused. One index query and one write for all of them. `bulk`: a transfer's
        megabytes, written past the page cache."""
        self.store._write(self, blocks, bulk)


class QueuedWrites:
    """Puts into a batch, written in groups on a thread of their own while the caller goes
    on, so that an import's hashing, DAG building and disk writes overlap (one dedup query
    and one pack write per group, not per block). Use from one thread at a time; `flush`
    before the batch is committed, `close` before it is abandoned.

    Groups go through the page cache, unlike a transfer's blocks: what is uploaded is what
    the node serves next (to every peer of a rollout, to browsers), and written past the
    cache each first read came from the disk into fresh page-cache memory. On this VM that
    cost the sender 1.1-1.3 ms of CPU per MiB while a Kubo peer fetched 128 MiB (us -> Kubo
    0.83x -> 0.90x of Kubo -> Kubo), for 0.3 s more per GiB uploaded."""

    GROUP_BYTES = 8 << 20

    def __init__(self, batch: Batch):
        self.batch = batch
        self._group: list[tuple[bytes, bytes]] = []
        self._bytes = 0
        self._writer: ThreadPoolExecutor | None = None  # started with the first full group
        self._writing: Future | None = None

    def put(self, cid: bytes, data: bytes) -> None:
        self._group.append((cid, data))
        self._bytes += len(data)
        if self._bytes >= self.GROUP_BYTES:
            group = self._take()
            self._wait()
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="write")
            self._writing = self._writer.submit(self.batch.put_many, group)

    def flush(self) -> None:
        """Write what is left and wait for every write; raises what a write raised."""
        try:
            self._wait()
            self.batch.put_many(self._take())
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the write in progress (its error is dropped) and stop the writer."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self._writing = None

    def _take(self) -> list[tuple[bytes, bytes]]:
        group = self._group
        self._group, self._bytes = [], 0
        return group

    def _wait(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()


class BlockStore:
    def __init__(self, root: Path, db_path: Path, quota: int | None = None):
        self.root = root
        self.quota = quota
        self._packs = Packs(root)
        self._readers = Readers(db_path)
        self._db_path = db_path
        self._writer_conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # byte counts
        self._write_lock = threading.Lock()  # the writer connection: one transaction at a time
        self._gc_lock = threading.Lock()  # a block deduped against is not deleted meanwhile
        self._in_use: Counter[bytes] = Counter()  # roots of DAGs being read out (under _lock)
        self._compact_lock = threading.Lock()  # one compaction at a time (collection, fsck --repair)
        # a batch that wrote was given up: its bytes may lie at the tail of the pack being
        # appended to, where a cut gives them back until another batch writes past them
        self._tail_maybe_dead = False
        self._open: weakref.WeakSet[Batch] = weakref.WeakSet()
        self._recency = _ReadRecency(root / RECENT_READS)
        self._verified: dict[bytes, bool] = {}  # blocks hashed in this process
        # bytes written by batches not settled yet, a block that several write at once (uploads
        # of one content) once: the quota is of what is stored, and all but one copy go back
        self._in_flight = 0
        self._in_flight_blocks: Counter[bytes] = Counter()  # the batches not settled that wrote each
        sizes = self._packs.sizes()
        blocks, self._stored = blockindex.totals(self._readers.get())
        if blocks == 0 and any(sizes.values()):
            self._stored = self._reindex(sizes)
        # bytes of failed uploads written since the last compaction; at start, what a crash left
        # past each pack's last indexed record (an upload cut off) too, so that it is given back
        ends = blockindex.indexed_ends(self._readers.get())
        self.abandoned = sum(max(0, size - ends.get(pack, 0)) for pack, size in sizes.items())

    def _reindex(self, sizes: dict[int, int]) -> int:
        """An index that is empty while the packs (of these sizes) hold bytes was lost
        (state.sqlite deleted, or made anew): every intact block of the packs is indexed again,
        as an unpinned one; the bytes indexed. Taken for a crash's leftovers, the packs were
        deleted within seconds of the start."""
        log.warning("the block index is empty but %s holds %.1f MiB: indexing its blocks again",
                    self.root, sum(sizes.values()) / 2**20)
        rows = [(normalize(cid), pack, offset, length) for pack in sorted(sizes)
                for cid, offset, length in self._packs.records(pack, partial(self._whole, pack))]
        with self._transaction() as conn:  # all or nothing: a rebuild cut short starts over
            blockindex.insert(conn, rows)
        blocks, size = blockindex.totals(self._readers.get())
        log.warning("indexed %d blocks (%.1f MiB) again; pins and names are not kept in the packs: "
                    "a swarm's names come back from its peers", blocks, size / 2**20)
        return size

    def _whole(self, pack: int, cid: bytes, offset: int, length: int) -> bool:
        """Whether the record at `offset` of `pack` holds a block that matches its CID. No
        record holds an identity CID's (its block is in the CID): zeros read as a header, an
        identity CID and an empty block passed the hash check."""
        try:
            return not is_identity(cid) and verify_block(cid, self._packs.read((pack, offset, length)))
        except Exception:  # a CID that is none (bytes of a record cut off)
            return False

    # reading --------------------------------------------------------------------------
    def has(self, cid: bytes) -> bool:
        return blockindex.locate(self._readers.get(), cid) is not None

    def present(self, cids: list[bytes]) -> set[bytes]:
        """Which of `cids` are stored (as given), in a few queries rather than one per CID."""
        return blockindex.present(self._readers.get(), cids)

    def sizes(self, cids: list[bytes]) -> dict[bytes, int]:
        """The size of each of `cids` that is stored, keyed as the index keys it (normalized)."""
        return blockindex.lengths(self._readers.get(), [normalize(cid) for cid in cids])

    def places(self, cids: list[bytes]) -> dict[bytes, Place]:
        """Where each of `cids` that is stored lies now (keyed as given), for `get_many` to
        read them later without a query of its own: looked up for many reads at once."""
        return blockindex.locate_many(self._readers.get(), cids)

    def get(self, cid: bytes, for_peer: bool = False) -> bytes | None:
        """The verified block, None when absent; CorruptBlock when its bytes are damaged.

        `for_peer`: a block hashed once in this process (on ingest or an earlier read) is not
        hashed again for Bitswap, whose receiver checks every block against its CID anyway.
        HTTP reads always hash: they must never send a wrong byte.
        An identity CID holds its block itself: it is here without being stored.
        """
        for _ in range(2):
            where = blockindex.locate(self._readers.get(), cid)
            if where is None:
                return digest_of(cid)[1] if is_identity(cid) else None
            try:
                return self._read_verified(cid, where, for_peer)
            except FileNotFoundError:  # compaction moved the block between lookup and read
                continue
        return None

    def get_many(self, cids: list[bytes], authenticated: bool = False,
                 places: dict[bytes, Place] | None = None,
                 to_send: bool = False) -> list[bytes | memoryview | None]:
        """`get` of several blocks, with one index query for all of them. `authenticated`:
        the caller authenticates every byte itself (ciphertext under an AEAD, whose tag fails
        on any other byte), so the blocks are not hashed against their CIDs here. `places`:
        where `places()` found the blocks a while ago, looked up again when it lacks one. A
        block not found whole where it said (compaction moved it, or a repair put a good copy
        elsewhere) is looked up again too. `to_send`: the blocks are bytes on their way out (an
        answer's body), so a large one may come as a view of the page cache (`Packs.view`)."""
        given = places is not None and all(cid in places or is_identity(cid) for cid in cids)
        found = places if places is not None and given else blockindex.locate_many(self._readers.get(), cids)
        out: list[bytes | memoryview | None] = []
        for cid in cids:
            where = found.get(cid)
            try:
                if where is None:
                    out.append(digest_of(cid)[1] if is_identity(cid) else None)
                else:
                    out.append(self._read_verified(cid, where, False, authenticated, to_send))
            except FileNotFoundError:
                out.append(self.get(cid))
            except CorruptBlock:
                if not given:
                    raise
                out.append(self.get(cid))  # damaged for good when the index says the same place
        return out

    def _read_verified(self, cid: bytes, where: Place, for_peer: bool, authenticated: bool = False,
                       to_send: bool = False) -> bytes | memoryview:
        try:
            data = self._packs.view(where) if to_send else self._packs.read(where)
        except FileNotFoundError:
            raise
        except OSError as exc:  # the disk cannot read it (EIO): damaged, as a failed hash is
            raise CorruptBlock(cid) from exc
        key = normalize(cid)
        hash_skipped = authenticated or (for_peer and key in self._verified)
        if len(data) != where[2] or not (hash_skipped or verify_block(cid, data)):
            raise CorruptBlock(cid)
        if not authenticated:  # only a block hashed here, now or before, counts as verified
            _remember(self._verified, key, True)
        self._recency.read(key)
        return data

    def read_connection(self) -> sqlite3.Connection:
        """This thread's read-only connection to the node's database (pins live there too)."""
        return self._readers.get()

    def totals(self) -> tuple[int, int]:
        """(number of blocks, their bytes)."""
        return blockindex.totals(self._readers.get())

    @property
    def size(self) -> int:
        """Bytes of the blocks stored (indexed)."""
        return self._stored

    @property
    def writes_past_cache(self) -> bool:
        """Whether bulk writes go past the page cache (this filesystem takes direct I/O)."""
        return self._packs.direct_ok

    # writing --------------------------------------------------------------------------
    def batch(self) -> Batch:
        batch = Batch(self)
        self._open.add(batch)
        return batch

    def _write(self, batch: Batch, blocks: list[tuple[bytes, bytes]], bulk: bool) -> None:
        # keyed as the index keys them: a CIDv0 and its CIDv1 are one block
        fresh = {key: data for key, data in ((normalize(cid), data) for cid, data in blocks)
                 if key not in batch.places}
        if not fresh:
            return
        with self._gc_lock:  # a block we dedupe against must not be collected meanwhile
            stored = self.present(list(fresh))
            # an upload of what is stored damaged (or gone) writes it anew: the 200 says it is on disk
            damaged = {cid for cid in stored if not self._intact(cid)}
            batch.reused.update(stored)  # a damaged row too: its replacement counts it as gone
        new = [(cid, data) for cid, data in fresh.items() if cid not in stored or cid in damaged]
        if not new:
            return
        if self._tail_maybe_dead and not batch.packs:
            self._cut_dead_tail()
        sized = [(cid, len(data)) for cid, data in new]
        size = sum(length for _, length in sized)
        with self._lock:
            added = sum(length for cid, length in sized if cid not in self._in_flight_blocks)
            if self.quota is not None and self._stored + self._in_flight + added > self.quota:
                raise StorageFull("store quota reached")
            self._take_in_flight(sized)
        try:
            places = self._packs.append(new, bulk, claim=batch.packs)
        except BaseException as exc:  # what was counted in flight goes back, whatever the failure
            with self._lock:
                self._give_in_flight(sized)
            if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
                raise StorageFull(os.strerror(exc.errno)) from exc
            raise
        for (cid, _), place in zip(new, places, strict=True):
            if cid not in damaged:  # the index still points at the bad copy until this commits
                _remember(self._verified, cid, True)
            batch.places[cid] = place
            batch.packs.add(place[0])
        batch.bytes += size
        batch.replaces |= damaged
        batch.replaced_bytes += sum(len(fresh[cid]) for cid in damaged)

    def _take_in_flight(self, blocks: list[tuple[bytes, int]]) -> None:
        """(Under _lock) blocks of (key, size) a batch writes, counted if no other batch does."""
        for key, size in blocks:
            if not self._in_flight_blocks[key]:
                self._in_flight += size
            self._in_flight_blocks[key] += 1

    def _give_in_flight(self, blocks: list[tuple[bytes, int]]) -> None:
        """(Under _lock) what `_take_in_flight` took for these blocks."""
        for key, size in blocks:
            self._in_flight_blocks[key] -= 1
            if not self._in_flight_blocks[key]:
                del self._in_flight_blocks[key]
                self._in_flight -= size

    def _intact(self, cid: bytes) -> bool:
        """Whether a stored block reads back whole and matching its CID (hashed once per
        process: `get` remembers it)."""
        if self._verified.get(cid):
            return True
        try:
            return self.get(cid) is not None
        except (CorruptBlock, OSError):  # unreadable (an I/O error) is damaged too
            return False

    def commit(self, batch: Batch) -> None:
        """Make a batch durable and visible (blocking). Uses the store's own SQLite
        connection: SQLite serialises it against the node's other writer."""
        if not batch.places:
            self.settle(batch, committed=True)
            return
        try:
            self.sync([batch])
            with self._transaction() as conn:
                rows = self.index_rows([batch])
                raced = blockindex.insert(conn, rows, self.replacing([batch])) < len(rows)
        except BaseException:
            self.settle(batch, committed=False)
            raise
        self.settle(batch, committed=True, unindexed=self.indexed_elsewhere([batch])[batch] if raced else 0)

    def abandon(self, batch: Batch) -> None:
        """A failed upload: its bytes stay unreferenced in the pack, invisible."""
        self.settle(batch, committed=False)

    # group commit: several batches made durable in one sync and one transaction of the
    # caller's (node/groupcommit.py) -------------------------------------------------------
    def sync(self, batches: list[Batch]) -> None:
        """Make the bytes of these batches durable (blocking)."""
        self._packs.sync(set().union(*(b.packs for b in batches)))

    def index_rows(self, batches: list[Batch]) -> list[blockindex.Row]:
        """The index rows that make these batches visible, for `blockindex.insert`."""
        return [(cid, *place) for b in batches for cid, place in b.places.items()]

    @staticmethod
    def replacing(batches: list[Batch]) -> set[bytes]:
        """The CIDs whose rows these batches' rows replace (the stored copy was damaged)."""
        return set().union(*(b.replaces for b in batches))

    def indexed_elsewhere(self, batches: list[Batch]) -> dict[Batch, int]:
        """Per batch, the bytes of its blocks whose rows did not land because another batch
        indexed the same block first (one content uploaded twice at once): written, and
        pointed to by nothing, as a failed upload's are."""
        conn = self._readers.get()
        out = {}
        for batch in batches:
            landed = blockindex.locate_many(conn, list(batch.places))
            out[batch] = sum(place[2] for cid, place in batch.places.items() if landed.get(cid) != place)
        return out

    def settle(self, batch: Batch, committed: bool, unindexed: int = 0) -> None:
        """The batch's rows committed (its bytes now count as stored, but for `unindexed`:
        those of rows another batch's took the place of) or never will."""
        with self._lock:
            if batch.settled:
                return
            batch.settled = True
            self._give_in_flight([(key, place[2]) for key, place in batch.places.items()])
            if committed:  # a replaced copy's bytes counted as stored already: they are dead now
                self._stored += batch.bytes - unindexed - batch.replaced_bytes
                self.abandoned += unindexed + batch.replaced_bytes
            else:
                self.abandoned += batch.bytes
                if batch.packs:  # it wrote
                    self._tail_maybe_dead = True
            self._open.discard(batch)

    # collection ------------------------------------------------------------------------
    def in_storage_order(self) -> list[tuple[bytes, int]]:
        """(cid, length) of every stored block, in the order their bytes lie on disk."""
        return blockindex.in_storage_order(self._readers.get())

    def last_read(self, cid: bytes) -> float:
        """When the block was last read (seconds since the epoch); 0 when not lately."""
        return self._recency.last(normalize(cid))

    def hold(self, root: bytes) -> Callable[[], None]:
        """Mark the DAG under `root` in use (a file or a CAR being sent) until the function
        returned is called: collection spares it as it spares a pinned one."""
        key = normalize(root)
        with self._lock:
            self._in_use[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._in_use[key] -= 1
                if not self._in_use[key]:
                    del self._in_use[key]

        return release

    def roots_in_use(self) -> set[bytes]:
        with self._lock:
            return set(self._in_use)

    def delete(self, cids: list[bytes], keep: Callable[[sqlite3.Connection], set[bytes]]) -> tuple[int, int]:
        """Delete blocks; (count, bytes) freed. Spared: those `keep` names, asked inside the
        deleting transaction, which no other writer interleaves with (so what is pinned by
        then is seen), and those an open upload or transfer dedupes against."""
        with self._gc_lock, self._transaction() as conn:
            spared = keep(conn).union(*(b.reused for b in list(self._open)))
            sizes = blockindex.lengths(conn, [c for c in cids if c not in spared])
            blockindex.delete(conn, list(sizes))
        freed = sum(sizes.values())
        with self._lock:
            self._stored -= freed
        return len(sizes), freed

    def compact(self, dead_ratio: float, seal_current: bool) -> tuple[int, int]:
        """Rewrite the packs of which at least `dead_ratio` is unreferenced bytes, and delete
        them; (packs compacted, bytes given back to the disk). `seal_current` (blocks were
        just freed): the pack being appended to is sealed first when it qualifies. Packs an
        open batch writes to are left for later."""
        with self._compact_lock:
            with self._lock:
                abandoned, self.abandoned = self.abandoned, 0  # what is dead now is judged by the packs
            try:
                return self._compact(dead_ratio, seal_current)
            except BaseException:
                with self._lock:  # not given back: the next round tries again (a full disk, say)
                    self.abandoned += abandoned
                raise

    def trim_current(self) -> int:
        """Give back the failed uploads' bytes at the end of the pack being appended to, by
        cutting it (see Packs.trim): on a full disk, where compaction has no room to copy."""
        with self._compact_lock:
            return self._trim()

    def _trim(self) -> int:
        """trim_current, the compaction lock held."""
        freed = self._packs.trim(self._written_by_open_batch, self._indexed_end)
        with self._lock:
            self.abandoned = max(0, self.abandoned - freed)
        return freed

    def _cut_dead_tail(self) -> None:
        """Before a batch's first write: a failed upload's bytes at the pack's tail are cut
        now, not at collection's next round. Once another upload's lie past them, only
        compaction gives them back, which copies, and so needs the room a full disk has not:
        an upload refused for want of space, then a small one stored, held the first one's
        bytes for good (every upload after: a 507). Left to the next batch while a compaction
        runs."""
        if self._compact_lock.acquire(blocking=False):  # else the next batch's first write tries
            try:
                self._tail_maybe_dead = False
                self._trim()
            finally:
                self._compact_lock.release()

    def _indexed_end(self, pack: int) -> int:
        return blockindex.indexed_end(self._readers.get(), pack)

    def _compact(self, dead_ratio: float, seal_current: bool) -> tuple[int, int]:
        self._packs.close_removed()
        live = blockindex.live_bytes_per_pack(self._readers.get())
        if seal_current and _mostly_dead(self._packs.end, live.get(self._packs.current, 0), dead_ratio):
            self._packs.roll()
        compacted = reclaimed = 0
        for pack, size in sorted(self._packs.sealed().items()):
            if _mostly_dead(size, live.get(pack, 0), dead_ratio) and not self._written_by_open_batch(pack):
                reclaimed += size - self._compact_pack(pack)
                compacted += 1
        return compacted, reclaimed

    def _written_by_open_batch(self, pack: int) -> bool:
        return any(pack in b.packs for b in list(self._open))

    def _compact_pack(self, pack: int) -> int:
        """Copy the indexed blocks of `pack` to the current pack, repoint the index, delete
        the old file; the bytes moved."""
        rows = blockindex.rows_in_pack(self._readers.get(), pack)
        moves: list[tuple[bytes, int, Place]] = []
        for start in range(0, len(rows), 64):
            chunk = rows[start : start + 64]
            blocks = [(cid, self._packs.read((pack, offset, length))) for cid, offset, length in chunk]
            places = self._packs.append(blocks)
            moves += [(cid, pack, place) for (cid, _, _), place in zip(chunk, places, strict=True)]
        self._packs.sync({place[0] for _, _, place in moves})
        with self._gc_lock, self._transaction() as conn:
            blockindex.repoint(conn, moves)
        self._packs.remove(pack)
        return sum(place[2] for _, _, place in moves)

    # checking and repair (node/fsck.py) -----------------------------------------------------
    def all_rows(self) -> list[blockindex.Row]:
        """Every index row (cid, pack, data offset, length), in the order the bytes lie."""
        return blockindex.all_rows(self._readers.get())

    def locate(self, cid: bytes) -> Place | None:
        return blockindex.locate(self._readers.get(), cid)

    def rows_in_pack(self, pack: int) -> list[tuple[bytes, int, int]]:
        """(cid, data offset, length) of every block indexed in `pack` now."""
        return blockindex.rows_in_pack(self._readers.get(), pack)

    @property
    def db_path(self) -> Path:
        return self._db_path

    def pack_sizes(self) -> dict[int, int]:
        """Size on disk of every pack, the one being appended to included."""
        return self._packs.sizes()

    def read_raw(self, place: Place) -> bytes:
        """The bytes at a place, unchecked (FileNotFoundError: no such pack any more)."""
        return self._packs.read(place)

    def in_flight(self) -> dict[int, list[tuple[int, int]]]:
        """Record spans (start, end) per pack written by uploads and transfers still open:
        bytes no index row points to yet that must not be called garbage."""
        spans: dict[int, list[tuple[int, int]]] = {}
        for batch in list(self._open):
            for cid, (pack, offset, length) in list(batch.places.items()):
                spans.setdefault(pack, []).append(record_span(cid, offset, length))
        return spans

    def drop(self, cids: list[bytes]) -> tuple[int, set[int]]:
        """Delete the index rows of damaged blocks, whatever holds them; (count, the packs
        that held them: their bytes are unreferenced now, for `reclaim`)."""
        with self._gc_lock, self._transaction() as conn:
            places = {normalize(cid): place for cid, place in blockindex.locate_many(conn, cids).items()}
            blockindex.delete(conn, list(places))
        for cid in places:
            self._verified.pop(cid, None)
        with self._lock:
            self._stored -= sum(length for _, _, length in places.values())
        return len(places), {pack for pack, _, _ in places.values()}

    def reclaim(self, packs: set[int]) -> int:
        """Rewrite these packs without their unreferenced bytes (the one being appended to is
        sealed first); packs an open upload or transfer writes to are left alone. The bytes
        given back to the disk."""
        with self._compact_lock:
            self._packs.close_removed()
            self._trim()  # an interrupted reclaim's copies, at the tail: cut, never copied again
            if self._packs.current in packs and not self._written_by_open_batch(self._packs.current):
                self._packs.roll()
            sealed = self._packs.sealed()
            return sum(sealed[pack] - self._compact_pack(pack) for pack in sorted(packs)
                       if pack in sealed and not self._written_by_open_batch(pack))

    def save_recency(self) -> None:
        """Save read recency if blocks were read since it was last saved (blocking), so that
        collection after a crash, not only after a clean stop, still frees the least
        recently read first."""
        self._recency.save()

    def close(self) -> None:
        with self._write_lock:
            self._recency.save()
            self._packs.close()
            if self._writer_conn is not None:
                self._writer_conn.close()
                self._writer_conn = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the store's own connection, one thread at a time."""
        with self._write_lock:
            if self._writer_conn is None:
                self._writer_conn = open_writer(self._db_path)
            with write_transaction(self._writer_conn) as conn:
                yield conn


class _ReadRecency:
    """When blocks were last read: the order collection frees them in. Hints only, kept
    next to the packs so that a restart (or a crash, from the last save) keeps the order."""

    def __init__(self, path: Path):
        self._path = path
        self._last = _load_recent(path)
        self._reads = self._reads_saved = 0

    def read(self, key: bytes) -> None:
        _remember(self._last, key, time.time())
        self._reads += 1

    def last(self, key: bytes) -> float:
        return self._last.get(key, 0.0)

    def save(self) -> None:
        reads = self._reads
        if reads != self._reads_saved:
            _save_recent(self._path, self._last)
            self._reads_saved = reads


def _remember(table: dict, key: bytes, value: object) -> None:
    if len(table) > HINTS_KEPT:  # bounded: these are hints, not state
        table.clear()
    table[key] = value


def _mostly_dead(size: int, live: int, dead_ratio: float) -> bool:
    return size > 0 and (size - live) / size >= dead_ratio


def _load_recent(path: Path) -> dict[bytes, float]:
    """Recency of reads as last saved (hints: anything unreadable is dropped)."""
    try:
        loaded = msgpack.unpackb(path.read_bytes(), raw=False)
    except (OSError, ValueError, msgpack.UnpackException):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: float(v) for k, v in loaded.items() if isinstance(k, bytes) and isinstance(v, (int, float))}


def _save_recent(path: Path, last: dict[bytes, float]) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_bytes(msgpack.packb(dict(last), use_bin_type=True))
        os.replace(tmp, path)
    except OSError:
        pass  # only ordering hints
