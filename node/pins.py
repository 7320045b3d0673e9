"""Pins: a root stays in the store while any reason (an upload's grace period, a name) holds it."""

from __future__ import annotations

import time

import aiosqlite


def upload_reason(root: bytes) -> str:
    return f"upload:{root.hex()}"


def name_reason(namespace: str, name: str) -> str:
    return f"name:{namespace}/{name}"


def serving_reason(namespace: str, name: str) -> str:
    """The previous complete target of a name, kept while its new target is fetched."""
    return f"serving:{namespace}\x1f{name}"  # names of facades may hold "/"


def parse_serving_reason(reason: str) -> tuple[str, str]:
    namespace, _, name = reason.removeprefix("serving:").partition("\x1f")
    return namespace, name


async def pin(conn: aiosqlite.Connection, root: bytes, reason: str, expires: float | None) -> None:
    """Pin `root` for `reason` (replacing what that reason pinned before) until `expires`, or forever."""
    await unpin(conn, reason)
    await conn.execute(
        "INSERT INTO pins VALUES (?, ?, ?, ?)",
        (root, reason, int(expires) if expires else None, int(time.time())),
    )


async def unpin(conn: aiosqlite.Connection, reason: str) -> None:
    await conn.execute("DELETE FROM pins WHERE reason = ?", (reason,))
