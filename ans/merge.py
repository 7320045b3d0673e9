"""Last-writer-wins merge of name records by (HLC, writer peer id): pure functions."""

from __future__ import annotations

from collections.abc import Iterable

from .record import NameRecord, encode

MAX_CLOCK_SKEW_MS = 5 * 60 * 1000

Table = dict[tuple[str, str], NameRecord]


def _rank(rec: NameRecord) -> tuple[int, int, bytes, bytes]:
    # The encoded bytes only break ties between distinct records with the same clock and
    # writer (a buggy or hostile writer), so merge stays commutative even then.
    return (*rec.order, encode(rec))


def merge(a: NameRecord, b: NameRecord) -> NameRecord:
    return a if _rank(a) >= _rank(b) else b


def merge_into(table: Table, records: Iterable[NameRecord]) -> list[NameRecord]:
    """Merge records into `table` in place; returns the records that won."""
    changed = []
    for rec in records:
        current = table.get(rec.key)
        winner = rec if current is None else merge(current, rec)
        if winner is not current:
            table[rec.key] = winner
            changed.append(winner)
    return changed


def merge_tables(a: Table, b: Table) -> Table:
    out = dict(a)
    merge_into(out, b.values())
    return out


def too_far_ahead(rec: NameRecord, now_ms: int) -> bool:
    return rec.clock[0] > now_ms + MAX_CLOCK_SKEW_MS
