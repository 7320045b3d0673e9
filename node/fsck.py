"""Checking and repairing a node's store: `edgefiles fsck`, its admin-socket and HTTP forms.

What is checked: SQLite's own `integrity_check`; every indexed block read back and hashed
against its CID (rows that point past the end of a pack, or into a pack that is gone, count
as corrupt: their bytes are not there); every pinned root and every name's target walked for
blocks the store lacks; and pack bytes no index row points to (a crash's torn tail, refused
uploads, collected blocks). Unreferenced bytes are reported and reclaimed by `--repair`, but
they are not a problem: a store leaves them behind by design until compaction.

Works on a running node too: the index is read once (a snapshot), and bytes that uploads or
transfers still in progress wrote, or that were committed after the snapshot, are never taken
for garbage. Runs on a worker thread; `progress(phase, done, total)` is called as it goes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .blockstore import BlockStore, CorruptBlock
from .cid import is_identity, normalize, to_str, verify_block
from .gc import child_cids
from .packs import ALIGN, record_span
from .pins import live_roots

Progress = Callable[[str, int, int], None]
Span = tuple[int, int]  # (start, end) of bytes in a pack
VERIFY_GROUP = 8 << 20  # bytes of blocks read and hashed per task
VERIFY_THREADS = 2  # hashing releases the GIL: both cores


@dataclass
class Report:
    """What `fsck` found (and, after a repair, what is left)."""

    ok: bool = True
    blocks: int = 0  # blocks read and hashed
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)  # CIDs whose stored bytes do not match
    missing: list[str] = field(default_factory=list)  # CIDs pinned DAGs or named targets need
    names_incomplete: list[str] = field(default_factory=list)
    roots_checked: int = 0
    sqlite: list[str] = field(default_factory=lambda: ["ok"])  # PRAGMA integrity_check's answer
    rows_past_end: int = 0  # index rows pointing past a pack's end or into a missing pack
    unreferenced_bytes: int = 0  # pack bytes no row points to (reclaimable, not a problem)
    packs: int = 0
    repaired: dict | None = None  # what --repair did: dropped, fetched, reclaimed_bytes
    seconds: float = 0.0

    def settle(self) -> Report:
        self.ok = not (self.corrupt or self.missing or self.names_incomplete or self.sqlite != ["ok"])
        return self

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class _Findings:
    """The check's results in the form repair needs (raw CIDs, packs)."""

    corrupt: set[bytes] = field(default_factory=set)
    missing: set[bytes] = field(default_factory=set)
    incomplete_roots: set[bytes] = field(default_factory=set)
    unreferenced: dict[int, int] = field(default_factory=dict)  # pack -> bytes


NamedTarget = tuple[str, bytes]  # (label a user knows the name by, its target)


class Fsck:
    """One check of a store, and the repair of what it found. Blocking: a worker thread's."""

    def __init__(self, store: BlockStore, named: Callable[[], list[NamedTarget]],
                 progress: Progress | None = None):
        self.store = store
        self._named = named
        self._progress = progress or (lambda phase, done, total: None)

    def check(self) -> tuple[Report, _Findings]:
        started = time.monotonic()
        report, found = Report(), _Findings()
        report.sqlite = self._integrity()
        sizes = self.store.pack_sizes()
        try:
            rows = self.store.all_rows()
        except sqlite3.DatabaseError as exc:
            report.sqlite.append(f"the blocks index cannot be read: {exc}")
            return report.settle(), found
        report.packs = len(sizes)
        self._verify(rows, report, found)
        self._walk(rows, report, found)
        self._unreferenced(rows, sizes, report, found)
        report.corrupt = sorted(to_str(c) for c in found.corrupt)
        report.seconds = round(time.monotonic() - started, 3)
        return report.settle(), found

    # SQLite ------------------------------------------------------------------------------
    def _integrity(self) -> list[str]:
        self._progress("sqlite", 0, 1)
        conn = sqlite3.connect(self.store.db_path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            answer = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            answer = [f"the database cannot be read: {exc}"]
        finally:
            conn.close()
        self._progress("sqlite", 1, 1)
        return answer

    # blocks ------------------------------------------------------------------------------
    def _verify(self, rows: list, report: Report, found: _Findings) -> None:
        total = sum(row[3] for row in rows)
        done = 0
        self._progress("blocks", 0, total)
        with ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="fsck") as pool:
            results = pool.map(self._verify_group, _groups(rows))
            for bad, past_end, checked, size in results:
                found.corrupt.update(bad)
                report.rows_past_end += past_end
                report.blocks += checked
                done += size
                self._progress("blocks", done, total)
        report.bytes = done

    def _verify_group(self, rows: list) -> tuple[list[bytes], int, int, int]:
        bad, past_end, checked = [], 0, 0
        for cid, pack, offset, length in rows:
            verdict = self._verify_row(cid, (pack, offset, length))
            if verdict is None:
                continue  # collected or moved since the snapshot: not ours to judge
            checked += 1
            if verdict != "ok":
                bad.append(cid)
                past_end += verdict == "past end"
        return bad, past_end, checked, sum(row[3] for row in rows)

    def _verify_row(self, cid: bytes, place: tuple[int, int, int]) -> str | None:
        """"ok", "corrupt", "past end", or None when the row changed under us (a running node
        compacted or collected it), in which case it is checked where it is now, if anywhere.
        Judged by the bytes read, not by the pack sizes taken earlier: a block committed after
        they were taken lies past them, whole."""
        try:
            data = self.store.read_raw(place)
        except FileNotFoundError:
            data = None
        if data is None or len(data) != place[2]:
            now = self.store.locate(cid)
            if now is None:
                return None
            if tuple(now) != place:
                return self._verify_row(cid, now)
            return "past end"
        return "ok" if verify_block(cid, data) else "corrupt"

    def still_damaged(self, cids: set[bytes]) -> list[bytes]:
        """Those of `cids` that are damaged where their rows point now: the ones to drop."""
        return [cid for cid in cids
                if (place := self.store.locate(cid)) is not None
                and self._verify_row(cid, tuple(place)) in ("corrupt", "past end")]

    # DAGs --------------------------------------------------------------------------------
    def _walk(self, rows: list, report: Report, found: _Findings) -> None:
        """Every pinned root and named target: which blocks they need are absent."""
        indexed = {row[0] for row in rows}
        named = self._named()
        roots = {normalize(r) for r in live_roots(self.store.read_connection(), int(time.time()))}
        roots.update(normalize(cid) for _, cid in named)
        links: dict[bytes, list[bytes]] = {}
        complete: dict[bytes, bool] = {}
        self._progress("dags", 0, len(roots))
        for i, root in enumerate(sorted(roots)):
            gaps = self._gaps(root, indexed, found.corrupt, links)
            complete[root] = not gaps
            if gaps:
                found.missing.update(gaps)
                found.incomplete_roots.add(root)
            self._progress("dags", i + 1, len(roots))
        report.roots_checked = len(roots)
        report.missing = sorted(to_str(c) for c in found.missing)
        report.names_incomplete = sorted({label for label, cid in named if not complete[normalize(cid)]})

    def _gaps(self, root: bytes, indexed: set[bytes], corrupt: set[bytes],
              links: dict[bytes, list[bytes]]) -> set[bytes]:
        """Blocks of the DAG under `root` that are not here, or are here damaged."""
        gaps: set[bytes] = set()
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid in seen or is_identity(cid):
                continue
            seen.add(cid)
            if cid in corrupt or not (cid in indexed or self.store.has(cid)):
                gaps.add(cid)
                continue
            children = links.get(cid)
            if children is None:
                try:
                    children = child_cids(self.store, cid)
                except CorruptBlock:
                    corrupt.add(cid)  # damaged since the blocks were hashed
                    children = []
                if children:  # inner nodes only: one entry per leaf would cost more than a look
                    links[cid] = children
            stack.extend(children)
        return gaps

    # pack bytes --------------------------------------------------------------------------
    def _unreferenced(self, rows: list, sizes: dict[int, int], report: Report, found: _Findings) -> None:
        spans: dict[int, list[Span]] = {pack: [] for pack in sizes}
        for cid, pack, offset, length in rows:
            if pack in spans:
                spans[pack].append(record_span(cid, offset, length))
        self._progress("packs", 0, len(sizes))
        for i, (pack, size) in enumerate(sorted(sizes.items())):
            candidates = [gap for gap in gaps_between(spans[pack], size) if not self._padding(pack, gap)]
            if candidates:
                candidates = self._still_unreferenced(pack, candidates)
            unreferenced = sum(end - start for start, end in candidates)
            if unreferenced:
                found.unreferenced[pack] = unreferenced
            self._progress("packs", i + 1, len(sizes))
        report.unreferenced_bytes = sum(found.unreferenced.values())

    def _padding(self, pack: int, gap: Span) -> bool:
        """Zeros before a record written on a 4 KiB boundary (a bulk write) are layout."""
        start, end = gap
        if end % ALIGN or end - start >= ALIGN:
            return False
        try:
            return not any(self.store.read_raw((pack, start, end - start)))
        except FileNotFoundError:
            return True

    def _still_unreferenced(self, pack: int, gaps: list[Span]) -> list[Span]:
        """Gaps less what was committed since the snapshot and what open batches wrote (none
        of a pack compaction has removed meanwhile: its live blocks moved, the rest is gone)."""
        if pack not in self.store.pack_sizes():
            return []
        writing = self.store.in_flight().get(pack, [])  # before the rows: a batch may commit between
        now = [record_span(cid, offset, length) for cid, offset, length in self.store.rows_in_pack(pack)]
        busy = sorted(now + writing)
        return subtract(gaps, busy)

    # repair ------------------------------------------------------------------------------
    def repair(self, found: _Findings, fetch: Callable[[list[bytes]], int]) -> dict:
        """Drop damaged blocks, fetch what pinned or named DAGs lack (`fetch` asks the swarm:
        0 when alone), give unreferenced pack bytes back; what was done."""
        self._progress("repair", 0, 3)
        damaged = self.still_damaged(found.corrupt)  # a row may have moved to good bytes meanwhile
        dropped, holding = self.store.drop(sorted(damaged)) if damaged else (0, set())
        self._progress("repair", 1, 3)
        roots = sorted(found.incomplete_roots)
        fetched = fetch(roots) if roots else 0
        self._progress("repair", 2, 3)
        packs = set(found.unreferenced) | holding  # the dropped blocks' bytes are given back too
        reclaimed = self.store.reclaim(packs) if packs else 0
        self._progress("repair", 3, 3)
        return {"dropped": dropped, "dropped_cids": sorted(to_str(c) for c in damaged),
                "fetched_bytes": fetched, "reclaimed_bytes": reclaimed}


def run(store: BlockStore, named: Callable[[], list[NamedTarget]], repair: bool,
        fetch: Callable[[list[bytes]], int], progress: Progress | None = None) -> Report:
    """Check, and with `repair` mend and check again: the report then says what is left."""
    fsck = Fsck(store, named, progress)
    report, found = fsck.check()
    if not repair:
        return report
    started = report.seconds
    done = fsck.repair(found, fetch)
    report, _ = fsck.check()
    report.repaired = done
    report.seconds = round(report.seconds + started, 3)
    return report


# pure helpers ------------------------------------------------------------------------------
def _groups(rows: list) -> Iterable[list]:
    """Rows in runs of about `VERIFY_GROUP` bytes, one task each."""
    group, size = [], 0
    for row in rows:
        group.append(row)
        size += row[3]
        if size >= VERIFY_GROUP:
            yield group
            group, size = [], 0
    if group:
        yield group


def gaps_between(spans: list[Span], size: int) -> list[Span]:
    """The parts of [0, size) that no span covers (spans may overlap or run past `size`)."""
    gaps, at = [], 0
    for start, end in sorted(spans):
        if start > at:
            gaps.append((at, min(start, size)))
        at = max(at, end)
    if at < size:
        gaps.append((at, size))
    return [(s, e) for s, e in gaps if e > s]


def subtract(gaps: list[Span], busy: list[Span]) -> list[Span]:
    """The parts of `gaps` (sorted, disjoint) that no span of `busy` covers."""
    out = []
    for start, end in gaps:
        inside = [(max(s, start), min(e, end)) for s, e in busy if s < end and e > start]
        out += [(start + s, start + e) for s, e in gaps_between([(s - start, e - start) for s, e in inside],
                                                                end - start)]
    return out
