"""The node's swarm side, assembled: host, membership, Bitswap, name sync and rollout.

The asyncio side (HTTP, core) talks to it only through the few methods of `Swarm`; the
trio side reaches the core only through `SwarmHost.to_asyncio`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from edgefiles.ans import record as rec_mod
from edgefiles.ans.names import Names
from edgefiles.ans.record import NameRecord
from edgefiles.node.cid import to_str
from edgefiles.node.core import Core
from edgefiles.node.identity import NodeKey

from .bitswap import Bitswap
from .host import SwarmHost
from .limits import KINDS as LIMIT_KINDS
from .limits import PeerLimiter, PeerLimits
from .membership import Membership
from .namesync import BucketedTable, NameSync

log = logging.getLogger("edgefiles.swarm")

ROLLOUTS_AT_ONCE = 4
FETCH_DAG_TIMEOUTS = 4  # a repair gives a DAG this many fetch timeouts to arrive


@dataclass
class SwarmSettings:
    listen: list[str]
    swarm_key: bytes
    peers: list[str] = field(default_factory=list)
    allowed_peers: set[str] = field(default_factory=set)
    fetch_timeout: float = 15.0
    limits: PeerLimits = field(default_factory=PeerLimits)


class Swarm:
    """The node's swarm side. Built before the core, which it serves as its `BlockSource`
    (reads of content not here); started with the core and names once they exist."""

    def __init__(self, key: NodeKey, settings: SwarmSettings):
        self.settings = settings
        self.host = SwarmHost(key.seed, settings.listen, self._services)
        self.core: Core | None = None
        self.names: Names | None = None
        self.members: Membership | None = None
        self.bitswap: Bitswap | None = None
        self.limiter = PeerLimiter(settings.limits)
        self.name_sync: NameSync | None = None
        self.rollout: Rollout | None = None
        self._resync_pending = False
        self._changed_roots: set[bytes] | None = None  # None: look at every name
        self._exchange_table = BucketedTable()  # asyncio side, kept in step with the registry
        self._unsubscribe: list[Callable[[], None]] = []

    # lifecycle, from the asyncio side ----------------------------------------------------
    async def start(self, core: Core, names: Names) -> None:
        self.core, self.names = core, names
        registry = names.registry
        for record in registry.table.values():  # before any peer can ask for it
            self._exchange_table.put_record(record)
        self._unsubscribe.append(registry.listeners.add(self._exchange_table.put_record))
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.host.start, loop)
        self._unsubscribe.append(registry.local_writes.add(self._publish))
        self._unsubscribe.append(registry.listeners.add(self._name_changed))
        self._schedule_resync()

    def _publish(self, record: NameRecord) -> None:
        self.host.run_soon(self.name_sync.publish, rec_mod.encode(record))

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self.host.stop()

    # what the web layer shows -----------------------------------------------------------
    def addrs(self) -> list[str]:
        return self.host.addrs()

    def peers(self) -> list[str]:
        return [str(p) for p in self.members.block_peers()] if self.members else []

    def counters(self) -> dict[str, int]:
        if self.bitswap is None:
            return {}
        sync = self.name_sync
        hits = {f"limit_hits_{kind}": self.limiter.hits[kind] for kind in LIMIT_KINDS}
        hits["limit_hits_bad_records"] = self.names.registry.bad_records if self.names else 0  # forgeries
        return {**self.bitswap.counters(), "table_records_sent": sync.records_sent if sync else 0,
                "table_exchanges": sync.exchanges if sync else 0,
                "peers_refused": self.members.refusals if self.members else 0, **hits}

    # reads of content that is not here yet (the core's BlockSource) ------------------------
    def reachable(self) -> bool:
        return bool(self.members and self.members.block_peers())

    def fetch_block(self, cid: bytes) -> bytes | None:
        """Blocking (worker threads only): a block from the swarm, or None when nobody has it
        within the fetch timeout (at once when no peer is connected)."""
        if self.bitswap is not None:
            # fetched by a read-ahead, not indexed yet: read here, without a trip to the libp2p
            # thread, which is busiest exactly when a reader follows a fetch
            data = self.bitswap.in_flight_block(cid)
            if data is not None:
                return data
        if not self.reachable():
            return None
        timeout = self.settings.fetch_timeout

        async def fetch() -> bytes | None:
            data = self.bitswap.local_block(cid)  # a read-ahead may have brought it meanwhile
            if data is not None:
                return data
            with trio.move_on_after(timeout):
                return bytes(await self.bitswap.get(cid))  # it may be a view into a message
            return None

        try:
            return self.host.submit(fetch).result(timeout + 10)
        except Exception as exc:
            log.warning("fetching block %s failed: %s", cid.hex(), exc)
            return None

    def prefetch(self, cids: list[bytes]) -> None:
        """From any thread: blocks a reader will need next, asked for now (read-ahead)."""
        if self.reachable():
            self.host.run_soon(self.bitswap.prefetch, cids, self.settings.fetch_timeout)

    def fetch_dags(self, roots: list[bytes]) -> int:
        """Blocking (worker threads only): the missing blocks of these DAGs from peers, each
        DAG given up after FETCH_DAG_TIMEOUTS fetch timeouts; the bytes fetched."""
        if not self.reachable():
            return 0
        limit = self.settings.fetch_timeout * FETCH_DAG_TIMEOUTS

        async def fetch() -> int:
            fetched = 0
            for root in roots:
                with trio.move_on_after(limit):
                    fetched += await self.bitswap.fetch_dag(root)
            return fetched

        return self.host.submit(fetch).result()

    # rollout: every incomplete named DAG is fetched ---------------------------------------
    def _name_changed(self, record: NameRecord, previous: NameRecord | None) -> None:
        rollout = self.rollout
        moved_from = previous.cid if previous is not None else None
        if moved_from is not None and moved_from != record.cid and rollout is not None \
                and rollout.fetching(moved_from):
            self._changed_roots = None  # a target still being fetched lost its name: maybe stop
        elif record.cid is not None and self._changed_roots is not None:
            self._changed_roots.add(record.cid)
        self._schedule_resync()

    def _schedule_resync(self) -> None:
        """Coalesce bursts of name changes into one look at what must be fetched: only the new
        targets, or every name when one was deleted or repointed away (rollouts to cancel)."""
        if not self._resync_pending:
            self._resync_pending = True
            asyncio.get_running_loop().call_later(0.005, self._resync_now)

    def _resync_now(self) -> None:
        self._resync_pending = False
        changed, self._changed_roots = self._changed_roots, set()
        rollout = self.rollout
        if rollout is None:
            self._changed_roots = None
            return
        if changed is None:
            roots = self.names.wanted_roots()
            self.host.submit(lambda: rollout.sync(roots))
        else:
            roots = {cid for cid in changed if not self.core.is_complete(cid)}
            if roots:
                self.host.submit(lambda: rollout.add(roots))

    # the trio side ----------------------------------------------------------------------
    async def _services(self, host: Any, nursery: trio.Nursery) -> None:
        s = self.settings
        self.members = Membership(host, s.swarm_key, s.allowed_peers, nursery, self.limiter)
        self.bitswap = Bitswap(host, self.members, self.core.store, nursery)
        table = self._exchange_table
        self.name_sync = NameSync(host, self.members, s.swarm_key, nursery, self._apply,
                                  lambda: self._on_asyncio(table.digests),
                                  lambda buckets: self._on_asyncio(table.records, buckets))
        self.rollout = Rollout(self.bitswap, nursery, self._completed)
        self.members.start()
        self.bitswap.start()
        await self.name_sync.start()
        for addr in s.peers:
            self.members.keep_connected(addr)

    async def _apply(self, records: list[NameRecord]) -> None:
        await self.host.to_asyncio(self.names.apply_remote(records))

    async def _on_asyncio(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call `fn` on the asyncio loop, which owns it (e.g. the exchange table), and return
        its result to the trio side."""
        async def call() -> Any:
            return fn(*args)

        return await self.host.to_asyncio(call())

    async def _completed(self, root: bytes) -> None:
        await self.host.to_asyncio(self.names.target_complete(root))


class Rollout:
    """Fetch tasks for the DAGs the core wants; cancelled when no name points at them any more."""

    def __init__(self, bitswap: Bitswap, nursery: trio.Nursery, completed: Any):
        self._bitswap = bitswap
        self._nursery = nursery
        self._completed = completed
        self._tasks: dict[bytes, trio.CancelScope] = {}
        self._limit = trio.CapacityLimiter(ROLLOUTS_AT_ONCE)

    def fetching(self, root: bytes) -> bool:
        """Whether a fetch of `root` is queued or running (a lookup: safe from any thread)."""
        return root in self._tasks

    async def sync(self, roots: set[bytes]) -> None:
        """Fetch exactly these roots: start the new ones, cancel the ones no longer wanted."""
        for root in list(self._tasks):
            if root not in roots:
                self._tasks.pop(root).cancel()
        await self.add(roots)

    async def add(self, roots: set[bytes]) -> None:
        for root in roots:
            if root not in self._tasks:
                scope = self._tasks[root] = trio.CancelScope()
                self._nursery.start_soon(self._run, root, scope)

    async def _run(self, root: bytes, scope: trio.CancelScope) -> None:
        with scope:
            async with self._limit:
                started = trio.current_time()
                fetched = await self._bitswap.fetch_dag(root)
                await self._completed(root)
                seconds = trio.current_time() - started
                log.info(
                    "rollout of %s complete: fetched %.1f MiB in %.2f s (%.1f MiB/s)", to_str(root),
                    fetched / 2**20, seconds, fetched / 2**20 / max(seconds, 1e-6),
                )
        if self._tasks.get(root) is scope:
            del self._tasks[root]
