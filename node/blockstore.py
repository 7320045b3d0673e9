"""Durable, verified block store: append-only pack files plus an index in SQLite.

Why packs: one fdatasync per upload covers every block of it (small-file ingest would be
capped by per-file fsyncs otherwise), and a block becomes visible only when its index row
is committed after that sync, so a crash leaves at most unreferenced bytes at a pack's tail.
Each record also carries its CID, so the index can be rebuilt from the packs.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from .cid import normalize, verify_block
from .db import open_reader, open_writer

PACK_LIMIT = 1 << 30
EARLY_SYNC_BYTES = 64 << 20
RECORD_MAGIC = b"EFB1"
_HEADER = struct.Struct(">4sBI")  # magic, CID length, data length
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


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

    def put(self, cid: bytes, data: bytes) -> None:
        if cid in self.entries:
            return
        with self.store.gc_lock:  # a block we dedupe against must not be collected meanwhile
            if self.store.has(cid):
                self.reused.add(normalize(cid))
                return
        pack, offset = self.store._append(cid, data)
        self.store._remember(self.store.verified, normalize(cid), True)  # CIDs come from the bytes
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
        self.used: dict[bytes, float] = {}  # last read of recently read blocks, for GC order
        self.verified: dict[bytes, bool] = {}  # blocks hashed in this process
        self.quota = quota
        self.inflight = 0
        self._unsynced = 0
        self._early_sync = threading.Event()
        packs = sorted(int(p.stem.split("-")[1]) for p in root.glob("pack-*.dat"))
        self._pack = packs[-1] if packs else 1
        self._fd = self._open_pack(self._pack)
        self._end = os.fstat(self._fd).st_size
        self.stored_bytes = self.totals()[1]

    def _open_pack(self, pack: int) -> int:
        path = self.root / f"pack-{pack:06d}.dat"
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
        record = _HEADER.pack(RECORD_MAGIC, len(cid), len(data)) + cid
        with self._lock:
            if self.quota is not None and self.stored_bytes + self.inflight + len(data) > self.quota:
                raise StorageFull("store quota reached")
            if self._end >= PACK_LIMIT:
                os.close(self._fd)
                self._pack += 1
                self._fd = self._open_pack(self._pack)
                self._end = 0
            start = self._end
            try:
                _write_all(self._fd, record)
                _write_all(self._fd, data)
            except OSError as exc:
                os.ftruncate(self._fd, start)
                if exc.errno in STORAGE_ERRNOS:
                    raise StorageFull(os.strerror(exc.errno)) from exc
                raise
            self._end = start + len(record) + len(data)
            self.inflight += len(data)
            self._unsynced += len(record) + len(data)
            if self._unsynced >= EARLY_SYNC_BYTES and not self._early_sync.is_set():
                self._unsynced = 0
                self._early_sync.set()
                threading.Thread(target=self._sync_early, args=(self._pack,), daemon=True).start()
            return self._pack, start + len(record)

    def _sync_early(self, pack: int) -> None:
        """Start writing back a large upload while it still arrives, so the final sync is short."""
        try:
            self._sync_pack(pack)
        except OSError:
            pass  # only an optimisation: the final sync decides durability
        finally:
            self._early_sync.clear()

    def _sync_pack(self, pack: int) -> None:
        fd = os.open(self.root / f"pack-{pack:06d}.dat", os.O_RDONLY)
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
            os.close(self._fd)
            self._pack += 1
            self._fd = self._open_pack(self._pack)
            self._end = 0

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
        (self.root / f"pack-{pack:06d}.dat").unlink()
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
            pack, offset, length = where
            try:
                data = os.pread(self._read_fd(pack), length, offset)
                break
            except FileNotFoundError:  # compaction moved the block between lookup and read
                continue
        else:
            return None
        key = normalize(cid)
        if len(data) != length or not ((for_peer and key in self.verified) or verify_block(cid, data)):
            raise CorruptBlock(cid)
        self._remember(self.verified, key, True)
        self._remember(self.used, key, time.time())
        return data

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
                    fd = self._read_fds[pack] = os.open(self.root / f"pack-{pack:06d}.dat", os.O_RDONLY)
        return fd

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
            for fd in [*self._read_fds.values(), *self.retired_fds]:
                os.close(fd)
            self._read_fds.clear()
            self.retired_fds.clear()
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
