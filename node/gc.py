"""Garbage collection: above `--gc-above`, free unpinned blocks (least recently used first)
and reclaim the space by compacting packs that are mostly dead. Runs on a worker thread.

Never collected: blocks reachable from an unexpired pin (names, uploads in their grace
period, a name's previous target while the new one is fetched), and blocks an open batch
(an upload or transfer in progress) relies on. Pins made while we mark are caught by a
second look inside the deleting transaction, which no other writer can interleave with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .blockstore import BlockStore, CorruptBlock
from .cid import DAG_PB, codec_of, normalize
from .dagpb import decode
from .protobuf import DecodeError

log = logging.getLogger("edgefiles.gc")

COMPACT_DEAD_RATIO = 0.5


@dataclass
class GcReport:
    freed_blocks: int = 0
    freed_bytes: int = 0
    compacted_packs: int = 0
    reclaimed_bytes: int = 0


def reachable(store: BlockStore, roots: list[bytes], into: set[bytes] | None = None) -> set[bytes]:
    """CIDs of every block under `roots` that is stored here (normalized)."""
    live = into if into is not None else set()
    stack = [normalize(r) for r in roots]
    while stack:
        cid = stack.pop()
        if cid in live:
            continue
        live.add(cid)
        if codec_of(cid) != DAG_PB:
            continue
        try:
            data = store.get(cid)
        except CorruptBlock:
            continue
        if data is None:
            continue
        try:
            stack.extend(normalize(link.cid) for link in decode(data).links)
        except DecodeError:
            continue
    return live


def _pinned(conn, now: int) -> set[bytes]:
    sql = "SELECT DISTINCT root FROM pins WHERE expires IS NULL OR expires > ?"
    return {normalize(root) for (root,) in conn.execute(sql, (now,))}


def collect(store: BlockStore, limit: int) -> GcReport:
    """Free unpinned blocks until the store holds at most `limit` bytes, then compact."""
    report = GcReport()
    conn = store._writer()
    now = int(time.time())
    roots = _pinned(conn, now)
    live = reachable(store, list(roots))
    rows = conn.execute("SELECT cid, pack, offset, length FROM blocks").fetchall()
    excess = sum(r[3] for r in rows) - limit
    if excess > 0:
        dead = [r for r in rows if r[0] not in live]
        dead.sort(key=lambda r: (store.used.get(r[0], 0.0), r[1], r[2]))
        chosen = []
        for row in dead:
            if excess <= 0:
                break
            chosen.append(row)
            excess -= row[3]
        _delete(store, conn, chosen, roots, live, now, report)
    _compact(store, report)
    return report


def _delete(store: BlockStore, conn, chosen: list, roots: set[bytes], live: set[bytes], now: int,
            report: GcReport) -> None:
    with store.gc_lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            reachable(store, list(_pinned(conn, now) - roots), into=live)  # pinned since we marked
            kept: set[bytes] = set().union(*(b.reused for b in list(store.open_batches)))
            doomed = [r for r in chosen if r[0] not in live and r[0] not in kept]
            conn.executemany("DELETE FROM blocks WHERE cid = ?", [(r[0],) for r in doomed])
            conn.execute("DELETE FROM pins WHERE expires IS NOT NULL AND expires <= ?", (now,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    freed = sum(r[3] for r in doomed)
    with store._lock:
        store.stored_bytes -= freed
    report.freed_blocks, report.freed_bytes = len(doomed), freed


def _compact(store: BlockStore, report: GcReport) -> None:
    store.close_retired()
    conn = store._writer()
    live = dict(conn.execute("SELECT pack, SUM(length) FROM blocks GROUP BY pack").fetchall())
    if report.freed_bytes and _mostly_dead(store.current_size(), live.get(store.current_pack(), 0)):
        store.roll_pack()  # the pack being appended to holds the dead blocks: move past it
    for pack, size in sorted(store.pack_files().items()):
        if _mostly_dead(size, live.get(pack, 0)) and not store.pack_in_use(pack):
            moved = store.compact_pack(pack)
            report.compacted_packs += 1
            report.reclaimed_bytes += size - moved


def _mostly_dead(size: int, live: int) -> bool:
    return size > 0 and (size - live) / size >= COMPACT_DEAD_RATIO
