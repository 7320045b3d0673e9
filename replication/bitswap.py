"""Bitswap on raw libp2p streams: serves what we hold, fetches what we want (trio side).

Everything here runs on the libp2p (trio) side, so a transfer never crosses the asyncio
bridge per block: received messages are hashed and written to the pack on trio's worker
threads, one write per message, and indexed in batches (`_committer`).

Fetching: a want is first asked as want-have of every block peer; a block is then asked
(want-block) of the peer that has it with the fewest of our requests outstanding, so the
load spreads to whichever nodes already hold a block, not only the one that named it.
Only blocks we asked for are kept; a block whose bytes do not hash to a CID we want marks
its sender as lying: its outstanding requests move to other peers and it is asked last.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import trio
from edgefiles.node.blockstore import Batch, BlockStore, CorruptBlock, StorageFull
from edgefiles.node.cid import DAG_PB, RAW, cid_from_digest, codec_of, digest_of, normalize
from edgefiles.node.dagpb import decode as decode_dagpb
from edgefiles.node.protobuf import DecodeError

from . import bitswap_msg as bm
from .framing import read_frames
from .membership import IPFS_PEER, Membership

log = logging.getLogger("edgefiles.bitswap")

BLOCK_TIMEOUT = 10.0  # a requested block that does not come in time is asked elsewhere
REASK_HAVE = 3.0
PENALTY = 60.0
MESSAGE_BYTES = 2 << 20
COMMIT_BYTES = 32 << 20
COMMIT_EVERY = 0.2
DAG_WINDOW = 96
PEER_WINDOW = 32  # want-blocks outstanding at one peer: the rest go to others that have them
PARK_TIMEOUT = 8.0
PREFETCH_LIMIT = 512  # blocks asked ahead of readers at once (at 256 KiB: 128 MiB)


@dataclass
class _Want:
    cid: bytes
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    asked_have: dict[Any, float] = field(default_factory=dict)
    asked_block: Any = None
    asked_at: float = 0.0
    refused: set = field(default_factory=set)  # peers that said DONT_HAVE or timed out
    users: int = 0
    root: bytes | None = None  # the DAG a rollout wants this block for
    parked: bool = False  # asked of the peer whose share it is; it sends once it has it
    hint: Any = None


@dataclass
class _Outgoing:
    wants: list[bm.Want] = field(default_factory=list)
    blocks: list[tuple[bytes, bytes]] = field(default_factory=list)
    presences: list[tuple[bytes, int]] = field(default_factory=list)


class Bitswap:
    def __init__(self, host: Any, membership: Membership, store: BlockStore, nursery: trio.Nursery):
        self.host = host
        self.members = membership
        self.store = store
        self._nursery = nursery
        self._ledgers: dict[Any, dict[bytes, tuple[bytes, bm.Want]]] = {}
        self._outboxes: dict[Any, _Outbox] = {}
        self._wants: dict[bytes, _Want] = {}
        self._haves: dict[bytes, set] = {}
        self._inflight: dict[Any, int] = {}
        self._penalised: dict[Any, float] = {}
        self._recent: deque[bytes] = deque(maxlen=4096)
        self._fetching: dict[bytes, set] = {}  # block -> peers that asked us for it (recent)
        self._fetching_order: deque[bytes] = deque()
        self._rings: dict[bytes, tuple[float, list]] = {}
        self._todo: set[bytes] = set()  # wants to plan on the next scheduling pass
        self._waiting: dict[bytes, None] = {}  # wants whose holders are all at PEER_WINDOW (in order)
        self._full_now = False
        self._sources: dict[bytes, Any] = {}  # inner block -> the peer that sent it
        self._wake = trio.Event()
        self._hashing = trio.Semaphore(4)  # received messages (<= 2 MiB each) being hashed
        self._batch = store.batch()
        self._batch_lock = trio.Lock()  # held while a worker thread writes into the batch
        self._committing: Batch | None = None  # the batch being made durable and indexed
        self._prefetches = 0
        self._legacy: set = set()  # peers that speak only Bitswap 1.0: no HAVE, no DONT_HAVE
        self._storage_error_logged = -math.inf
        self._commit_seq = 0  # batches handed to commit
        self._committed_seq = 0
        self._committed = trio.Event()
        self._commit_now = trio.Event()
        self.sent_bytes = 0
        self.received_bytes = 0
        self.rejected_blocks = 0

    def start(self) -> None:
        from libp2p.custom_types import TProtocol

        handler = self.members.gate(self._inbound, IPFS_PEER)
        for proto in bm.PROTOCOLS:
            self.host.set_stream_handler(TProtocol(proto), handler)
        self.members.on_admitted.append(self._peer_joined)
        self.members.on_left.append(self._peer_left)
        self._nursery.start_soon(self._scheduler)
        self._nursery.start_soon(self._committer)

    # fetching (the client side) --------------------------------------------------------
    async def get(self, cid: bytes, root: bytes | None = None, hint: Any = None) -> bytes:
        """One block from the swarm, verified and stored (not yet durable: see `flush`).

        `hint`: a peer likely to have it (the one that sent its parent), asked straight away."""
        cid = normalize(cid)
        want = self._wants.get(cid)
        if want is None:
            want = self._wants[cid] = _Want(cid, root=root, hint=hint)
            self._todo.add(cid)
            self._wake.set()
        want.users += 1
        try:
            await want.done.wait()
        finally:
            want.users -= 1
            if want.users == 0 and not want.done.is_set():
                self._cancel(want)
        assert want.data is not None
        return want.data

    async def flush(self) -> None:
        """Wait until every block received so far is durable and indexed."""
        target = self._commit_seq + (1 if self._batch.entries else 0)
        self._commit_now.set()
        while self._committed_seq < target:
            await self._committed.wait()

    async def fetch_dag(self, root: bytes, window: int = DAG_WINDOW) -> int:
        """Fetch every block of the DAG under `root` that is not stored here yet, then flush.

        When several nodes fetch the same DAG at once, each block is one node's share (see
        `_designated`): a node fetches its own share first, wherever it is, and asks the
        others for theirs, so the node that has everything serves each block about once.
        """
        root = normalize(root)
        fetched = 0
        own: deque[bytes] = deque([root])  # our share and the DAG's inner nodes: first
        hints: dict[bytes, Any] = {}
        others: deque[bytes] = deque()  # other fetchers' shares: asked of them, last
        remaining = 1
        progress = trio.Event()

        async def worker() -> None:
            nonlocal remaining, progress, fetched
            while remaining:
                if not own and not others:
                    await progress.wait()
                    continue
                cid = own.popleft() if own else others.popleft()
                hint = hints.pop(cid, None)
                children, size = await self._children(cid, root, hint)
                fetched += size
                leaves = [c for c in children if codec_of(c) != DAG_PB]
                if leaves:  # one query for a whole level instead of one per leaf
                    here = self.store.present(leaves)
                    children = [c for c in children if c not in here]
                random.shuffle(children)
                source = self._sources.get(cid)
                for child in children:
                    (own if self._designated(child, root) is None else others).append(child)
                    if source is not None:
                        hints[child] = source
                remaining += len(children) - 1
                progress.set()
                progress = trio.Event()

        async with trio.open_nursery() as nursery:
            for _ in range(window):
                nursery.start_soon(worker)
        await self.flush()
        return fetched

    async def _children(self, cid: bytes, root: bytes, hint: Any) -> tuple[list[bytes], int]:
        """The links of a block (fetching it if it is not here) and the bytes fetched."""
        if codec_of(cid) != DAG_PB:  # leaves already stored were left out by the caller
            if cid in self._batch.entries or (cid == root and self.store.has(cid)):
                return [], 0
            return [], len(await self.get(cid, root, hint))
        data, size = self.stored(cid), 0
        if data is None:
            data = await self.get(cid, root, hint)
            size = len(data)
        try:
            return [normalize(link.cid) for link in decode_dagpb(data).links], size
        except DecodeError:
            log.warning("block %s is not valid dag-pb; its subtree is skipped", cid.hex())
            return [], size

    def _designated(self, cid: bytes, root: bytes | None) -> Any:
        """The peer whose share of a concurrent rollout `cid` is; None when it is ours (or
        nobody else is fetching `root`). Peers that asked us for the root are fetching it too;
        every fetcher computes the same split from the same set."""
        if root is None or cid == root or codec_of(cid) == DAG_PB:  # small, and needed to go on
            return None
        ring = self._ring(root)
        if len(ring) < 2:
            return None
        owner = ring[int.from_bytes(cid[-4:], "big") % len(ring)]
        return None if owner == self.host.get_id() else owner

    def _ring(self, root: bytes) -> list:
        """Fetchers of `root` (us included) in peer id order; cached briefly, as it is asked
        for every want on every scheduling pass."""
        now = trio.current_time()
        cached = self._rings.get(root)
        if cached is not None and now - cached[0] < 0.25:
            return cached[1]
        members = set(self.members.members())
        fetchers = [p for p in self._fetching.get(root, ()) if p in members]
        ring = sorted([self.host.get_id(), *fetchers], key=lambda p: p.to_bytes()) if fetchers else []
        if len(self._rings) > 64:
            self._rings.clear()
        self._rings[root] = (now, ring)
        return ring

    def stored(self, cid: bytes) -> bytes | None:
        """A block held here: indexed, or fetched and written but not indexed yet (a
        read-ahead got it before the reader asked). None when it is not here."""
        for batch in (self._batch, self._committing):
            place = batch.entries.get(cid) if batch is not None else None
            if place is not None:
                return self.store.read_place(place)
        try:
            return self.store.get(cid)
        except CorruptBlock:
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
            if self.stored(cid) is None:
                with trio.move_on_after(timeout):
                    await self.get(cid)
        finally:
            self._prefetches -= 1

    def _cancel(self, want: _Want) -> None:
        self._wants.pop(want.cid, None)
        self._waiting.pop(want.cid, None)
        for peer in set(want.asked_have) | ({want.asked_block} if want.asked_block else set()):
            self._outbox(peer).wants.append(bm.Want(want.cid, cancel=True))
            self._kick(peer)
        self._release(want, refused=False)

    async def _scheduler(self) -> None:
        last_full = trio.current_time()
        while True:
            with trio.move_on_after(0.5):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            # timeouts, re-asks, moved shares, peers come or gone: every want
            full = self._full_now or now - last_full >= 0.5
            if full:
                last_full, self._full_now = now, False
            self._schedule(now, full)

    def _schedule(self, now: float, full: bool) -> None:
        """Plan the wants that need it: new ones, released ones, ones with news about who
        has them; on a full pass every want (so a pass per block stays cheap)."""
        peers = self.members.block_peers()
        if not peers:
            return
        if full:
            todo = list(self._wants)
        else:  # of the wants waiting for room at a peer, only as many as there is room for
            todo = list(dict.fromkeys([*self._todo, *islice(self._waiting, self._room(peers))]))
        for cid in todo:
            want = self._wants.get(cid)
            if want is not None and not want.done.is_set() and self._plan(want, peers, now):
                self._waiting[cid] = None
            else:
                self._waiting.pop(cid, None)
            self._todo.discard(cid)
        for peer in peers:
            self._kick(peer)

    def _room(self, peers: list) -> int:
        return sum(max(0, PEER_WINDOW - self._inflight.get(p, 0)) for p in peers)

    def _plan(self, want: _Want, peers: list, now: float) -> bool:
        """Ask for one want; whether it waits for room at the peers that have it."""
        owner = self._designated(want.cid, want.root)
        if want.asked_block is not None:
            limit = PARK_TIMEOUT if want.parked else BLOCK_TIMEOUT
            moved = want.parked and owner != want.asked_block  # the fetchers changed
            if want.asked_block in peers and now - want.asked_at < limit and not moved:
                return False
            self._release(want, refused=not moved)
        if owner is not None and owner in peers and owner not in want.refused:
            self._park(want, owner, now)
            return False
        holders = [p for p in self._haves.get(want.cid, ()) if p in peers and p not in want.refused]
        if not holders and want.hint in peers and want.hint not in want.refused and not want.asked_have:
            holders = [want.hint]  # skip the want-have round trip: it sent the parent
        if not holders:
            holders = self._legacy_candidates(want, peers, now)
        if holders:
            random.shuffle(holders)
            best = min(holders, key=lambda p: self._load(p, now))
            if self._inflight.get(best, 0) >= PEER_WINDOW:
                return True  # planned again once a peer has room
            self._ask_block(want, best, now)
            return False
        for peer in peers:
            if now - want.asked_have.get(peer, -math.inf) >= REASK_HAVE:
                want.asked_have[peer] = now
                want.refused.discard(peer)
                self._outbox(peer).wants.append(bm.Want(want.cid, bm.WANT_HAVE, send_dont_have=True))
        return False  # news (HAVE, DONT_HAVE) or the next full pass brings it back

    def _legacy_candidates(self, want: _Want, peers: list, now: float) -> list:
        """1.0 peers cannot answer want-have: ask them for the block itself, once the peers
        that can answer have had REASK_HAVE to say HAVE (a wrong guess costs BLOCK_TIMEOUT)."""
        legacy = [p for p in peers if p in self._legacy and p not in want.refused]
        asked = [t for p, t in want.asked_have.items() if p not in self._legacy]
        if not legacy or (asked and now - min(asked) < REASK_HAVE):
            return []
        return legacy

    def _learned_legacy(self, peer: Any) -> None:
        if peer not in self._legacy:
            self._legacy.add(peer)
            self._full_now = True  # plan every want again: this peer may have them
            self._wake.set()

    def _load(self, peer: Any, now: float) -> tuple[bool, int]:
        return self._penalised.get(peer, 0) > now, self._inflight.get(peer, 0)

    def _ask_block(self, want: _Want, peer: Any, now: float) -> None:
        want.asked_block, want.asked_at = peer, now
        self._inflight[peer] = self._inflight.get(peer, 0) + 1
        self._outbox(peer).wants.append(bm.Want(want.cid, bm.WANT_BLOCK, send_dont_have=True))

    def _park(self, want: _Want, peer: Any, now: float) -> None:
        """Ask the owner of this share without a DONT_HAVE: it sends the block once it has it."""
        want.asked_block, want.asked_at, want.parked = peer, now, True
        self._outbox(peer).wants.append(bm.Want(want.cid, bm.WANT_BLOCK))

    def _release(self, want: _Want, refused: bool) -> None:
        peer = want.asked_block
        if peer is None:
            return
        if want.parked:  # it would still send the block once it has it
            self._outbox(peer).wants.append(bm.Want(want.cid, cancel=True))
        else:
            self._inflight[peer] = max(0, self._inflight.get(peer, 1) - 1)
        want.asked_block, want.parked = None, False
        self._todo.add(want.cid)
        if refused:
            want.refused.add(peer)
            self._haves.get(want.cid, set()).discard(peer)

    def _received(self, peer: Any, cid: bytes, data: bytes) -> None:
        want = self._wants.get(cid)
        if want is None or want.done.is_set():
            return  # met already: the same block twice in a message, or from two peers at once
        self.received_bytes += len(data)
        if want.asked_block is not None:
            if want.asked_block != peer:
                self._outbox(want.asked_block).wants.append(bm.Want(cid, cancel=True))
            self._release(want, refused=False)
        want.data = data
        if codec_of(cid) == DAG_PB:
            if len(self._sources) > 4096:
                self._sources.clear()
            self._sources[cid] = peer
        want.done.set()
        del self._wants[cid]
        self._waiting.pop(cid, None)
        self._haves.pop(cid, None)
        self._recent.append(cid)
        self._stored(cid, data)
        self._wake.set()
        if self._batch.bytes >= COMMIT_BYTES:
            self._commit_now.set()

    def _lying(self, peer: Any) -> None:
        """A block nobody asked for: altered on the way or sent by a broken peer."""
        self.rejected_blocks += 1
        log.warning("peer %s sent a block that matches no CID we asked for; asking others", peer)
        self._penalised[peer] = trio.current_time() + PENALTY
        for want in self._wants.values():
            if want.asked_block == peer:
                self._release(want, refused=True)
        self._wake.set()

    # committing fetched blocks ---------------------------------------------------------
    async def _committer(self) -> None:
        while True:
            with trio.move_on_after(COMMIT_EVERY):
                await self._commit_now.wait()
            self._commit_now = trio.Event()
            if not self._batch.entries:
                continue
            async with self._batch_lock:
                batch, self._batch = self._batch, self.store.batch()
            self._commit_seq += 1
            seq = self._commit_seq
            self._committing = batch
            try:
                await trio.to_thread.run_sync(self.store.commit_sync, batch)
            except Exception as exc:
                log.error("could not store fetched blocks: %s", exc)
            finally:
                self._committing = None
            self._committed_seq = seq
            self._committed.set()
            self._committed = trio.Event()

    # serving (the server side) ---------------------------------------------------------
    async def _inbound(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        if stream.get_protocol() == bm.LEGACY:
            self._learned_legacy(peer)
        try:
            async for body in read_frames(stream, bm.MAX_MESSAGE):
                msg = bm.decode_unhashed(body)
                self._handle(peer, msg)
                if msg.unhashed:
                    # hash on a worker thread while this one reads on; bounded, so a fast
                    # sender cannot make us buffer without limit
                    await self._hashing.acquire()
                    self._nursery.start_soon(self._hash_and_take, peer, msg.unhashed)
        except DecodeError as exc:
            log.warning("closing bitswap stream from %s: %s", peer, exc)
        except Exception as exc:
            log.debug("bitswap stream from %s ended: %s", peer, exc)
        finally:
            try:
                await stream.reset()
            except Exception:
                pass

    async def _hash_and_take(self, peer: Any, unhashed: list[tuple[bytes, bytes]]) -> None:
        """Hash and store on a worker thread, so this thread only reads the network. The
        batch cannot be swapped for a commit meanwhile (`_batch_lock`)."""
        try:
            async with self._batch_lock:
                wanted, unwanted = await trio.to_thread.run_sync(self._hash_and_write, self._batch, unhashed)
        except (StorageFull, OSError) as exc:  # the wants stay open: asked again after BLOCK_TIMEOUT
            self._storage_failed(exc)
            return
        finally:
            self._hashing.release()
        for cid, data in wanted:
            self._received(peer, cid, data)
        if any(cid not in self._recent for cid in unwanted):
            self._lying(peer)

    def _storage_failed(self, exc: Exception) -> None:
        now = trio.current_time()
        if now - self._storage_error_logged >= 10:  # once per episode, not once per message
            self._storage_error_logged = now
            log.error("cannot store fetched blocks (%s); transfers wait for room", exc)

    def _hash_and_write(self, batch: Batch, unhashed: list[tuple[bytes, bytes]]) -> tuple[list, list[bytes]]:
        """Worker thread: (wanted blocks, now stored; CIDs of the others). `_wants` is only
        read here: a stale answer costs at most a stored block that nobody waits for."""
        wanted, unwanted = [], []
        for cid, data in bm.hash_blocks(unhashed):
            cid = self._wanted_as(cid)
            want = self._wants.get(cid)
            if want is not None and not want.done.is_set():
                wanted.append((cid, data))
            else:
                unwanted.append(cid)
        batch.put_many(wanted, bulk=True)
        return wanted, unwanted

    def _wanted_as(self, cid: bytes) -> bytes:
        """The CID we want these bytes under. Bitswap 1.0 sends bare blocks, which arrive as
        dag-pb; the same digest under the raw codec names the very same bytes."""
        if cid in self._wants:
            return cid
        codec = codec_of(cid)
        if codec not in (DAG_PB, RAW):
            return cid
        other = cid_from_digest(RAW if codec == DAG_PB else DAG_PB, digest_of(cid)[1])
        return other if other in self._wants else cid

    def _handle(self, peer: Any, msg: bm.Message) -> None:
        if msg.wants or msg.full:
            self._answer_wants(peer, msg)
        for cid, kind in msg.presences:
            cid = normalize(cid)
            if cid not in self._wants:
                continue
            self._todo.add(cid)
            if kind == bm.HAVE:
                self._haves.setdefault(cid, set()).add(peer)
            else:
                want = self._wants[cid]
                want.refused.add(peer)
                if want.asked_block == peer:
                    self._release(want, refused=True)
            self._wake.set()

    def _answer_wants(self, peer: Any, msg: bm.Message) -> None:
        ledger = self._ledgers.setdefault(peer, {})
        if msg.full:
            ledger.clear()
        out = self._outbox(peer)
        for want in msg.wants:
            key = normalize(want.cid)
            if want.cancel:
                ledger.pop(key, None)
                continue
            self._note_fetcher(key, peer)
            if want.want_type == bm.WANT_HAVE and self.store.has(key):
                ledger.pop(key, None)
                out.presences.append((want.cid, bm.HAVE))
                continue
            data = self._readable(key) if want.want_type == bm.WANT_BLOCK else None
            if data is None:
                ledger[key] = (want.cid, want)
                if want.send_dont_have:
                    out.presences.append((want.cid, bm.DONT_HAVE))
            else:
                ledger.pop(key, None)
                out.blocks.append((want.cid, data))
        self._kick(peer)

    def _note_fetcher(self, cid: bytes, peer: Any) -> None:
        asked = self._fetching.get(cid)
        if asked is None:
            asked = self._fetching[cid] = set()
            self._fetching_order.append(cid)
            if len(self._fetching_order) > 16384:
                self._fetching.pop(self._fetching_order.popleft(), None)
        asked.add(peer)

    def _readable(self, cid: bytes) -> bytes | None:
        try:
            return self.store.get(cid, for_peer=True)
        except CorruptBlock:
            log.error("not serving block %s: it fails its hash check on disk", cid.hex())
            return None

    def _stored(self, cid: bytes, data: bytes) -> None:
        """Tell peers that asked us for `cid` before we had it."""
        for peer, ledger in self._ledgers.items():
            entry = ledger.pop(cid, None)
            if entry is None:
                continue
            asked_as, want = entry
            out = self._outbox(peer)
            if want.want_type == bm.WANT_BLOCK:
                out.blocks.append((asked_as, data))
            else:
                out.presences.append((asked_as, bm.HAVE))
            self._kick(peer)

    # per-peer outgoing messages --------------------------------------------------------
    def _outbox(self, peer: Any) -> _Outgoing:
        box = self._outboxes.get(peer)
        if box is None:
            box = self._outboxes[peer] = _Outbox(self, peer)
            self._nursery.start_soon(box.run)
        return box.pending

    def _kick(self, peer: Any) -> None:
        box = self._outboxes.get(peer)
        if box is not None and (box.pending.wants or box.pending.blocks or box.pending.presences):
            box.ready.set()

    async def _peer_joined(self, peer: Any) -> None:
        self._full_now = True
        self._wake.set()

    def _peer_left(self, peer: Any) -> None:
        self._ledgers.pop(peer, None)
        self._legacy.discard(peer)
        box = self._outboxes.pop(peer, None)
        if box is not None:
            box.closed = True
            box.ready.set()
        for want in self._wants.values():
            want.asked_have.pop(peer, None)
            if want.asked_block == peer:
                self._release(want, refused=False)
        for holders in self._haves.values():
            holders.discard(peer)
        self._inflight.pop(peer, None)
        self._full_now = True
        self._wake.set()


class _Outbox:
    """One long-lived stream per peer for everything we send it (replies included, on our
    own stream rather than the asker's: Helia only reads replies from a stream it accepted)."""

    def __init__(self, engine: Bitswap, peer: Any):
        self.engine = engine
        self.peer = peer
        self.pending = _Outgoing()
        self.ready = trio.Event()
        self.closed = False
        self._stream: Any = None

    async def run(self) -> None:
        while not self.closed:
            await self.ready.wait()
            self.ready = trio.Event()
            while not self.closed and (self.pending.wants or self.pending.blocks or self.pending.presences):
                msg = self._take()
                try:
                    await self._send(msg)
                except Exception as exc:
                    log.debug("bitswap send to %s failed: %s", self.peer, exc)
                    self._stream = None
                    await trio.sleep(0.2)
                    if self.peer not in self.engine.host.get_connected_peers():
                        self.closed = True
        if self._stream is not None:
            try:
                await self._stream.close()
            except Exception:
                pass

    def _take(self) -> bm.Message:
        p = self.pending
        blocks, size = [], 0
        while p.blocks and (not blocks or size + len(p.blocks[0][1]) <= MESSAGE_BYTES):
            cid, data = p.blocks.pop(0)
            blocks.append((cid, data))
            size += len(data)
        msg = bm.Message(wants=p.wants, blocks=blocks, presences=p.presences)
        p.wants, p.presences = [], []
        return msg

    async def _send(self, msg: bm.Message) -> None:
        from libp2p.custom_types import TProtocol

        if self._stream is None:
            self._stream = await self.engine.host.new_stream(self.peer, [TProtocol(p) for p in bm.PROTOCOLS])
        legacy = self._stream.get_protocol() == bm.LEGACY
        if legacy:
            self.engine._learned_legacy(self.peer)
        # a view: Yamux slices it into 64 KiB frames without copying each slice first
        await self._stream.write(memoryview(bm.frame(msg, legacy)))
        self.engine.sent_bytes += sum(len(d) for _, d in msg.blocks)
