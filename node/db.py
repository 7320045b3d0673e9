"""The one SQLite schema (blocks index, pins, names, node state) and its migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiosqlite

SCHEMA_VERSION = 2

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE blocks (
        cid BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE pins (
        root BLOB NOT NULL, reason TEXT NOT NULL, expires INTEGER, created INTEGER NOT NULL,
        PRIMARY KEY (root, reason)
    ) WITHOUT ROWID;
    CREATE TABLE names (
        namespace TEXT NOT NULL, name TEXT NOT NULL, cid BLOB, hlc_ms INTEGER NOT NULL,
        hlc_counter INTEGER NOT NULL, writer BLOB NOT NULL, record BLOB NOT NULL,
        PRIMARY KEY (namespace, name)
    ) WITHOUT ROWID;
    CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
    """,
    # a name's pin is moved by its reason on every write: without this, each write scanned
    # every pin (a node with 15,000 named files wrote 3x slower than an empty one)
    2: """
    CREATE INDEX pins_by_reason ON pins (reason);
    """,
}


class SchemaTooNew(RuntimeError):
    """The data directory was written by a newer edgefiles."""


PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=10000")
READER_CACHE_KIB = 256


def _configure(conn: sqlite3.Connection) -> None:
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")


async def connect(path: Path) -> aiosqlite.Connection:
    """An aiosqlite connection set up as every writer of ours is (WAL, full sync, patience)."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        await conn.execute(f"PRAGMA {pragma}")
    return conn


def migrate(path: Path) -> None:
    """Create or upgrade the schema; refuse a version newer than ours."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _configure(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{path} has schema version {version}; this edgefiles understands up to {SCHEMA_VERSION}"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with write_transaction(conn):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={target}")
    finally:
        conn.close()


class Database:
    """The node's one aiosqlite connection; writes go through `transaction()`, one at a time.

    Statements of concurrent requests share the connection, so an unserialised write could
    land inside another request's open transaction (and vanish with its rollback).
    """

    def __init__(self, conn: aiosqlite.Connection):
        self.conn = conn
        self._write_lock = asyncio.Lock()
        self.after_commit: list[Callable[[], None]] = []  # run once the open transaction commits

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction at a time. Callbacks added to `after_commit` meanwhile run after
        COMMIT but before the next transaction starts, so in-memory state that mirrors the
        database (the name table) never runs ahead of it or behind the next writer.

        A task cancelled on its way in or out (a peer that went away while its records were
        applied) still leaves no transaction open: BEGIN, COMMIT and ROLLBACK run to their end
        on the connection's thread whatever happens to the task, so we wait for them, close
        the transaction properly and only then let the cancellation through. (An open
        transaction left behind made every later write fail, and the node stop.)"""
        async with self._write_lock:
            self.after_commit.clear()
            if await self._run_through("BEGIN IMMEDIATE"):
                await self._roll_back()
                raise asyncio.CancelledError
            try:
                yield self.conn
            except BaseException:
                self.after_commit.clear()
                await self._roll_back()
                raise
            try:
                cancelled = await self._run_through("COMMIT")
            except Exception:
                self.after_commit.clear()
                await self._roll_back()
                raise
            callbacks, self.after_commit = self.after_commit, []
            for callback in callbacks:
                callback()
            if cancelled:
                raise asyncio.CancelledError

    async def _roll_back(self) -> None:
        """ROLLBACK, unless SQLite rolled the transaction back by itself (a full disk, an I/O
        error): a ROLLBACK then fails, and its error hid the one that mattered."""
        if self.conn.in_transaction:
            await self._run_through("ROLLBACK")

    async def _run_through(self, sql: str) -> bool:
        """Run a statement to its end even when our task is cancelled meanwhile; whether a
        cancellation arrived (the caller delivers it once the connection is in order)."""

        async def statement() -> None:
            await self.conn.execute(sql)

        task = asyncio.ensure_future(statement())
        cancelled = False
        while True:
            try:
                await asyncio.shield(task)
                return cancelled
            except asyncio.CancelledError:
                if task.cancelled():
                    raise
                cancelled = True  # the statement goes on (or has just finished): wait for it

    async def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def close(self) -> None:
        await self.conn.close()


async def open_db(path: Path) -> Database:
    migrate(path)
    return Database(await connect(path))


def open_reader(path: Path) -> sqlite3.Connection:
    """A synchronous read connection for hot lookups (one per thread)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA query_only=1")
    # one of these per worker thread: SQLite's 2 MiB default cache each made a node's memory
    # climb for minutes as more threads took their turn (the OS page cache is behind it anyway)
    conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
    return conn


class Readers:
    """One synchronous read connection per thread, opened on first use."""

    def __init__(self, path: Path):
        self._path = path
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_reader(self._path)
        return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on a synchronous connection; ROLLBACK on any error, so a
    failed write never leaves a transaction open for the next one to commit by accident."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself on a full disk: see Database._roll_back
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_writer(path: Path) -> sqlite3.Connection:
    """A synchronous write connection for worker threads (fetched blocks, garbage collection)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    _configure(conn)
    return conn
