"""Named files: the layer every file facade (FlowFuse, Filestore, the Storage API) stands on.

A namespace holds files by name (`a/b/c.json`); each is a name record whose target is the
file's root, and whose metadata (size, content type, creation time, user metadata) travels
in the record, so it replicates with the name: a file written on node A is listed on node B
with the same metadata, even before its blocks arrive. Per namespace the layer keeps what a
facade asks on every request as lookups: which names are files, which are directories (a
prefix of files), and the bytes used (for quotas).

Threads: the event loop only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from edgefiles.node.core import Core, Imported

from .names import Names
from .record import NameRecord

LOCKS_KEPT = 10_000


@dataclass(frozen=True)
class FileInfo:
    namespace: str
    name: str
    cid: bytes
    size: int
    content_type: str | None
    created: int  # ms since the epoch, of the first write of this name
    modified: int  # ms since the epoch, of the last write
    metadata: dict[str, Any] = field(default_factory=dict)  # the writer's own, JSON-like


def encode_meta(size: int, content_type: str | None, created: int | None, metadata: dict[str, Any]) -> bytes:
    return msgpack.packb({"size": size, "type": content_type, "created": created, "user": metadata},
                         use_bin_type=True)


def decode_meta(blob: bytes | None) -> dict[str, Any]:
    """The metadata of a record; {} for none or for what does not parse (a peer's bug must
    not break listings)."""
    if not blob:
        return {}
    try:
        meta = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException):
        return {}
    return meta if isinstance(meta, dict) else {}


class NamedFiles:
    def __init__(self, core: Core, names: Names):
        self.core = core
        self.names = names
        self._sizes: dict[str, dict[str, int]] = {}  # namespace -> file -> bytes (0 until known)
        self._used: dict[str, int] = {}
        self._dirs: dict[str, Counter[str]] = {}
        self._unsized: dict[str, dict[str, bytes]] = {}  # files of unknown size whose root is not here
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._leave: Callable[[], None] = names.registry.listeners.add(self._changed)

    def close(self) -> None:
        self._leave()

    # lookups --------------------------------------------------------------------------
    def exists(self, ns: str, name: str) -> bool:
        return name in self._table(ns)

    def is_dir(self, ns: str, name: str) -> bool:
        self._table(ns)
        return self._dirs[ns][name] > 0

    def used(self, ns: str) -> int:
        self._table(ns)
        self._size_arrived(ns)
        return self._used[ns]

    def count(self, ns: str) -> int:
        return len(self._table(ns))

    def recount(self, ns: str) -> None:
        """Forget what the namespace's tables hold and count again from its records."""
        self._sizes.pop(ns, None)

    def resolve(self, ns: str, name: str) -> bytes | None:
        """The root to read for a file (while a newer version is fetched, the previous one)."""
        return self.names.resolve(name, ns)

    def info(self, ns: str, name: str) -> FileInfo | None:
        record = self.names.registry.get(name, ns)
        return None if record is None else self._info(record)

    def list(self, ns: str, prefix: str = "") -> list[FileInfo]:
        """Files of a namespace whose names start with `prefix`, by name (a walk of the
        namespace's own files, not of every record the node holds)."""
        table = self.names.registry.table
        return [self._info(table[(ns, name)]) for name in sorted(self._table(ns)) if name.startswith(prefix)]

    def names_in(self, ns: str) -> list[str]:
        return list(self._table(ns))

    def _info(self, record: NameRecord) -> FileInfo:
        meta = decode_meta(record.meta)
        size = meta.get("size")
        if not isinstance(size, int):
            size = self.core.file_size(record.cid) or 0
        created = meta.get("created")
        user = meta.get("user")
        return FileInfo(
            record.namespace, record.name, record.cid, size,
            meta.get("type") if isinstance(meta.get("type"), str) else None,
            created if isinstance(created, int) else record.clock[0], record.clock[0],
            user if isinstance(user, dict) else {},
        )

    # writes -----------------------------------------------------------------------------
    async def write(self, ns: str, name: str, body: bytes, append: bool = False,
                    content_type: str | None = None, metadata: dict[str, Any] | None = None,
                    exists: bool | None = None) -> FileInfo:
        """Store `body` as the file `name` (or append it to the file there), durable once
        this returns. A new version keeps the file's creation time; an append also keeps its
        content type and metadata unless new ones are given. `exists` True: only replace a
        file (else FileNotFoundError); False: only make a new one (else FileExistsError)."""
        async with self.lock(ns, name):
            previous = self._current(ns, name, exists)
            if append and previous is not None:
                imported = await self.core.import_append(previous.cid, body)
                content_type = content_type or previous.content_type
                metadata = previous.metadata if metadata is None else metadata
            else:
                imported = await self.core.import_bytes(body)
            await self.names.commit_named(imported, ns, name,
                                          self._meta(imported, previous, content_type, metadata))
        return self._written(ns, name)

    async def write_imported(self, ns: str, name: str, imported: Imported, content_type: str | None,
                             metadata: dict[str, Any] | None, exists: bool | None = None,
                             size: int | None = None) -> FileInfo:
        """Name a file imported already (streamed in), under `write`'s rules; a refused one
        is abandoned. Metadata None keeps the replaced file's. `size`: the size to record
        and count when it is not the stored bytes' (the plaintext of an encrypted file)."""
        async with self.lock(ns, name):
            try:
                previous = self._current(ns, name, exists)
            except OSError:
                self.core.store.abandon(imported.batch)
                raise
            if metadata is None and previous is not None:
                metadata = previous.metadata
            try:
                meta = self._meta(imported, previous, content_type, metadata, size)
            except (ValueError, TypeError, OverflowError):  # metadata no record can carry
                self.core.store.abandon(imported.batch)
                raise
            await self.names.commit_named(imported, ns, name, meta)
        return self._written(ns, name)

    def _current(self, ns: str, name: str, exists: bool | None) -> FileInfo | None:
        current = self.names.registry.get(name, ns)
        if exists is not None and exists != (current is not None):
            raise (FileNotFoundError if exists else FileExistsError)(name)
        return self._info(current) if current is not None else None

    @staticmethod
    def _meta(imported: Imported, previous: FileInfo | None, content_type: str | None,
              metadata: dict[str, Any] | None, size: int | None = None) -> bytes:
        # a new file's creation time is its record's clock, so it equals its first modification
        created = previous.created if previous is not None else None
        return encode_meta(imported.size if size is None else size, content_type, created, metadata or {})

    def _written(self, ns: str, name: str) -> FileInfo:
        written = self.info(ns, name)
        assert written is not None
        return written

    async def delete(self, ns: str, name: str) -> bool:
        async with self.lock(ns, name):
            return await self.names.delete(name, ns) is not None

    def lock(self, ns: str, name: str) -> asyncio.Lock:
        """Writes of one name land one after another (appends above all)."""
        key = (ns, name)
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > LOCKS_KEPT:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # the per-namespace tables, kept up to date from the registry (local writes and records
    # from peers alike), so a write never walks a namespace's files ---------------------------
    def _table(self, ns: str) -> dict[str, int]:
        table = self._sizes.get(ns)
        if table is None:
            table, self._used[ns], self._dirs[ns], self._unsized[ns] = {}, 0, Counter(), {}
            self._sizes[ns] = table
            for record in self.names.registry.live(ns):
                self._set(record)
        return table

    def _changed(self, record: NameRecord, _previous: NameRecord | None) -> None:
        if record.namespace in self._sizes:  # else built from the registry when first used
            self._set(record)

    def _set(self, record: NameRecord) -> None:
        """Point a name at its record's file (a tombstone: gone). A file of unknown size (a
        record without metadata) whose root has not arrived counts 0 bytes until it has."""
        ns, name = record.namespace, record.name
        table, dirs, unsized = self._sizes[ns], self._dirs[ns], self._unsized[ns]
        unsized.pop(name, None)
        old = table.pop(name, None)
        if old is not None:
            self._used[ns] -= old
            for prefix in _parents(name):
                dirs[prefix] -= 1
        if record.cid is not None:
            size = decode_meta(record.meta).get("size")
            if not isinstance(size, int):
                size = self.core.file_size(record.cid)
            if size is None:
                unsized[name], size = record.cid, 0
            table[name] = size
            self._used[ns] += size
            for prefix in _parents(name):
                dirs[prefix] += 1

    def _size_arrived(self, ns: str) -> None:
        for name, cid in list(self._unsized[ns].items()):
            size = self.core.file_size(cid)
            if size is not None:
                del self._unsized[ns][name]
                self._used[ns] += size - self._sizes[ns][name]
                self._sizes[ns][name] = size


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
