"""Garbage collection: above `--gc-above`, free unpinned blocks (least recently used first)
and reclaim the space by compacting packs that are mostly dead. Runs on a worker thread.

Never collected: blocks reachable from an unexpired pin (names, uploads in their grace
period, a name's previous target while the new one is fetched) or from a DAG being read out
(`BlockStore.hold`: a file or a CAR on its way to a client), and blocks an open batch (an
upload or transfer in progress) relies on. Pins made while we mark are caught by a
second look inside the deleting transaction, which no other writer can interleave with.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

from . import dagcbor, pins
from .blockstore import BlockStore, CorruptBlock
from .cid import DAG_CBOR, DAG_PB, codec_of, normalize
from .dagpb import child_cids_of

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
        try:
            stack.extend(child_cids(store, cid))
        except CorruptBlock:
            continue
    return live


def child_cids(store: BlockStore, cid: bytes) -> list[bytes]:
    """The blocks a stored block links to (normalized): none for a leaf, an absent block or
    one that hashes right but is no dag-pb (or dag-cbor) node; CorruptBlock when its bytes
    are damaged."""
    codec = codec_of(cid)
    if codec not in (DAG_PB, DAG_CBOR):
        return []
    data = store.get(cid)
    if data is None:
        return []
    if codec == DAG_CBOR:
        return [normalize(link) for link in dagcbor.links_of(data)]
    return child_cids_of(data)


def collect(store: BlockStore, limit: int) -> GcReport:
    """Free unpinned blocks until the store holds at most `limit` bytes, then compact."""
    report = GcReport()
    now = int(time.time())
    roots = spared_roots(store, store.read_connection(), now)
    live = reachable(store, list(roots))
    blocks = store.in_storage_order()
    excess = sum(length for _, length in blocks) - limit
    if excess > 0:
        dead = [(cid, length) for cid, length in blocks if cid not in live]
        dead.sort(key=lambda block: store.last_read(block[0]))  # stable: ties in storage order
        chosen = []
        for cid, length in dead:
            if excess <= 0:
                break
            chosen.append(cid)
            excess -= length

        def keep(conn: sqlite3.Connection) -> set[bytes]:
            """Inside the deleting transaction: what was pinned since we marked is kept too,
            and expired pins go."""
            pinned_since = spared_roots(store, conn, now) - roots
            pins.drop_expired(conn, now)
            return reachable(store, list(pinned_since), into=live)

        report.freed_blocks, report.freed_bytes = store.delete(chosen, keep)
    report.compacted_packs, report.reclaimed_bytes = store.compact(COMPACT_DEAD_RATIO, report.freed_bytes > 0)
    return report


def reclaim_abandoned(store: BlockStore) -> GcReport:
    """Give the disk back the bytes failed uploads left in the packs (nothing points to them,
    and the store's size and quota never counted them): the packs mostly dead now are
    compacted, the one being written included."""
    report = GcReport()
    trimmed = store.trim_current()  # first: it needs no room, where compaction copies
    report.compacted_packs, report.reclaimed_bytes = store.compact(COMPACT_DEAD_RATIO, True)
    report.reclaimed_bytes += trimmed
    return report


def spared_roots(store: BlockStore, conn: sqlite3.Connection, now: int) -> set[bytes]:
    """Roots whose DAGs are never collected: pinned ones, and those being read out."""
    return {normalize(root) for root in pins.live_roots(conn, now)} | store.roots_in_use()
