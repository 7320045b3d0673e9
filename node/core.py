"""The node's core: block store, pins and names behind one object every route and facade uses."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
from edgefiles.ans.registry import API_NAMESPACE, Registry

from . import exporter, pins
from .blockstore import Batch, BlockStore, CorruptBlock
from .db import Database, open_db
from .groupcommit import GroupCommitter
from .identity import NodeKey
from .profiles import Profile


@dataclass(frozen=True)
class CoreSettings:
    data_dir: Path
    profile: Profile
    pin_uploads_for: float = 12 * 3600.0
    store_quota: int | None = None


class Core:
    def __init__(self, settings: CoreSettings, key: NodeKey):
        self.settings = settings
        self.key = key
        self.db: Database | None = None
        self.store: BlockStore | None = None
        self.registry: Registry | None = None
        self.reader = exporter.DagReader(self.get_block)
        self._complete: set[bytes] = set()
        self._served: dict[tuple[str, str], bytes] = {}

    async def open(self) -> None:
        db_path = self.settings.data_dir / "state.sqlite"
        self.db = await open_db(db_path)
        self.store = BlockStore(self.settings.data_dir / "blocks", db_path, self.settings.store_quota)
        self.registry = Registry(self.db, self.key)
        await self.registry.load()
        self._committer = GroupCommitter(self.store, self.db)

    async def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.db is not None:
            await self.db.close()

    # blocks -------------------------------------------------------------------------
    def get_block(self, cid: bytes) -> bytes:
        data = self.store.get(cid)
        if data is None:
            raise exporter.NotFound("block not stored on this node")
        return data

    async def commit(self, batch: Batch, root: bytes, reason: str, expires: float | None) -> None:
        """Make an upload durable and pinned: synced packs, then index + pin in one transaction."""
        await self._committer.commit(batch, root, reason, expires)

    # pins ---------------------------------------------------------------------------
    def pinned_roots(self) -> int:
        """Roots held by at least one unexpired pin."""
        return self.store.pinned_roots(int(time.time()))

    def upload_pin_expiry(self) -> float:
        return time.time() + self.settings.pin_uploads_for

    # DAG completeness -----------------------------------------------------------------
    def is_complete(self, root: bytes) -> bool:
        """Whether every block of the DAG under `root` is stored here."""
        if root in self._complete:
            return True
        try:
            complete, _ = self.reader.survey(root, self.store.has, first_gap=True)
        except (exporter.NotUnixFS, CorruptBlock):
            return False
        if complete:
            self._complete.add(root)
        return complete

    def missing_bytes(self, root: bytes) -> int:
        """Bytes still to fetch for a DAG: the Tsize of every missing subtree we know of."""
        try:
            return self.reader.survey(root, self.store.has)[1]
        except (exporter.NotUnixFS, CorruptBlock):
            return 0

    def store_totals(self) -> tuple[int, int]:
        return self.store.totals()

    # names ----------------------------------------------------------------------------
    def resolve_name(self, name: str, namespace: str = API_NAMESPACE) -> bytes | None:
        """The newest complete target of a name; while a newer one is incomplete, the previous."""
        record = self.registry.get(name, namespace)
        if record is None:
            self._served.pop((namespace, name), None)
            return None
        if self.is_complete(record.cid):
            self._served[(namespace, name)] = record.cid
            return record.cid
        return self._served.get((namespace, name), record.cid)

    async def set_name(self, name: str, cid: bytes, namespace: str = API_NAMESPACE) -> None:
        async def repin(conn: aiosqlite.Connection, _changed: list) -> None:
            await pins.pin(conn, cid, pins.name_reason(namespace, name), None)

        await self.registry.write(name, cid, namespace, also=repin)

    async def delete_name(self, name: str, namespace: str = API_NAMESPACE) -> bytes | None:
        record = self.registry.get(name, namespace)
        if record is None:
            return None

        async def unpin(conn: aiosqlite.Connection, _changed: list) -> None:
            await pins.unpin(conn, pins.name_reason(namespace, name))

        await self.registry.write(name, None, namespace, also=unpin)
        self._served.pop((namespace, name), None)
        return record.cid
