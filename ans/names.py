"""Names bound to content: the registry's records on the node's core. A name's pin moves
with it; while a name's new target is incomplete here, its previous complete target stays
pinned and served (`serving:` pins).

Threads: `resolve` may be called from worker threads; everything else on the event loop.
"""

from __future__ import annotations

from collections import Counter

import aiosqlite
from edgefiles.node import pins
from edgefiles.node.cid import normalize
from edgefiles.node.core import Core, Imported
from edgefiles.node.groupcommit import GroupCommitter

from .record import NameRecord
from .registry import API_NAMESPACE, Registry

Key = tuple[str, str]  # (namespace, name)


class Names:
    def __init__(self, core: Core, registry: Registry, serving: dict[Key, bytes]):
        """Use `Names.open`."""
        self.core = core
        self.registry = registry
        self._serving = serving  # name -> its previous complete target, while the new one is fetched
        self._committing: set[bytes] = set()  # roots whose blocks the open transaction adds
        self._committer = GroupCommitter(core.store, core.db, self._write_names)
        # how many live records of app names (the API namespace) and of facades target each root
        self._targets: dict[bool, Counter[bytes]] = {True: Counter(), False: Counter()}
        for record in registry.table.values():
            self._count_target(record, 1)
        registry.listeners.add(self._target_moved)

    @classmethod
    async def open(cls, core: Core) -> Names:
        registry = Registry(core.db, core.key)
        await registry.load()
        serving = {pins.parse_serving_reason(reason): root
                   for root, reason in await core.db.fetchall(pins.SERVING_PINS)}
        return cls(core, registry, serving)

    # reading ------------------------------------------------------------------------
    def resolve(self, name: str, namespace: str = API_NAMESPACE) -> bytes | None:
        """The newest complete target of a name; while a newer one is incomplete, the previous."""
        record = self.registry.get(name, namespace)
        if record is None:
            return None
        if self.core.is_complete(record.cid):
            return record.cid
        return self._serving.get((namespace, name), record.cid)

    def resolved_at_hand(self, name: str, namespace: str = API_NAMESPACE) -> bytes | None:
        """`resolve` when it needs no reading (never blocks): the name's target when it is
        known complete; None when `resolve` must find out."""
        record = self.registry.get(name, namespace)
        return record.cid if record is not None and self.core.known_complete(record.cid) else None

    def hidden_from_apps(self, cid: bytes) -> bool:
        """Whether `cid` is the root of a facade's file (a thing's, a group's, a FlowFuse
        project's) that no app name targets and no Files API upload made: apps may not read it
        by CID. Its inner blocks need no such guard: their CIDs are only known from the root
        block, or to whoever holds the content already. Blocking when a pin must be looked up
        (only when `facade_only`)."""
        if not self.facade_only(cid):
            return False
        return not pins.uploaded_through_files_api(self.core.store.read_connection(), normalize(cid))

    def facade_only(self, cid: bytes) -> bool:
        """Whether facades' names target `cid` and no app name does (never blocks): the one case
        where `hidden_from_apps` must look up a pin."""
        key = normalize(cid)
        return bool(self._targets[False][key]) and not self._targets[True][key]

    def _target_moved(self, record: NameRecord, previous: NameRecord | None) -> None:
        if previous is not None:
            self._count_target(previous, -1)
        self._count_target(record, 1)

    def _count_target(self, record: NameRecord, step: int) -> None:
        if record.cid is None or record.namespace.startswith("@"):  # tombstones, account records
            return
        counter = self._targets[record.namespace == API_NAMESPACE]
        key = normalize(record.cid)
        counter[key] += step
        if counter[key] <= 0:
            del counter[key]

    def targets(self) -> list[tuple[str, bytes]]:
        """(name as users know it, target) of every live name: an app's name alone, a facade's
        file as `namespace/name`."""
        return [(name if namespace == API_NAMESPACE else f"{namespace}/{name}", record.cid)
                for (namespace, name), record in self.registry.table.items() if record.cid is not None]

    def wanted_roots(self) -> set[bytes]:
        """Targets of live names that are not complete here: what the rollout must fetch."""
        targets = {r.cid for r in self.registry.table.values() if r.cid is not None}
        return {cid for cid in targets if not self.core.is_complete(cid)}

    # writing ------------------------------------------------------------------------
    async def set(self, name: str, cid: bytes, namespace: str = API_NAMESPACE) -> None:
        await self.registry.write(name, cid, namespace, also=self._repin)

    async def delete(self, name: str, namespace: str = API_NAMESPACE) -> bytes | None:
        """Delete a name; the target it had, None when there was no such name. Looked up
        inside the write transaction: of deletes at once, one finds the name, the others find
        it gone (they all found it, and all said they deleted it)."""
        async with self.core.db.transaction() as conn:
            record = self.registry.get(name, namespace)
            if record is None:
                return None
            await self.registry.write_many_in(conn, [(namespace, name, None, None)], self._repin)
            return record.cid

    async def apply_remote(self, records: list[NameRecord]) -> None:
        """Merge records from peers; winners are pinned (and their DAGs rolled out) like local writes."""
        await self.registry.apply(records, also=self._repin)

    async def commit_named(self, imported: Imported, namespace: str, name: str, meta: bytes | None) -> None:
        """Make an imported file durable with `name` moved to it (`meta` in its record), in
        one group transaction shared with every write that finishes at the same moment."""
        root = imported.root
        pin = (root, pins.facade_reason(root), self.core.upload_pin_expiry())
        await self._committer.commit(imported.batch, [pin], (namespace, name, meta))
        self.core.mark_complete(root)  # imported whole: no rollout needs to walk it to find out

    async def target_complete(self, root: bytes) -> None:
        """A named DAG is complete here: names on it stop serving their previous target."""
        self.core.mark_complete(root)
        keys = [k for k in self._serving if (r := self.registry.table.get(k)) is not None and r.cid == root]
        if keys:
            async with self.core.db.transaction() as conn:
                for key in keys:
                    await self._set_serving(conn, key, None)

    async def _write_names(
        self, conn: aiosqlite.Connection, names: list[tuple[tuple[str, str, bytes | None], bytes]]
    ) -> None:
        # Their blocks commit in this same transaction, which the readers cannot see yet:
        # without this, every overwrite would keep its previous version pinned as "serving".
        self._committing = {root for _, root in names}
        try:
            items = [(ns, name, root, meta) for (ns, name, meta), root in names]
            await self.registry.write_many_in(conn, items, also=self._repin)
        finally:
            self._committing = set()

    def _complete(self, root: bytes) -> bool:
        return root in self._committing or self.core.is_complete(root)

    async def _repin(self, conn: aiosqlite.Connection, changed: list[NameRecord]) -> None:
        """Runs inside the name's transaction: its pin moves with it. While a new target is
        incomplete, the previous complete one stays pinned (and served) under `serving:`."""
        await pins.move_pins(conn, [(r.cid, pins.name_reason(r.namespace, r.name)) for r in changed])
        for r in changed:
            key = (r.namespace, r.name)
            previous = self.registry.table.get(key)
            if r.cid is None or self._complete(r.cid):
                await self._set_serving(conn, key, None)
            elif previous is not None and previous.cid is not None and key not in self._serving:
                if self._complete(previous.cid):
                    await self._set_serving(conn, key, previous.cid)

    async def _set_serving(self, conn: aiosqlite.Connection, key: Key, root: bytes | None) -> None:
        if root is None and key not in self._serving:
            return
        await pins.move_pins(conn, [(root, pins.serving_reason(*key))])
        if root is None:
            del self._serving[key]
        else:
            self._serving[key] = root
