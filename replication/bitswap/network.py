"""Bitswap's network side: the only part that knows streams. It reads framed messages from
peers' streams and hands them on whole, and sends each peer what the client and the
server queue for it, on one long-lived stream of our own per peer.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from edgefiles.node.protobuf import DecodeError

from .. import inbound_streams
from ..framing import read_frames
from ..limits import PeerLimiter, PeerLimits
from ..membership import IPFS_PEER, Membership
from . import message as bm

log = logging.getLogger("edgefiles.bitswap")

MESSAGE_BYTES = 3 << 20  # block bytes per message we send (go-bitswap and Helia take 4 MiB messages)
SEND_RETRY = 0.2
# A peer that asks for this few blocks at a time (Kubo: 10) waits for them before it asks on:
# each block in a message of its own lets it take one while the next is on the wire (us ->
# Kubo went from 26 to 35-40 MiB/s). Peers that ask for many (Helia: 174; our own nodes) get
# big messages, which cost less per byte (one block per message halves node <-> node).
FEW_WANTS = 16
# Block messages on their way at once to a peer outside the swarm, each on a stream of its own:
# Kubo reads a stream's next message only once it has stored the blocks of the last (its
# flatfs syncs each), so on one stream its pin from us waited on every sync in turn (us ->
# Kubo, pin: 1.10-1.12x with 4 or 8 against 1, alternating rounds)
LANES = 4


def message_bytes(want_blocks: int) -> int:
    """Block bytes per message for a peer whose last message asked for `want_blocks` blocks
    (0: one block per message, however small)."""
    return 0 if 0 < want_blocks <= FEW_WANTS else MESSAGE_BYTES

Receiver = Callable[[Any, bm.Message], Awaitable[None]]


@dataclass
class Outgoing:
    wants: list[bm.Want] = field(default_factory=list)
    blocks: list[tuple[bytes, bytes]] = field(default_factory=list)
    presences: list[tuple[bytes, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.wants or self.blocks or self.presences)


class BitswapNetwork:
    def __init__(self, host: Any, membership: Membership, nursery: trio.Nursery,
                 protocols: tuple[str, ...] = bm.PROTOCOLS, limiter: PeerLimiter | None = None):
        self.host = host
        self.limiter = limiter or PeerLimiter(PeerLimits())
        self._streams: Counter[Any] = Counter()  # inbound streams open per peer
        self.members = membership
        self.protocols = protocols  # offered and answered, newest first
        self._nursery = nursery
        self._outboxes: dict[Any, _Outbox] = {}
        self.on_legacy: Callable[[Any], None] = lambda peer: None  # a peer speaks only 1.0
        self.sent_bytes = 0
        self.message_bytes: dict[Any, int] = {}  # per IPFS peer, from how it asks (`message_bytes`)
        self._receive: Receiver | None = None

    def start(self, receive: Receiver) -> None:
        """Hand every message from admitted peers to `receive`, in order per stream; it may
        wait, which holds back reading that stream (read lean where the peer is admitted
        already: `inbound_streams`; through the membership gate otherwise)."""
        from libp2p.custom_types import TProtocol

        self._receive = receive
        handler = self.members.gate(self._inbound, IPFS_PEER)
        for proto in self.protocols:
            self.host.set_stream_handler(TProtocol(proto), handler)
        inbound_streams.read_lean(self.host, self.protocols, self)

    def send(self, peer: Any, wants: list[bm.Want] = (), blocks: list[tuple[bytes, bytes]] = (),
             presences: list[tuple[bytes, int]] = ()) -> None:
        """Queue entries for `peer`; they leave in as few messages as they fit in."""
        if not (wants or blocks or presences):
            return
        box = self._outboxes.get(peer)
        if box is None or box.closed:  # a closed box (its peer went away once) takes nothing
            box = self._outboxes[peer] = _Outbox(self, peer)
            self._nursery.start_soon(box.run)
        box.pending.wants.extend(wants)
        box.pending.blocks.extend(blocks)
        box.pending.presences.extend(presences)
        box.ready.set()

    def paced_by(self, peer: Any, want_blocks: int, member: bool = False) -> None:
        """A peer asked for `want_blocks` blocks in one message: size what we send it so (a
        member of the swarm, whatever it asked before its handshake settled: batched)."""
        if member:
            self.message_bytes.pop(peer, None)
        elif want_blocks:
            self.message_bytes[peer] = message_bytes(want_blocks)

    def queued_bytes(self, peer: Any) -> int:
        """Block bytes waiting to be sent to `peer`, those on their way included."""
        box = self._outboxes.get(peer)
        return 0 if box is None else sum(len(data) for _, data in box.pending.blocks) + box.taken_bytes

    def peer_left(self, peer: Any) -> None:
        self.limiter.forget(peer)
        self.message_bytes.pop(peer, None)
        box = self._outboxes.pop(peer, None)
        if box is not None:
            box.close()

    # inbound streams (`inbound_streams.LeanProtocol`) -------------------------------------
    name = "bitswap"
    max_message = bm.MAX_MESSAGE

    def admits(self, peer: Any) -> bool:
        return self.members.admits(peer, IPFS_PEER)

    def opened(self, peer: Any, protocol: str) -> bool:
        if protocol == bm.LEGACY:
            self.on_legacy(peer)
        self._streams[peer] += 1
        return not self.limiter.over("streams", peer, self._streams[peer], trio.current_time())

    def closed(self, peer: Any) -> None:
        self._streams[peer] -= 1
        if self._streams[peer] <= 0:
            del self._streams[peer]

    async def message(self, peer: Any, body: bytes) -> None:
        if not self.limiter.take("messages", peer, 1, trio.current_time()):
            while not self.limiter.take("messages", peer, 1, trio.current_time(), quiet=True):
                await trio.sleep(1 / self.limiter.limits.messages)  # read slower: TCP pushes back
        await self._receive(peer, bm.decode_unhashed(body))

    async def _inbound(self, stream: Any) -> None:
        """A stream from a peer whose admission was not settled when it came."""
        peer = stream.muxed_conn.peer_id
        ended_cleanly = False
        try:
            if not self.opened(peer, stream.get_protocol()):
                return
            async for body in read_frames(stream, bm.MAX_MESSAGE):
                await self.message(peer, body)
            ended_cleanly = True
        except DecodeError as exc:
            log.warning("closing %s stream from %s: %s", self.name, peer, exc)
        except Exception as exc:
            log.debug("%s stream from %s ended: %r", self.name, peer, exc)
        finally:
            self.closed(peer)
            # a sender that closed its side waits for ours (Helia sends every message on a
            # stream of its own): a reset there fails its send although every byte arrived
            try:
                await (stream.close() if ended_cleanly else stream.reset())
            except Exception:
                pass


class _Outbox:
    """Long-lived streams to a peer for everything we send it (replies included, on our own
    streams rather than the asker's: Helia only reads replies from a stream it accepted):
    one for messages in turn, and for a peer outside the swarm up to LANES more for blocks."""

    def __init__(self, network: BitswapNetwork, peer: Any):
        self.network = network
        self.peer = peer
        self.pending = Outgoing()
        self.ready = trio.Event()
        self.closed = False
        self.taken_bytes = 0  # block bytes taken from `pending` and not sent yet
        self._main: Any = None  # the stream of messages in turn: every want and cancel, in order
        self._lanes: list[Any] = []  # streams open and free for blocks on their way at once
        self._sending = 0
        self._sent = trio.Event()  # set (and made anew) whenever a send ends

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while not self.closed:
                await self.ready.wait()
                self.ready = trio.Event()
                while not self.closed and self.pending:
                    msg, size = self._take()
                    in_turn = bool(msg.wants) or self.peer not in self.network.message_bytes
                    while self._sending >= (1 if in_turn else LANES) and not self.closed:
                        await self._sent.wait()
                    if self.closed:
                        break
                    self._sending += 1
                    nursery.start_soon(self._send_once_more_on_failure, msg, size, in_turn)
        for stream in [self._main, *self._lanes]:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.close()

    async def _send_once_more_on_failure(self, msg: bm.Message, size: int, in_turn: bool) -> None:
        """`msg` in turn (on the main stream, alone) or on a lane. A stream the peer reset
        takes the message with it; a want lost so would wait a whole block timeout, so the
        message goes once more on a fresh stream."""
        stream = self._main if in_turn else (self._lanes.pop() if self._lanes else None)
        try:
            for attempt in (1, 2):
                try:
                    stream = await self._send(msg, size, stream)
                    break
                except Exception as exc:
                    log.debug("bitswap send to %s failed (attempt %d): %s", self.peer, attempt, exc)
                    if stream is not None:
                        with contextlib.suppress(Exception):
                            await stream.reset()
                    stream = None
                    await trio.sleep(SEND_RETRY)
                    if self.closed or self.peer not in self.network.host.get_connected_peers():
                        self.close()
                        return
        finally:
            self.taken_bytes -= size
            self._sending -= 1
            self._sent.set()
            self._sent = trio.Event()
        if in_turn:
            self._main = stream
        elif stream is not None:
            self._lanes.append(stream)

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def _take(self) -> tuple[bm.Message, int]:
        """The next message from what is pending, and its block bytes."""
        p = self.pending
        limit = self.network.message_bytes.get(self.peer, MESSAGE_BYTES)
        blocks, size = [], 0
        while p.blocks and (not blocks or size + len(p.blocks[0][1]) <= limit):
            cid, data = p.blocks.pop(0)
            blocks.append((cid, data))
            size += len(data)
        msg = bm.Message(wants=p.wants, blocks=blocks, presences=p.presences)
        p.wants, p.presences = [], []
        self.taken_bytes += size
        return msg, size

    async def _send(self, msg: bm.Message, size: int, stream: Any) -> Any:
        """`msg` (of `size` block bytes) on `stream` (None: a new one); the stream it went on."""
        from libp2p.custom_types import TProtocol

        network = self.network
        if stream is None:
            stream = await network.host.new_stream(self.peer, [TProtocol(p) for p in network.protocols])
        legacy = stream.get_protocol() == bm.LEGACY
        if legacy:
            network.on_legacy(self.peer)
        # a view: Yamux slices it into 64 KiB frames without copying each slice first
        await stream.write(memoryview(bm.frame(msg, legacy)))
        network.sent_bytes += size
        return stream
