"""Pins: a root stays in the store while any reason (an upload's grace period, a name) holds
it. Every statement on the `pins` table is here."""

from __future__ import annotations

import sqlite3
import time

import aiosqlite

LIVE = "(expires IS NULL OR expires > ?)"  # a pin holds its root until it expires


SERVING_PINS = "SELECT root, reason FROM pins WHERE reason LIKE 'serving:%'"


def upload_reason(root: bytes) -> str:
    return f"upload:{root.hex()}"


def facade_reason(root: bytes) -> str:
    """A file written through a facade (FlowFuse, Filestore): held like an upload, but not one
    made through the Files API (see `uploaded_through_files_api`)."""
    return f"file:{root.hex()}"


def uploaded_through_files_api(conn: sqlite3.Connection, root: bytes) -> bool:
    """Whether the Files API (an upload or a CAR import) ever pinned `root` and the pin is
    still recorded (pins of uploads last their grace period)."""
    return conn.execute("SELECT 1 FROM pins WHERE root = ? AND reason LIKE 'upload:%' LIMIT 1",
                        (root,)).fetchone() is not None


def name_reason(namespace: str, name: str) -> str:
    return f"name:{namespace}/{name}"


def serving_reason(namespace: str, name: str) -> str:
    """The previous complete target of a name, kept while its new target is fetched."""
    return f"serving:{namespace}\x1f{name}"  # names of facades may hold "/"


def parse_serving_reason(reason: str) -> tuple[str, str]:
    namespace, _, name = reason.removeprefix("serving:").partition("\x1f")
    return namespace, name


async def pin_roots(conn: aiosqlite.Connection, rows: list[tuple[bytes, str, float | None]]) -> None:
    """Pin many roots at once, each under a reason that only ever pins that root (an upload's):
    so replacing needs no delete first."""
    now = int(time.time())
    await conn.executemany(
        "INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?)",
        [(root, reason, int(expires) if expires else None, now) for root, reason, expires in rows],
    )


async def move_pins(conn: aiosqlite.Connection, rows: list[tuple[bytes | None, str]]) -> None:
    """Point each reason at its new root (None: unpin), forever, in two statements for all."""
    await conn.executemany("DELETE FROM pins WHERE reason = ?", [(reason,) for _, reason in rows])
    now = int(time.time())
    await conn.executemany(
        "INSERT INTO pins VALUES (?, ?, NULL, ?)", [(root, reason, now) for root, reason in rows if root]
    )


def live_roots(conn: sqlite3.Connection, now: int) -> set[bytes]:
    """Roots held by at least one unexpired pin (as stored)."""
    return {root for (root,) in conn.execute(f"SELECT DISTINCT root FROM pins WHERE {LIVE}", (now,))}


def count_live_roots(conn: sqlite3.Connection, now: int) -> int:
    return conn.execute(f"SELECT COUNT(DISTINCT root) FROM pins WHERE {LIVE}", (now,)).fetchone()[0]


def drop_expired(conn: sqlite3.Connection, now: int) -> None:
    conn.execute(f"DELETE FROM pins WHERE NOT {LIVE}", (now,))
