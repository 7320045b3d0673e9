"""Pack files: where the block store keeps block bytes (private to `node/`).

Why packs: one fdatasync per upload covers every block of it (small-file ingest would be
capped by per-file fsyncs otherwise). A record is a header (magic, CID length, data
length), the CID and the data, so the index can be rebuilt from the packs. Bulk writes
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
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from . import mapped

PACK_LIMIT = 1 << 30
EARLY_SYNC_BYTES = 64 << 20
RECORD_MAGIC = b"EFB1"
HEADER = struct.Struct(">4sBI")  # magic, CID length, data length
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
IOV_MAX = 1024
SCAN_WINDOW = 1 << 20  # bytes looked through at a time for the next record (an index rebuilt)
ALIGN = 4096  # O_DIRECT offsets and lengths: the largest logical block size in use
# Blocks at least this large are sent from a mapping of their pack (node/mapped.py); for
# smaller ones the copy saved is worth less than the mincore call that guards the mapping
MAPPED_MIN = 64 << 10

Place = tuple[int, int, int]  # (pack, data offset, length)
Records = list[tuple[bytes, bytes]]  # (header with CID, data) as laid out in a pack
RecordCheck = Callable[[bytes, int, int], bool]  # (CID, data offset, length): the record is whole

log = logging.getLogger("edgefiles.store")


class Packs:
    """The pack files of one store: appends to the newest, reads from any. Thread-safe."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._read_fds: dict[int, int] = {}
        self._retired_fds: list[int] = []
        self._maps: dict[int, mapped.Mapping] = {}  # packs read through a mapping, by `view`
        self._unmappable: set[int] = set()
        # every mapping made of the pack being appended to: none may be viewed where it is cut
        self._current_maps: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()
        numbers = sorted(int(p.stem.split("-")[1]) for p in root.glob("pack-*.dat"))
        self.current = numbers[-1] if numbers else 1
        self._fd = self._open_for_append(self.current)
        self.end = os.fstat(self._fd).st_size
        self._direct_fd: int | None = None  # the current pack opened O_DIRECT, for bulk writes
        self.direct_ok = hasattr(os, "O_DIRECT")  # off for good once the filesystem refuses
        self._staging: mmap.mmap | None = None  # page-aligned, reused: bulk writes copy into it
        self._unsynced = 0
        self._early_sync = threading.Event()

    # writing --------------------------------------------------------------------------
    def append(self, blocks: list[tuple[bytes, bytes]], bulk: bool = False,
               claim: set[int] | None = None) -> list[Place]:
        """Append (CID, data) records to the current pack in one write; where each landed.
        Nothing of a failed write stays behind. `claim` (a batch's packs) gets the pack added
        before the lock is let go, so no compaction can take the pack between the write and
        the batch knowing of it.

        `bulk` writes go past the page cache (O_DIRECT) in 4 KiB-aligned chunks, padded with
        zeros: on the VMs we measured, copying into fresh page-cache memory cost 0.06-0.7 s
        of CPU per 256 MiB, on the thread that receives, and then writeback. Past the cache
        it is one DMA from a reused buffer and the final fdatasync has nothing left to flush.
        """
        records = [(HEADER.pack(RECORD_MAGIC, len(cid), len(data)) + cid, data) for cid, data in blocks]
        with self._lock:
            if self.end >= PACK_LIMIT:
                self._switch(self.current + 1)
            start = self.end
            if claim is not None:
                claim.add(self.current)
            try:
                places = bulk and self.direct_ok and self._write_direct(records)
                return places or self._write_buffered(records)
            except OSError:
                os.ftruncate(self._fd, start)
                self.end = start
                raise

    def _write_buffered(self, records: Records) -> list[Place]:
        start = self.end
        _write_all(self._fd, [part for record in records for part in record])
        places = self._lay_out(records, start)
        self._unsynced += self.end - start
        if self._unsynced >= EARLY_SYNC_BYTES and not self._early_sync.is_set():
            self._unsynced = 0
            self._early_sync.set()
            threading.Thread(target=self._sync_early, args=(self.current,), daemon=True).start()
        return places

    def _write_direct(self, records: Records) -> list[Place] | None:
        """None when this filesystem cannot (tmpfs, some network filesystems): buffered then."""
        if self._direct_fd is None:
            try:
                self._direct_fd = os.open(self._path(self.current), os.O_WRONLY | os.O_DIRECT)
            except OSError:
                self.direct_ok = False
                return None
        aligned = -(-self.end // ALIGN) * ALIGN
        if aligned > self.end:  # the buffered tail before us ends mid-block: zeros up to it
            _write_all(self._fd, [bytes(aligned - self.end)])
            self.end = aligned
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
            self.direct_ok = False
            os.ftruncate(self._fd, self.end)  # nothing of the refused write may stay behind
            return None
        if written != chunk:  # a regular file takes less only when the disk or a size limit is reached
            raise OSError(errno.ENOSPC, f"short direct write: {written} of {chunk} bytes")
        places = self._lay_out(records, aligned)
        self.end = aligned + chunk
        return places

    def _lay_out(self, records: Records, start: int) -> list[Place]:
        """Places of records written back to back from `start`; moves the end past them."""
        places, at = [], start
        for header, data in records:
            places.append((self.current, at + len(header), len(data)))
            at += len(header) + len(data)
        self.end = at
        return places

    def trim(self, busy: Callable[[int], bool], last_record_end: Callable[[int], int]) -> int:
        """Cut the pack being appended to back to the end of its last indexed record (what lies
        past it is no record's: a failed upload's bytes), unless `busy(pack)` (an open batch
        writes to it); the bytes given back. It copies nothing, so it needs no free space.
        Both are asked under the lock: no batch can write, nor (having written) commit, between
        them and the cut."""
        with self._lock:
            if busy(self.current):
                return 0
            end = last_record_end(self.current)
            if end >= self.end:
                return 0
            self._maps.pop(self.current, None)
            unmapped = [mapped.close_unless_viewed(m) for m in list(self._current_maps)]  # each one tried
            if not all(unmapped):  # an answer is still sending bytes of it: cut at the next call
                return 0
            os.ftruncate(self._fd, end)
            freed, self.end = self.end - end, end
            return freed

    def roll(self) -> None:
        """Start appending to a fresh pack, so the current one can be compacted."""
        with self._lock:
            self._switch(self.current + 1)

    def _switch(self, pack: int) -> None:
        self._current_maps = weakref.WeakSet()  # a sealed pack is never cut
        os.close(self._fd)
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        self.current = pack
        self._fd = self._open_for_append(pack)
        self.end = 0

    def _open_for_append(self, pack: int) -> int:
        path = self._path(pack)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if created:  # the new pack's directory entry must survive a crash too
            dir_fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return fd

    # durability -------------------------------------------------------------------------
    def sync(self, packs: set[int]) -> None:
        """Make the bytes written to these packs durable (blocking)."""
        for pack in packs:
            fd = os.open(self._path(pack), os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def _sync_early(self, pack: int) -> None:
        """Start writing back a large upload while it still arrives, so the final sync is short."""
        try:
            self.sync({pack})
        except OSError:
            pass  # only an optimisation: the final sync decides durability
        finally:
            self._early_sync.clear()

    # reading ------------------------------------------------------------------------------
    def read(self, place: Place) -> bytes:
        """The bytes at a place, unchecked (FileNotFoundError: compaction removed its pack)."""
        pack, offset, length = place
        return os.pread(self._read_fd(pack), length, offset)

    def view(self, place: Place) -> bytes | memoryview:
        """`read`, but a large block may come as a read-only view of its pack's pages in the
        page cache, uncopied. The view keeps its pack's disk space taken, should compaction
        remove the pack meanwhile, and the pack from being cut short: it is for bytes on their
        way out (an answer's body), not for anything kept."""
        pack, offset, length = place
        if length >= MAPPED_MIN and mapped.AVAILABLE and pack not in self._unmappable:
            mapping = self._maps.get(pack)
            if mapping is None or offset + length > mapping.size:
                mapping = self._map(pack, offset + length)
            if mapping is not None and (view := mapping.view(offset, length)) is not None:
                return view
        return self.read(place)

    def _map(self, pack: int, end: int) -> mapped.Mapping | None:
        """A mapping of `pack` that reaches `end`: the one made before, or a new one of the
        pack as long as it is now (the pack being appended to outgrows its mappings). None
        when the file is shorter, is gone, or cannot be mapped."""
        fd = self._read_fd(pack)  # FileNotFoundError, as `read`'s: compaction removed the pack
        with self._lock:
            mapping = self._maps.get(pack)
            if mapping is not None and end <= mapping.size:
                return mapping
            if self._read_fds.get(pack) != fd or os.fstat(fd).st_size < end:  # removed since
                return None
            try:
                mapping = self._maps[pack] = mapped.Mapping(fd)
            except (OSError, ValueError) as exc:  # not ours (mincore would lie), no address space left
                log.debug("pack %d is read without a mapping: %s", pack, exc)
                self._unmappable.add(pack)
                return None
            if pack == self.current:
                self._current_maps.add(mapping.mapping)
            return mapping

    def _read_fd(self, pack: int) -> int:
        fd = self._read_fds.get(pack)
        if fd is None:
            with self._lock:  # readers run on several threads; open each pack once
                fd = self._read_fds.get(pack)
                if fd is None:
                    fd = self._read_fds[pack] = os.open(self._path(pack), os.O_RDONLY)
        return fd

    # compaction ----------------------------------------------------------------------------
    def sealed(self) -> dict[int, int]:
        """Size on disk of every pack except the one being appended to."""
        with self._lock:
            current = self.current
        sizes = self.sizes()
        sizes.pop(current, None)
        return sizes

    def sizes(self) -> dict[int, int]:
        """Size on disk of every pack, the current one included (a pack compaction removes
        while we look is left out)."""
        sizes = {}
        for path in self.root.glob("pack-*.dat"):
            try:
                sizes[int(path.stem.split("-")[1])] = path.stat().st_size
            except FileNotFoundError:
                continue
        return sizes

    def remove(self, pack: int) -> None:
        """Delete a compacted pack. Readers that looked a place in it up a moment ago still
        read it: its descriptor stays open until `close_removed`."""
        with self._lock:
            old = self._read_fds.pop(pack, None)
            self._maps.pop(pack, None)  # unmapped once the last view of it is let go
            if old is not None:
                self._retired_fds.append(old)
        self._path(pack).unlink()

    def close_removed(self) -> None:
        with self._lock:
            for fd in self._retired_fds:
                os.close(fd)
            self._retired_fds.clear()

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
            if self._direct_fd is not None:
                os.close(self._direct_fd)
            if self._staging is not None:
                self._staging.close()
            for fd in [*self._read_fds.values(), *self._retired_fds]:
                os.close(fd)
            self._read_fds.clear()
            self._retired_fds.clear()
            self._maps.clear()

    def records(self, pack: int, whole: RecordCheck) -> Iterator[tuple[bytes, int, int]]:
        """(CID, data offset, length) of each record in `pack` that `whole` accepts, in order."""
        with open(self._path(pack), "rb") as f:
            yield from records_in(f, os.fstat(f.fileno()).st_size, whole)

    def _path(self, pack: int) -> Path:
        return self.root / f"pack-{pack:06d}.dat"


def records_in(f: BinaryIO, size: int, whole: RecordCheck) -> Iterator[tuple[bytes, int, int]]:
    """(CID, data offset, length) of each record of a pack file of `size` bytes that `whole`
    accepts (its data hashes to its CID): what an index is rebuilt from. Anything else (a
    bulk write's zero padding, a record a crash cut off, with later ones written after it) is
    skipped up to the next record header."""
    at = 0
    while at + HEADER.size <= size:
        f.seek(at)
        magic, cid_length, length = HEADER.unpack(f.read(HEADER.size))
        if magic == RECORD_MAGIC:
            cid = f.read(cid_length)
            offset = at + HEADER.size + cid_length
            if len(cid) == cid_length and offset + length <= size and whole(cid, offset, length):
                yield cid, offset, length
                at = offset + length
                continue
        at = _next_header(f, at + 1, size)


def _next_header(f: BinaryIO, start: int, size: int) -> int:
    """Where the next record magic at or after `start` lies (`size` when there is none)."""
    while start < size:
        f.seek(start)
        window = f.read(SCAN_WINDOW + len(RECORD_MAGIC) - 1)
        found = window.find(RECORD_MAGIC)
        if found >= 0:
            return start + found
        start += SCAN_WINDOW
    return size


def record_span(cid: bytes, offset: int, length: int) -> tuple[int, int]:
    """(start, end) in its pack of the whole record whose data lies at `offset`: the header
    and the CID come before the data."""
    return offset - HEADER.size - len(cid), offset + length


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
