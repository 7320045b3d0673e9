"""Bitswap's server side: answering peers' wants from what we hold.

Each peer's messages are answered in the order they came, by a task of that peer's own;
blocks are looked up and read on a worker thread, so the libp2p thread only moves bytes.
A want we cannot answer yet stays in the peer's ledger: once the block arrives here
(`block_arrived`), the block or a HAVE goes out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from edgefiles.node.blockstore import BlockStore, CorruptBlock
from edgefiles.node.cid import normalize

from . import message as bm
from .network import BitswapNetwork

log = logging.getLogger("edgefiles.bitswap")

LOOKUP_BLOCKS = 12  # want-blocks read per trip to the worker thread: a message's worth at 256 KiB
QUEUED_MESSAGES = 64  # per peer; a peer that sends faster than we look up waits

Entry = tuple[bytes, bm.Want]  # (the CID as the peer wrote it, its want)


class Ledgers:
    """What each peer asked us for that it has not got yet (pure)."""

    def __init__(self) -> None:
        self._by_peer: dict[Any, dict[bytes, Entry]] = {}

    def add(self, peer: Any, key: bytes, entry: Entry, limit: int | None = None) -> bool:
        """Record a want; past `limit` open wants the peer's oldest is forgotten (False): it
        was most likely answered elsewhere long ago, and a peer still waiting asks again."""
        ledger = self._by_peer.setdefault(peer, {})
        ledger.pop(key, None)  # asked again: it is the newest now
        ledger[key] = entry
        if limit is None or len(ledger) <= limit:
            return True
        del ledger[next(iter(ledger))]
        return False

    def get(self, peer: Any, key: bytes) -> Entry | None:
        return self._by_peer.get(peer, {}).get(key)

    def remove(self, peer: Any, key: bytes) -> None:
        self._by_peer.get(peer, {}).pop(key, None)

    def forget(self, peer: Any) -> None:
        self._by_peer.pop(peer, None)

    def arrived(self, key: bytes) -> list[tuple[Any, Entry]]:
        """The peers waiting for a block that is here now; their entries are met."""
        met = []
        for peer, ledger in self._by_peer.items():
            entry = ledger.pop(key, None)
            if entry is not None:
                met.append((peer, entry))
        return met


def lookup_groups(asks: list[tuple[bytes, Entry]]) -> list[list[tuple[bytes, Entry]]]:
    """The asks in groups of 1, 2, 4, ... up to LOOKUP_BLOCKS want-blocks (want-haves cost
    next to nothing): the first block leaves after one block's read, and the next ones while
    the following are read, rather than after all of a level of a DAG (Helia asks for 174
    blocks at once) was read. Kubo asks for 10 at a time and waits for all ten: a first group
    of one took its first block from 4-9 ms after the ask to 2-3 ms."""
    groups: list[list[tuple[bytes, Entry]]] = [[]]
    wanted, size = 0, 1
    for ask in asks:
        if ask[1][1].want_type == bm.WANT_BLOCK:
            if wanted == size:
                groups.append([])
                wanted, size = 0, min(2 * size, LOOKUP_BLOCKS)
            wanted += 1
        groups[-1].append(ask)
    return [group for group in groups if group]


class BitswapServer:
    def __init__(self, store: BlockStore, network: BitswapNetwork, nursery: trio.Nursery,
                 in_flight: Callable[[bytes], bytes | None] = lambda cid: None,
                 on_asked: Callable[[Any, bytes], None] = lambda peer, cid: None,
                 fetching: Callable[[bytes], bool] = lambda cid: False,
                 is_member: Callable[[Any], bool] = lambda peer: False):
        self.store = store
        self.network = network
        self._nursery = nursery
        self._in_flight = in_flight  # blocks fetched here and not indexed yet
        self._on_asked = on_asked
        self._fetching = fetching  # blocks this node fetches, or will ask for
        self._is_member = is_member
        self.ledgers = Ledgers()
        self._queues: dict[Any, trio.MemorySendChannel[bm.Message]] = {}

    async def receive(self, peer: Any, msg: bm.Message) -> None:
        """Queue a message's wants for `peer`'s task (started on its first message)."""
        if not (msg.wants or msg.full):
            return
        want_blocks = sum(1 for w in msg.wants if w.want_type == bm.WANT_BLOCK and not w.cancel)
        self.network.paced_by(peer, want_blocks, self._is_member(peer))
        queue = self._queues.get(peer)
        if queue is None:
            queue, queued = trio.open_memory_channel[bm.Message](QUEUED_MESSAGES)
            self._queues[peer] = queue
            self._nursery.start_soon(self._serve, peer, queued)
        await queue.send(msg)

    def peer_left(self, peer: Any) -> None:
        self.ledgers.forget(peer)
        queue = self._queues.pop(peer, None)
        if queue is not None:
            queue.close()

    def block_arrived(self, cid: bytes, data: bytes) -> None:
        """Tell peers that asked us for `cid` before we had it."""
        for peer, (asked_as, want) in self.ledgers.arrived(cid):
            if want.want_type == bm.WANT_BLOCK:
                self.network.send(peer, blocks=[(asked_as, data)])
            else:
                self.network.send(peer, presences=[(asked_as, bm.HAVE)])

    async def _serve(self, peer: Any, queued: trio.MemoryReceiveChannel[bm.Message]) -> None:
        """Answer a peer's messages in order; those that queued up meanwhile share one trip
        to a worker thread (a hop per message cost a few percent of a transfer's CPU)."""
        async with queued:
            async for msg in queued:
                batch = [msg]
                while len(batch) < QUEUED_MESSAGES:
                    try:
                        batch.append(queued.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                try:
                    await self._answer(peer, batch)
                except Exception:
                    log.exception("answering the wants of %s failed", peer)

    async def _until_drained(self, peer: Any) -> None:
        """Hold a peer's next wants back while more than its in-flight limit of blocks waits
        to be sent to it: a peer that asks faster than it reads fills only its own queue."""
        limiter = self.network.limiter
        if self.network.queued_bytes(peer) <= limiter.limits.inflight:
            return
        limiter.hit("inflight", peer, trio.current_time())
        while self.network.queued_bytes(peer) > limiter.limits.inflight and self._here(peer):
            await trio.sleep(0.01)

    def _here(self, peer: Any) -> bool:
        return peer in self._queues

    async def _answer(self, peer: Any, msgs: list[bm.Message]) -> None:
        """Each want goes into the ledger before its lookup, so a block that arrives during
        the lookup is sent by `block_arrived`; the lookup answers only what is still open."""
        asks: list[tuple[bytes, Entry]] = []
        limiter, evicted = self.network.limiter, False
        for msg in msgs:
            if msg.full:
                self.ledgers.forget(peer)
            for want in msg.wants:
                key = normalize(want.cid)
                if want.cancel:
                    self.ledgers.remove(peer, key)
                    continue
                self._on_asked(peer, key)
                entry = (want.cid, want)
                evicted |= not self.ledgers.add(peer, key, entry, limiter.limits.wants)
                asks.append((key, entry))
        if evicted:
            limiter.hit("wants", peer, trio.current_time())
        for group in lookup_groups(asks):
            await self._until_drained(peer)  # per group: one message may ask for gigabytes
            if not self._here(peer):
                return  # it left: answering would only open a dead outbox for it
            found = await trio.to_thread.run_sync(self._look_up, group)
            self._reply(peer, group, found)

    def _reply(self, peer: Any, asks: list[tuple[bytes, Entry]], found: list[bytes | bool | None]) -> None:
        blocks, presences = [], []
        for (key, entry), hit in zip(asks, found, strict=True):
            if self.ledgers.get(peer, key) is not entry:  # met by an arrival, cancelled or asked again
                continue
            asked_as, want = entry
            if hit is None:
                if want.send_dont_have or self._parked_in_vain(peer, key, want):
                    presences.append((asked_as, bm.DONT_HAVE))
                continue
            self.ledgers.remove(peer, key)
            if want.want_type == bm.WANT_BLOCK:
                blocks.append((asked_as, hit))
            else:
                presences.append((asked_as, bm.HAVE))
        self.network.send(peer, blocks=blocks, presences=presences)

    def _parked_in_vain(self, peer: Any, key: bytes, want: bm.Want) -> bool:
        """A member parked a want-block here (its share of a rollout is ours, by its count)
        for a block we neither have nor fetch: we count it as someone else's share. Say so
        now; the want stays in the ledger, and is answered should the block come."""
        return want.want_type == bm.WANT_BLOCK and self._is_member(peer) and not self._fetching(key)

    def _look_up(self, asks: list[tuple[bytes, Entry]]) -> list[bytes | bool | None]:
        """Worker thread: per want, the block (want-block) or True (want-have); None when
        it is not here."""
        out: list[bytes | bool | None] = []
        for key, (_, want) in asks:
            data = self._in_flight(key)
            if want.want_type == bm.WANT_HAVE:
                out.append(True if data is not None or self.store.has(key) else None)
            else:
                out.append(data if data is not None else self._readable(key))
        return out

    def _readable(self, cid: bytes) -> bytes | None:
        try:
            return self.store.get(cid, for_peer=True)
        except CorruptBlock:
            log.error("not serving block %s: it fails its hash check on disk", cid.hex())
            return None
