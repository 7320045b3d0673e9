"""The blocks index in SQLite (private to `node/`): every statement on the `blocks` table.

A row says where a block's bytes are: (cid, pack, offset, length). A block is visible only
once its row is committed, after its pack bytes were synced.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import aiosqlite

from .cid import normalize
from .packs import Place

Row = tuple[bytes, int, int, int]  # cid, pack, offset, length

INSERT = "INSERT OR IGNORE INTO blocks VALUES (?, ?, ?, ?)"
REPLACE = "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?)"
IN_CHUNK = 500  # CIDs per IN (...) query


def insert(conn: sqlite3.Connection, rows: list[Row], replacing: set[bytes] = frozenset()) -> int:
    """The rows inserted: fewer than given when some blocks were indexed already. The rows
    of `replacing` take the place of those indexed (a damaged copy's)."""
    before = conn.total_changes
    for sql, some in _statements(rows, replacing):
        conn.executemany(sql, some)
    return conn.total_changes - before


async def insert_async(conn: aiosqlite.Connection, rows: list[Row],
                       replacing: set[bytes] = frozenset()) -> int:
    """`insert` on the node's async connection."""
    before = conn.total_changes
    for sql, some in _statements(rows, replacing):
        await conn.executemany(sql, some)
    return conn.total_changes - before


def _statements(rows: list[Row], replacing: set[bytes]) -> list[tuple[str, list[Row]]]:
    return [(INSERT, [row for row in rows if row[0] not in replacing]),
            (REPLACE, [row for row in rows if row[0] in replacing])]


def locate(conn: sqlite3.Connection, cid: bytes) -> Place | None:
    return conn.execute("SELECT pack, offset, length FROM blocks WHERE cid = ?", (normalize(cid),)).fetchone()


def locate_many(conn: sqlite3.Connection, cids: list[bytes]) -> dict[bytes, Place]:
    """Where each of `cids` that is indexed lies (keyed as given), in a few queries."""
    out: dict[bytes, Place] = {}
    for i in range(0, len(cids), IN_CHUNK):
        by_key: dict[bytes, list[bytes]] = {}  # a block asked for as CIDv0 and as CIDv1: both
        for cid in cids[i : i + IN_CHUNK]:
            by_key.setdefault(normalize(cid), []).append(cid)
        sql = f"SELECT cid, pack, offset, length FROM blocks WHERE cid IN ({','.join('?' * len(by_key))})"
        for key, pack, offset, length in conn.execute(sql, list(by_key)):
            out.update(dict.fromkeys(by_key[key], (pack, offset, length)))
    return out


def present(conn: sqlite3.Connection, cids: list[bytes]) -> set[bytes]:
    """Which of `cids` are indexed (as given), in a few queries rather than one per CID."""
    out: set[bytes] = set()
    for i in range(0, len(cids), IN_CHUNK):
        by_key = {normalize(c): c for c in cids[i : i + IN_CHUNK]}
        sql = f"SELECT cid FROM blocks WHERE cid IN ({','.join('?' * len(by_key))})"
        out.update(by_key[row[0]] for row in conn.execute(sql, list(by_key)))
    return out


def totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """(number of blocks, their bytes)."""
    count, size = conn.execute("SELECT COUNT(*), COALESCE(SUM(length), 0) FROM blocks").fetchone()
    return count, size


def in_storage_order(conn: sqlite3.Connection) -> list[tuple[bytes, int]]:
    """(cid, length) of every block, in the order their bytes lie in the packs."""
    return conn.execute("SELECT cid, length FROM blocks ORDER BY pack, offset").fetchall()


def all_rows(conn: sqlite3.Connection) -> list[Row]:
    """Every row, in the order the blocks' bytes lie in the packs."""
    return conn.execute("SELECT cid, pack, offset, length FROM blocks ORDER BY pack, offset").fetchall()


def lengths(conn: sqlite3.Connection, cids: Iterable[bytes]) -> dict[bytes, int]:
    wanted = list(cids)
    out: dict[bytes, int] = {}
    for i in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[i : i + IN_CHUNK]
        sql = f"SELECT cid, length FROM blocks WHERE cid IN ({','.join('?' * len(chunk))})"
        out.update(conn.execute(sql, chunk).fetchall())
    return out


def delete(conn: sqlite3.Connection, cids: list[bytes]) -> None:
    conn.executemany("DELETE FROM blocks WHERE cid = ?", [(c,) for c in cids])


def live_bytes_per_pack(conn: sqlite3.Connection) -> dict[int, int]:
    return dict(conn.execute("SELECT pack, SUM(length) FROM blocks GROUP BY pack").fetchall())


def indexed_ends(conn: sqlite3.Connection) -> dict[int, int]:
    """Where the last indexed record of each pack ends (past it: what no row points to)."""
    return dict(conn.execute("SELECT pack, MAX(offset + length) FROM blocks GROUP BY pack").fetchall())


def indexed_end(conn: sqlite3.Connection, pack: int) -> int:
    """Where the last indexed record of `pack` ends (0: it has none)."""
    return conn.execute("SELECT MAX(offset + length) FROM blocks WHERE pack = ?", (pack,)).fetchone()[0] or 0


def rows_in_pack(conn: sqlite3.Connection, pack: int) -> list[tuple[bytes, int, int]]:
    """(cid, offset, length) of every block indexed in `pack`."""
    return conn.execute("SELECT cid, offset, length FROM blocks WHERE pack = ?", (pack,)).fetchall()


def repoint(conn: sqlite3.Connection, moves: list[tuple[bytes, int, Place]]) -> None:
    """(cid, old pack, new place) each: the row moves only if it still points into the old pack."""
    conn.executemany(
        "UPDATE blocks SET pack = ?, offset = ? WHERE cid = ? AND pack = ?",
        [(place[0], place[1], cid, old) for cid, old, place in moves],
    )
