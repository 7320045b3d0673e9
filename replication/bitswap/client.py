"""Bitswap's client side: what we want, fetched and stored (trio side).

Who is asked for what is the planner's business; this module waits for blocks on behalf
of readers and rollouts, feeds the planner what peers say and sends what it plans. Received
messages are hashed and written to the pack on trio's worker threads, whatever arrived
meanwhile in one trip and one write, so this thread only reads the network; they become
durable and indexed in batches (`_committer`). Only blocks we asked for are kept.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from edgefiles.node.blockstore import Batch, BlockStore, CorruptBlock, StorageFull
from edgefiles.node.cid import DAG_PB, RAW, cid_from_digest, codec_of, digest_of, normalize
from edgefiles.node.dagpb import child_cids_of
from edgefiles.node.dagpb import decode as decode_dagpb
from edgefiles.node.protobuf import DecodeError

from ..membership import Membership
from . import message as bm
from .network import BitswapNetwork
from .planner import FULL_PASS_EVERY, Planner

log = logging.getLogger("edgefiles.bitswap")

COMMIT_BYTES = 32 << 20
COMMIT_EVERY = 0.2
DAG_WINDOW = 96  # blocks of one DAG asked for at once
SHARED_DAG_BYTES = 16 << 20  # larger DAGs are fetched in shares when several nodes fetch them
PREFETCH_LIMIT = 512  # blocks asked ahead of readers at once (at 256 KiB: 128 MiB)
HASHING_BYTES = 16 << 20  # received block bytes waiting to be hashed; a sender past it waits
RECENT_BLOCKS = 4096  # blocks met or given up lately: a copy of one arriving late is not a lie
HOLDERS_REMEMBERED = 1 << 16  # blocks whose likely holder we remember (children of received nodes)


@dataclass
class _Waiter:
    """Readers and rollouts waiting for one block."""

    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    users: int = 0


class BitswapClient:
    def __init__(self, planner: Planner, store: BlockStore, network: BitswapNetwork,
                 membership: Membership, nursery: trio.Nursery):
        self.planner = planner
        self.store = store
        self.network = network
        self.members = membership
        self._nursery = nursery
        self._waiters: dict[bytes, _Waiter] = {}
        self._queued: set[bytes] = set()  # blocks a rollout will ask for (see `fetching`)
        self._recent: deque[bytes] = deque(maxlen=RECENT_BLOCKS)
        self._likely_holders: dict[bytes, Any] = {}  # block -> the peer that sent its parent
        self._wake = trio.Event()
        self._unhashed: list[tuple[Any, list[tuple[bytes, bytes]]]] = []  # (peer, blocks) received
        self._unhashed_bytes = 0
        self._to_hash = trio.Event()
        self._hashed = trio.Event()
        self._batch = store.batch()
        self._batch_lock = trio.Lock()  # held while a worker thread writes into the batch
        self._committing: Batch | None = None  # the batch being made durable and indexed
        self._commit_seq = 0  # batches handed to commit
        self._committed_seq = 0
        self._committed = trio.Event()
        self._commit_now = trio.Event()
        self._prefetches = 0
        self._storage_error_logged = -math.inf
        self.on_block: Callable[[bytes, bytes], None] = lambda cid, data: None  # a wanted block arrived
        self.received_bytes = 0
        self.rejected_blocks = 0

    def start(self) -> None:
        self._nursery.start_soon(self._scheduler)
        self._nursery.start_soon(self._committer)
        self._nursery.start_soon(self._hasher)

    # what readers and rollouts call ------------------------------------------------------
    async def get(self, cid: bytes, root: bytes | None = None) -> bytes:
        """One block from the swarm, verified and stored (not yet durable: see `flush`).

        The peer that sent us its parent, if one did, is asked for the block straight away,
        without a round of want-haves to every peer first (for readers of a file we lack as
        for rollouts)."""
        cid = normalize(cid)
        hint = self._likely_holders.get(cid)
        waiter = self._waiters.get(cid)
        if waiter is None:
            waiter = self._waiters[cid] = _Waiter()
            self.planner.want(cid, root, hint)
            self._wake.set()
        waiter.users += 1
        try:
            await waiter.done.wait()
        finally:
            waiter.users -= 1
            if waiter.users == 0 and not waiter.done.is_set():
                del self._waiters[cid]
                self._recent.append(cid)  # its peer may have sent it already
                self.planner.cancel(cid)
                self._send_planned()
        assert waiter.data is not None
        return waiter.data

    async def flush(self) -> None:
        """Wait until every block received so far is durable and indexed."""
        target = self._commit_seq + (1 if len(self._batch) else 0)
        self._commit_now.set()
        while self._committed_seq < target:
            await self._committed.wait()

    def local_block(self, cid: bytes) -> bytes | None:
        """A block held here: indexed, or fetched and written but not indexed yet (a
        read-ahead got it before the reader asked). None when it is not here."""
        data = self.in_flight_block(cid)
        if data is not None:
            return data
        try:
            return self.store.get(cid)
        except CorruptBlock:
            return None

    def fetching(self, cid: bytes) -> bool:
        """Whether we are fetching this block, or a rollout here will ask for it."""
        return cid in self._waiters or cid in self._queued

    def in_flight_block(self, cid: bytes) -> bytes | None:
        """A block fetched and written here but not indexed yet (from any thread)."""
        for batch in (self._batch, self._committing):
            data = batch.read(cid) if batch is not None else None
            if data is not None:
                return data
        return None

    def prefetch(self, cids: list[bytes], timeout: float) -> None:
        """Ask for blocks a reader is about to read, without waiting for them."""
        for cid in cids:
            if self._prefetches >= PREFETCH_LIMIT:
                return
            self._prefetches += 1
            self._nursery.start_soon(self._prefetch_one, normalize(cid), timeout)

    async def _prefetch_one(self, cid: bytes, timeout: float) -> None:
        try:
            if self.local_block(cid) is None:
                with trio.move_on_after(timeout):
                    await self.get(cid)
        finally:
            self._prefetches -= 1

    async def fetch_dag(self, root: bytes, window: int = DAG_WINDOW) -> int:
        """Fetch every block of the DAG under `root` that is not stored here yet, then flush;
        the bytes fetched.

        When several nodes fetch the same large DAG at once, each leaf is one node's share
        (see `Planner.share_owner`): a node fetches its own share first, wherever it is, and
        asks the others for theirs, so the node that has everything serves each block about
        once. A small DAG (up to `SHARED_DAG_BYTES`) is fetched from whoever has each block
        first: waiting for shares would cost more than the origin's few extra bytes.
        """
        root = normalize(root)
        fetched = 0
        own: deque[bytes] = deque([root])  # our share and the DAG's inner nodes: first
        others: deque[bytes] = deque()  # other fetchers' shares: asked of them, last
        remaining = 1
        progress = trio.Event()
        shared: bytes | None = None  # the root, once the DAG is known to be large enough to share

        async def worker() -> None:
            nonlocal remaining, progress, fetched, shared
            while remaining:
                if not own and not others:
                    await progress.wait()
                    continue
                cid = own.popleft() if own else others.popleft()
                self._queued.discard(cid)
                children, size, dag_bytes = await self._children(cid, root, shared)
                fetched += size
                if cid == root and dag_bytes > SHARED_DAG_BYTES:
                    shared = root
                leaves = [c for c in children if codec_of(c) != DAG_PB]
                if leaves:  # one query for a whole level instead of one per leaf
                    here = self.store.present(leaves)
                    children = [c for c in children if c not in here]
                random.shuffle(children)
                now = trio.current_time()
                self._queued.update(children)
                for child in children:
                    mine = self.planner.share_owner(child, shared, now) is None
                    (own if mine else others).append(child)
                remaining += len(children) - 1
                progress.set()
                progress = trio.Event()

        try:
            async with trio.open_nursery() as nursery:
                for _ in range(window):
                    nursery.start_soon(worker)
        finally:  # cancelled (the name moved on): what it had queued is no longer coming
            self._queued.difference_update(own, others)
        await self.flush()
        return fetched

    async def _children(self, cid: bytes, root: bytes, shared: bytes | None) -> tuple[list[bytes], int, int]:
        """The links of a block (fetching it if it is not here), the bytes fetched, and the
        bytes of the DAG under it as its links record them. `shared`: the root of a DAG
        whose leaves are shared among its fetchers."""
        if codec_of(cid) != DAG_PB:  # leaves already stored were left out by the caller
            if cid in self._batch or (cid == root and self.store.has(cid)):
                return [], 0, 0
            data = await self.get(cid, shared)
            return [], len(data), len(data)
        data, size = self.local_block(cid), 0
        if data is None:
            data = await self.get(cid, shared)
            size = len(data)
        try:
            links = decode_dagpb(data).links
        except DecodeError:
            log.warning("block %s is not valid dag-pb; its subtree is skipped", cid.hex())
            return [], size, len(data)
        below = len(data) + sum(link.tsize for link in links)
        return [normalize(link.cid) for link in links], size, below

    # what the network brings ---------------------------------------------------------------
    def receive_presences(self, peer: Any, presences: list[tuple[bytes, int]]) -> None:
        for cid, kind in presences:
            cid = normalize(cid)
            if kind == bm.HAVE:
                self.planner.have(peer, cid)
            else:
                self.planner.dont_have(peer, cid)
        self._wake.set()
        self._send_planned()

    async def receive_blocks(self, peer: Any, unhashed: list[tuple[bytes, bytes]]) -> None:
        """Hashed on a worker thread while the network reads on; bounded, so a fast sender
        cannot make us buffer without limit."""
        size = sum(len(data) for _, data in unhashed)
        while self._unhashed_bytes and self._unhashed_bytes + size > HASHING_BYTES:
            await self._hashed.wait()
        self._unhashed.append((peer, unhashed))
        self._unhashed_bytes += size
        self._to_hash.set()

    def peer_asked(self, peer: Any, cid: bytes) -> None:
        self.planner.peer_asked(peer, cid)

    async def peer_joined(self, peer: Any) -> None:
        if peer in self.members.block_peers():  # it may have left before this ran
            self.planner.peer_joined(peer, member=peer in self.members.members())
            self._wake.set()

    def peer_left(self, peer: Any) -> None:
        self.planner.peer_left(peer)
        self._wake.set()

    def peer_is_legacy(self, peer: Any) -> None:
        if self.planner.peer_is_legacy(peer):
            self._wake.set()

    async def _hasher(self) -> None:
        """Everything received since the last trip goes to the worker thread in one trip.
        Kubo sends each block in a message of its own: a trip per message, one at a time,
        held its blocks back 90 ms, and with them the wants that replace them (a rollout from
        Kubo ran at 65 MiB/s with one want of our 32 on the wire)."""
        while True:
            await self._to_hash.wait()
            self._to_hash = trio.Event()
            received, self._unhashed = self._unhashed, []
            if not received:
                continue
            try:
                async with self._batch_lock:  # the batch is not swapped for a commit meanwhile
                    results = await trio.to_thread.run_sync(self._hash_and_write, self._batch, received)
            except (StorageFull, OSError) as exc:  # the wants stay open: asked again after BLOCK_TIMEOUT
                self._storage_failed(exc)
                continue
            finally:
                self._unhashed_bytes -= sum(len(d) for _, blocks in received for _, d in blocks)
                self._hashed.set()
                self._hashed = trio.Event()
            for (peer, _), (wanted, unwanted) in zip(received, results, strict=True):
                for cid, data in wanted:
                    self._received(peer, cid, data)
                if any(cid not in self._recent for cid in unwanted):
                    self._lying(peer)

    def _hash_and_write(self, batch: Batch, received: list[tuple[Any, list[tuple[bytes, bytes]]]]
                        ) -> list[tuple[list, list[bytes]]]:
        """Worker thread: per message, (wanted blocks, now stored; CIDs of the others). The
        waiters are only read here: a stale answer costs at most a stored block that nobody
        waits for."""
        results, stored = [], []
        for _, unhashed in received:
            wanted, unwanted = [], []
            for cid, data in bm.hash_blocks(unhashed):
                cid = self._wanted_as(cid)
                waiter = self._waiters.get(cid)
                if waiter is not None and not waiter.done.is_set():
                    wanted.append((cid, data))
                else:
                    unwanted.append(cid)
            results.append((wanted, unwanted))
            stored += wanted
        batch.put_many(stored, bulk=True)
        return results

    def _wanted_as(self, cid: bytes) -> bytes:
        """The CID we want these bytes under. Bitswap 1.0 sends bare blocks, which arrive as
        dag-pb; the same digest under the raw codec names the very same bytes."""
        if cid in self._waiters:
            return cid
        codec = codec_of(cid)
        if codec not in (DAG_PB, RAW):
            return cid
        other = cid_from_digest(RAW if codec == DAG_PB else DAG_PB, digest_of(cid)[1])
        return other if other in self._waiters else cid

    def _received(self, peer: Any, cid: bytes, data: bytes) -> None:
        waiter = self._waiters.pop(cid, None)
        if waiter is None or waiter.done.is_set():
            return  # met already: the same block twice in a message, or from two peers at once
        self.planner.received(peer, cid, trio.current_time())
        self._likely_holders.pop(cid, None)
        self.received_bytes += len(data)
        waiter.data = data
        if codec_of(cid) == DAG_PB:
            self._remember_holder_of_children(cid, data, peer)
        waiter.done.set()
        self._recent.append(cid)
        self.on_block(cid, data)
        self._wake.set()
        self._send_planned()
        if self._batch.bytes >= COMMIT_BYTES:
            self._commit_now.set()

    def _remember_holder_of_children(self, cid: bytes, data: bytes, peer: Any) -> None:
        """A peer that sent a node most likely holds what it links to (go-bitswap's sessions
        bet the same way)."""
        holders = self._likely_holders
        for child in child_cids_of(data):  # bytes that are no dag-pb node: said by whoever reads them
            holders[child] = peer
        while len(holders) > HOLDERS_REMEMBERED:  # the oldest first: a running fetch keeps its own
            del holders[next(iter(holders))]

    def _lying(self, peer: Any) -> None:
        """A block nobody asked for: altered on the way or sent by a broken peer."""
        self.rejected_blocks += 1
        log.warning("peer %s sent a block that matches no CID we asked for; asking others", peer)
        self.planner.lying(peer, trio.current_time())
        self._wake.set()
        self._send_planned()

    def _storage_failed(self, exc: Exception) -> None:
        now = trio.current_time()
        if now - self._storage_error_logged >= 10:  # once per episode, not once per message
            self._storage_error_logged = now
            log.error("cannot store fetched blocks (%s); transfers wait for room", exc)

    # planning and committing ----------------------------------------------------------------
    async def _scheduler(self) -> None:
        while True:
            with trio.move_on_after(FULL_PASS_EVERY):
                await self._wake.wait()
            self._wake = trio.Event()
            self.planner.plan(trio.current_time())
            self._send_planned()

    def _send_planned(self) -> None:
        for peer, wants in self.planner.take_outgoing().items():
            self.network.send(peer, wants=wants)

    async def _committer(self) -> None:
        while True:
            with trio.move_on_after(COMMIT_EVERY):
                await self._commit_now.wait()
            self._commit_now = trio.Event()
            if not len(self._batch):
                continue
            async with self._batch_lock:
                batch, self._batch = self._batch, self.store.batch()
            self._commit_seq += 1
            seq = self._commit_seq
            self._committing = batch
            try:
                await trio.to_thread.run_sync(self.store.commit, batch)
            except Exception as exc:
                log.error("could not store fetched blocks: %s", exc)
            finally:
                self._committing = None
            self._committed_seq = seq
            self._committed.set()
            self._committed = trio.Event()
