"""Durable, verified block store: append-only pack files plus an index in SQLite.

Why packs: one fdatasync per upload covers every block of it (small-file ingest would be
capped by per-file fsyncs otherwise), and a block becomes visible only when its index row
is committed after that sync, so a crash leaves at most unreferenced bytes at a pack's tail.
Each record also carries its CID, so the index can be rebuilt from the packs. Bulk writes
(blocks fetched by Bitswap) start on a 4 KiB boundary; the bytes before one, back to the
previous record, are zeros, which a reader of the pack skips up to the next boundary.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import struct
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from .cid import normalize, verify_block
from .db import open_reader, open_writer

PACK_LIMIT = 1 << 30
EARLY_SYNC_BYTES = 64 << 20
RECORD_MAGIC = b"EFB1"
log = logging.getLogger("edgefiles.store")
_HEADER = struct.Struct(">4sBI")  # magic, CID length, data length
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
Records = list[tuple[bytes, bytes]]  # (header with CID, data) as laid out in a pack
Places = list[tuple[int, int]]  # (pack, data offset) per record
IOV_MAX = 1024
RECENT_READS = "recent-reads.msgpack"  # next to the packs: read recency kept across restarts
ALIGN = 4096  # O_DIRECT offsets and lengths: the largest logical block size in use


class CorruptBlock(Exception):
    """A stored block no longer matches its CID."""

    def __init__(self, cid: bytes):
        super().__init__(f"block {cid.hex()} fails its hash check")
        self.cid = cid


class StorageFull(Exception):
    """The disk or the store quota has no room for the upload."""


@dataclass(eq=False)  # identity-hashed: the store keeps a weak set of open batches
class Batch:
    """Blocks written by one upload or transfer; visible only after `BlockStore.commit`."""

    store: BlockStore
    entries: dict[bytes, tuple[int, int, int]] = field(default_factory=dict)
    packs: set[int] = field(default_factory=set)
    bytes: int = 0
    settled: bool = False
    reused: set[bytes] = field(default_factory=set)  # already stored: kept from collection

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, cid: bytes) -> bool:
        return cid in self.entries

    def read(self, cid: bytes) -> bytes | None:
        """A block written in this batch, before it is committed (its CID was checked when
        it was put, and its pack is kept while the batch is open); None when it is not here."""
        place = self.entries.get(cid)
        return None if place is None else self.store.read_place(place)

    def put(self, cid: bytes, data: bytes) -> None:
        self.put_many([(cid, data)])

    def put_many(self, blocks: list[tuple[bytes, bytes]], bulk: bool = False) -> None:
        """Blocks whose CIDs come from their bytes; those stored already are only marked
        reused. One index query and one write for all of them. `bulk`: a transfer's
        megabytes, written past the page cache (see `BlockStore._append_many`)."""
        fresh = {cid: data for cid, data in blocks if cid not in self.entries}
        if not fresh:
            return
        with self.store.gc_lock:  # a block we dedupe against must not be collected meanwhile
            stored = self.store.present(list(fresh))
            self.reused.update(normalize(cid) for cid in stored)
        new = [(cid, data) for cid, data in fresh.items() if cid not in stored]
        for (cid, data), (pack, offset) in zip(new, self.store._append_many(new, bulk), strict=True):
            self.store._remember(self.store.verified, normalize(cid), True)
            self.entries[cid] = (pack, offset, len(data))
            self.packs.add(pack)
            self.bytes += len(data)


class BlockStore:
    def __init__(self, root: Path, db_path: Path, quota: int | None = None):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._db_path = db_path
        self._lock = threading.Lock()
        self._local = threading.local()
        self._read_fds: dict[int, int] = {}
        self._write_conn = None
        self.gc_lock = threading.Lock()
        self.open_batches: weakref.WeakSet[Batch] = weakref.WeakSet()
        self.retired_fds: list[int] = []
        self.used = _load_recent(root / RECENT_READS)  # last read of recently read blocks, for GC order
        self._reads_saved = self.reads = 0  # reads counted, and their count when `used` was saved
        self.verified: dict[bytes, bool] = {}  # blocks hashed in this process
        self.quota = quota
        self.inflight = 0
        self._unsynced = 0
        self._early_sync = threading.Event()
        packs = sorted(int(p.stem.split("-")[1]) for p in root.glob("pack-*.dat"))
        self._pack = packs[-1] if packs else 1
        self._fd = self._open_pack(self._pack)
        self._end = os.fstat(self._fd).st_size
        self._direct_fd: int | None = None  # the current pack opened O_DIRECT, for bulk writes
        self._direct_ok = hasattr(os, "O_DIRECT")  # off for good once the filesystem refuses
        self._staging: mmap.mmap | None = None  # page-aligned, reused: bulk writes copy into it
        self.stored_bytes = self.totals()[1]

    def _open_pack(self, pack: int) -> int:
        path = self._pack_path(pack)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if created:  # the new pack's directory entry must survive a crash too
            dir_fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return fd

    def _reader(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_reader(self._db_path)
        return conn

    def batch(self) -> Batch:
        batch = Batch(self)
        self.open_batches.add(batch)
        return batch

    def _append(self, cid: bytes, data: bytes) -> tuple[int, int]:
        return self._append_many([(cid, data)])[0]

    def _append_many(self, blocks: list[tuple[bytes, bytes]], bulk: bool = False) -> Places:
        """Append records to the current pack in one write; (pack, data offset) of each.

        `bulk` writes go past the page cache (O_DIRECT) in 4 KiB-aligned chunks, padded with
        zeros: on the VMs we measured, copying into fresh page-cache memory cost 0.06-0.7 s
        of CPU per 256 MiB, on the thread that receives, and then writeback. Past the cache
        it is one DMA from a reused buffer and the final fdatasync has nothing left to flush.
        """
        if not blocks:
            return []
        records = [(_HEADER.pack(RECORD_MAGIC, len(cid), len(data)) + cid, data) for cid, data in blocks]
        size = sum(len(data) for _, data in blocks)
        with self._lock:
            if self.quota is not None and self.stored_bytes + self.inflight + size > self.quota:
                raise StorageFull("store quota reached")
            if self._end >= PACK_LIMIT:
                self._switch_pack(self._pack + 1)
            start = self._end
            try:
                places = bulk and self._direct_ok and self._write_direct(records)
                if not places:
                    places = self._write_buffered(records)
            except OSError as exc:
                os.ftruncate(self._fd, start)
                self._end = start
                if exc.errno in STORAGE_ERRNOS:
                    raise StorageFull(os.strerror(exc.errno)) from exc
                raise
            self.inflight += size
            return places

    def _write_buffered(self, records: Records) -> Places:
        start = self._end
        _write_all(self._fd, [part for record in records for part in record])
        places = self._lay_out(records, start)
        self._unsynced += self._end - start
        if self._unsynced >= EARLY_SYNC_BYTES and not self._early_sync.is_set():
            self._unsynced = 0
            self._early_sync.set()
            threading.Thread(target=self._sync_early, args=(self._pack,), daemon=True).start()
        return places

    def _write_direct(self, records: Records) -> Places | None:
        """None when this filesystem cannot (tmpfs, some network filesystems): buffered then."""
        if self._direct_fd is None:
            try:
                self._direct_fd = os.open(self._pack_path(self._pack), os.O_WRONLY | os.O_DIRECT)
            except OSError:
                self._direct_ok = False
                return None
        aligned = -(-self._end // ALIGN) * ALIGN
        if aligned > self._end:  # the buffered tail before us ends mid-block: zeros up to it
            _write_all(self._fd, [bytes(aligned - self._end)])
            self._end = aligned
        used = sum(len(header) + len(data) for header, data in records)
        chunk = -(-used // ALIGN) * ALIGN
        if self._staging is None or len(self._staging) < chunk:
            self._staging = mmap.mmap(-1, max(chunk, 8 << 20))
        view, at = memoryview(self._staging), 0
        for record in records:
            for part in record:
                view[at : at + len(part)] = part
                at += len(part)
        view[used:chunk] = bytes(chunk - used)
        try:
            written = os.pwrite(self._direct_fd, view[:chunk], aligned)
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS:
                raise
            # EINVAL (an alignment it does not take), EOPNOTSUPP, ...: buffered from now on
            log.warning("direct writes refused by this filesystem (%s); writing through the page cache",
                        os.strerror(exc.errno or 0))
            self._direct_ok = False
            os.ftruncate(self._fd, self._end)  # nothing of the refused write may stay behind
            return None
        if written != chunk:
            raise OSError(errno.EIO, f"short direct write: {written} of {chunk} bytes")
        places = self._lay_out(records, aligned)
        self._end = aligned + chunk
        return places

    def _lay_out(self, records: Records, start: int) -> Places:
        """Data offsets of records written back to back from `start`; moves the end past them."""
        places, at = [], start
        for header, data in records:
            places.append((self._pack, at + len(header)))
            at += len(header) + len(data)
        self._end = at
        return places

    def _switch_pack(self, pack: int) -> None:
        os.close(self._fd)
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        self._pack = pack
        self._fd = self._open_pack(pack)
        self._end = 0

    def _pack_path(self, pack: int) -> Path:
        return self.root / f"pack-{pack:06d}.dat"

    def _sync_early(self, pack: int) -> None:
        """Start writing back a large upload while it still arrives, so the final sync is short."""
        try:
            self._sync_pack(pack)
        except OSError:
            pass  # only an optimisation: the final sync decides durability
        finally:
            self._early_sync.clear()

    def _sync_pack(self, pack: int) -> None:
        fd = os.open(self._pack_path(pack), os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def sync_packs(self, packs: set[int]) -> None:
        """Make the bytes written to these packs durable (blocking: call from a worker thread)."""
        for pack in packs:
            self._sync_pack(pack)

    def index_rows(self, batch: Batch) -> list[tuple[bytes, int, int, int]]:
        return [(cid, pack, off, length) for cid, (pack, off, length) in batch.entries.items()]

    def committed(self, batch: Batch) -> None:
        with self._lock:
            if batch.settled:
                return
            batch.settled = True
            self.stored_bytes += batch.bytes
            self.inflight -= batch.bytes
            self.open_batches.discard(batch)

    def abandoned(self, batch: Batch) -> None:
        """A failed batch: its bytes stay unreferenced in the pack, invisible."""
        with self._lock:
            if batch.settled:
                return
            batch.settled = True
            self.inflight -= batch.bytes
            self.open_batches.discard(batch)

    def commit_sync(self, batch: Batch) -> None:
        """Make a batch durable and visible from a worker thread (blocks fetched from peers).

        Uses its own SQLite connection: SQLite serialises it against the asyncio side's writer.
        """
        if not batch.entries:
            self.committed(batch)
            return
        try:
            self.sync_packs(batch.packs)
            conn = self._writer()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO blocks VALUES (?, ?, ?, ?)", self.index_rows(batch))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            self.abandoned(batch)
            raise
        self.committed(batch)

    # garbage collection support (called from a worker thread) -----------------------------
    def pack_files(self) -> dict[int, int]:
        """Size on disk of every pack except the one being appended to."""
        with self._lock:
            current = self._pack
        return {
            int(p.stem.split("-")[1]): p.stat().st_size
            for p in self.root.glob("pack-*.dat")
            if int(p.stem.split("-")[1]) != current
        }

    def current_pack(self) -> int:
        return self._pack

    def current_size(self) -> int:
        return self._end

    def roll_pack(self) -> None:
        """Start appending to a fresh pack, so the current one can be compacted."""
        with self._lock:
            self._switch_pack(self._pack + 1)

    def pack_in_use(self, pack: int) -> bool:
        """Whether an upload or transfer still has unindexed blocks in `pack`."""
        return any(pack in b.packs for b in list(self.open_batches))

    def compact_pack(self, pack: int) -> int:
        """Copy the indexed blocks of `pack` to the current pack, repoint the index, delete
        the old file. Readers that looked the old place up a moment ago still read it: its
        descriptor stays open until the next compaction."""
        conn = self._writer()
        rows = conn.execute("SELECT cid, offset, length FROM blocks WHERE pack = ?", (pack,)).fetchall()
        moved, new_rows, packs = 0, [], set()
        fd = self._read_fd(pack)
        for cid, offset, length in rows:
            data = os.pread(fd, length, offset)
            new_pack, new_offset = self._append(cid, data)
            with self._lock:
                self.inflight -= length  # already counted in stored_bytes
            new_rows.append((new_pack, new_offset, cid, pack))
            packs.add(new_pack)
            moved += length
        self.sync_packs(packs)
        with self.gc_lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE blocks SET pack = ?, offset = ? WHERE cid = ? AND pack = ?", new_rows)
            conn.execute("COMMIT")
        with self._lock:
            old = self._read_fds.pop(pack, None)
            if old is not None:
                self.retired_fds.append(old)
        self._pack_path(pack).unlink()
        return moved

    def close_retired(self) -> None:
        with self._lock:
            for fd in self.retired_fds:
                os.close(fd)
            self.retired_fds.clear()

    def _writer(self):
        with self._lock:
            if self._write_conn is None:
                self._write_conn = open_writer(self._db_path)
            return self._write_conn

    def locate(self, cid: bytes) -> tuple[int, int, int] | None:
        row = self._reader().execute(
            "SELECT pack, offset, length FROM blocks WHERE cid = ?", (normalize(cid),)
        ).fetchone()
        return row

    def totals(self) -> tuple[int, int]:
        """(number of blocks, their bytes)."""
        return tuple(
            self._reader().execute("SELECT COUNT(*), COALESCE(SUM(length), 0) FROM blocks").fetchone()
        )

    def pinned_roots(self, now: int) -> int:
        sql = "SELECT COUNT(DISTINCT root) FROM pins WHERE expires IS NULL OR expires > ?"
        return self._reader().execute(sql, (now,)).fetchone()[0]

    def present(self, cids: list[bytes]) -> set[bytes]:
        """Which of `cids` are stored (as given), in a few queries rather than one per CID."""
        out: set[bytes] = set()
        reader = self._reader()
        for i in range(0, len(cids), 500):
            chunk = cids[i : i + 500]
            by_key = {normalize(c): c for c in chunk}
            sql = f"SELECT cid FROM blocks WHERE cid IN ({','.join('?' * len(by_key))})"
            out.update(by_key[row[0]] for row in reader.execute(sql, list(by_key)))
        return out

    def has(self, cid: bytes) -> bool:
        return self.locate(cid) is not None

    def read_place(self, place: tuple[int, int, int]) -> bytes:
        """The bytes at (pack, offset, length), unchecked: `get` verifies what it reads; a
        block of a batch not committed yet had its CID checked when it arrived, and its pack
        is kept while the batch is open."""
        pack, offset, length = place
        return os.pread(self._read_fd(pack), length, offset)

    def get(self, cid: bytes, for_peer: bool = False) -> bytes | None:
        """The verified block, None when absent; CorruptBlock when its bytes are damaged.

        `for_peer`: a block hashed once in this process (on ingest or an earlier read) is not
        hashed again for Bitswap, whose receiver checks every block against its CID anyway.
        HTTP reads always hash: they must never send a wrong byte.
        """
        for _ in range(2):
            where = self.locate(cid)
            if where is None:
                return None
            try:
                data = self.read_place(where)
                break
            except FileNotFoundError:  # compaction moved the block between lookup and read
                continue
        else:
            return None
        key = normalize(cid)
        if len(data) != where[2] or not ((for_peer and key in self.verified) or verify_block(cid, data)):
            raise CorruptBlock(cid)
        self._remember(self.verified, key, True)
        self._remember(self.used, key, time.time())
        self.reads += 1
        return data

    def save_recency(self) -> None:
        """Save read recency if blocks were read since it was last saved (blocking: a worker
        thread), so that collection after a crash, not only after a clean stop, still frees
        the least recently read first."""
        reads = self.reads
        if reads != self._reads_saved:
            _save_recent(self.root / RECENT_READS, self.used)
            self._reads_saved = reads

    @staticmethod
    def _remember(table: dict, key: bytes, value: object) -> None:
        if len(table) > 200_000:  # bounded: these are hints, not state
            table.clear()
        table[key] = value

    def _read_fd(self, pack: int) -> int:
        fd = self._read_fds.get(pack)
        if fd is None:
            with self._lock:  # readers run on several threads; open each pack once
                fd = self._read_fds.get(pack)
                if fd is None:
                    fd = self._read_fds[pack] = os.open(self._pack_path(pack), os.O_RDONLY)
        return fd

    def close(self) -> None:
        with self._lock:
            self.save_recency()
            os.close(self._fd)
            if self._direct_fd is not None:
                os.close(self._direct_fd)
            if self._staging is not None:
                self._staging.close()
            for fd in [*self._read_fds.values(), *self.retired_fds]:
                os.close(fd)
            self._read_fds.clear()
            self.retired_fds.clear()
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None


def _load_recent(path: Path) -> dict[bytes, float]:
    """Recency of reads as last saved (hints: anything unreadable is dropped)."""
    try:
        loaded = msgpack.unpackb(path.read_bytes(), raw=False)
    except (OSError, ValueError, msgpack.UnpackException):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: float(v) for k, v in loaded.items() if isinstance(k, bytes) and isinstance(v, (int, float))}


def _save_recent(path: Path, used: dict[bytes, float]) -> None:
    """So that garbage collection after a restart still frees the least recently read first."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_bytes(msgpack.packb(dict(used), use_bin_type=True))
        os.replace(tmp, path)
    except OSError:
        pass  # only ordering hints


def _write_all(fd: int, parts: list[bytes]) -> None:
    """All parts, in as few writev calls as the kernel allows (one per record showed)."""
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        batch = views[:IOV_MAX]
        written = os.writev(fd, batch)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]
