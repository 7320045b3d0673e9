"""Inbound Yamux streams negotiated where their bytes arrive, and a lean protocol's streams
(Bitswap) read there too: no task, NetStream or handler chain of their own.

Kubo sends every Bitswap message on a stream of its own: 512 streams for 128 MiB. py-libp2p
(0.8.1) gives each stream a task, a NetStream, a resource manager slot, opened and closed
notifications, the host's handler chain, and with it our membership gate and a read loop of
its own. Sampled while Kubo pinned a file to us, that chain held the interpreter a third of
the time, and the transfer ran at the pace of our one busy core.

Here the connection's reader (`yamux_reader`) feeds each new stream's bytes to its
negotiation as they come and answers at once. Once the dialer has chosen a lean protocol,
and its peer is already admitted to it, one task per connection (`_LeanReader`) takes the
stream's bytes, credits the dialer, cuts out the messages and hands them on in order, and
closes the stream once the dialer has closed its side. Every other stream goes on to
py-libp2p's chain with its negotiation as far as it got (`stream_negotiation` goes on from
there): a stream whose choice is not in after HANDOFF_AFTER, and every new stream while
MAX_NEGOTIATING are still choosing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, Protocol

import trio
from edgefiles.node.protobuf import DecodeError

from . import yamux_tuning
from .framing import FrameSplitter
from .stream_negotiation import ListenerNegotiation, NegotiationError, offered
from .yamux_frames import FLAG_FIN, FLAG_RST, TYPE_WINDOW_UPDATE, header

log = logging.getLogger("edgefiles.libp2p")

HANDOFF_AFTER = 1.0  # seconds a new stream may take to choose before py-libp2p's chain takes it
MAX_NEGOTIATING = 64  # streams choosing at once on one connection; past it, py-libp2p's chain


class LeanProtocol(Protocol):
    """What reads a lean protocol's messages: uvarint-framed, of at most `max_message` bytes."""

    name: str  # in the log
    max_message: int

    def admits(self, peer: Any) -> bool:
        """Whether `peer` is admitted already (False: the gated py-libp2p chain decides)."""

    def opened(self, peer: Any, protocol: str) -> bool:
        """A stream of `peer`'s opened; False refuses it. `closed` follows either way."""

    def closed(self, peer: Any) -> None: ...

    async def message(self, peer: Any, body: bytes) -> None:
        """One message, in order; a DecodeError resets its stream."""


class Router:
    """One host's lean protocols and its protocols on offer."""

    def __init__(self, host: Any):
        self.host = host
        self.lean: dict[str, LeanProtocol] = {}


_routers: dict[Any, Router] = {}  # by the local peer id of the host


def install(host: Any) -> None:
    """Route `host`'s inbound Yamux streams so (its lean protocols are added by `read_lean`);
    a host made again with the same key replaces the one before."""
    _routers[host.get_id()] = Router(host)


def read_lean(host: Any, protocols: Collection[str], reader: LeanProtocol) -> None:
    for protocol in protocols:
        _routers[host.get_id()].lean[protocol] = reader


def connection_streams(conn: Any) -> ConnectionStreams | None:
    """The inbound streams of a Yamux connection (None: its host routes none)."""
    routed = conn.__dict__.get("_inbound_streams")
    if routed is None:
        secured = getattr(conn, "secured_conn", None)
        router = _routers.get(secured.get_local_peer()) if hasattr(secured, "get_local_peer") else None
        if router is None:
            return None
        routed = conn._inbound_streams = ConnectionStreams(conn, router)
    return routed


class ConnectionStreams:
    """The inbound streams of one connection that are choosing or read lean."""

    def __init__(self, conn: Any, router: Router):
        self.conn = conn
        self.router = router
        self.choosing: dict[int, tuple[ListenerNegotiation, float]] = {}  # with their hand-off time
        self.lean: _LeanReader | None = None

    async def opened(self, stream: Any) -> None:
        """A stream the peer just opened (its first frame applied)."""
        if len(self.choosing) >= MAX_NEGOTIATING or stream.closed:
            await self._hand_off(stream)
            return
        negotiation = ListenerNegotiation(offered(self.router.host))
        self.choosing[stream.stream_id] = (negotiation, trio.current_time() + HANDOFF_AFTER)
        await self._negotiate(stream, negotiation)

    async def arrived(self, stream: Any) -> None:
        """A frame for `stream` was applied."""
        sid = stream.stream_id
        if sid in self.choosing:
            await self._negotiate(stream, self.choosing[sid][0])
        elif self.lean is not None and sid in self.lean.streams:
            self.lean.wake(sid)

    async def read_done(self) -> None:
        """After each read from the connection: streams too slow to choose go on without us."""
        if not self.choosing:
            return
        now = trio.current_time()
        for sid, (negotiation, due) in list(self.choosing.items()):
            if due <= now and sid in self.choosing:
                del self.choosing[sid]
                if (stream := self.conn.streams.get(sid)) is not None:
                    await self._hand_off(stream, negotiation)

    def ended(self) -> None:
        """The connection is gone: whatever was open here is closed."""
        self.choosing.clear()
        if self.lean is not None:
            self.lean.end()

    async def _negotiate(self, stream: Any, negotiation: ListenerNegotiation) -> None:
        sid = stream.stream_id
        buf = self.conn.stream_buffers.get(sid)
        if buf is None or stream.reset_received:
            del self.choosing[sid]
            _discard(stream)
            return
        try:
            taken, answer = negotiation.feed(buf)
        except NegotiationError as exc:
            del self.choosing[sid]
            log.debug("inbound stream from %s refused: %s", self.conn.peer_id, exc)
            _reset(stream)
            return
        del buf[:taken]
        chosen = negotiation.chosen
        # a dialer that went on without the answer (data after its choice) does not wait for it
        if answer and not yamux_tuning.queue_data(stream, answer, now=chosen is None or not buf):
            del self.choosing[sid]  # answers past its window or a frame: it asks and never reads
            log.debug("inbound stream from %s refused: %d bytes of answers", self.conn.peer_id, len(answer))
            _reset(stream)
        elif chosen is not None:
            del self.choosing[sid]
            await self._start(stream, negotiation)
        elif stream.recv_closed:
            del self.choosing[sid]
            _reset(stream)

    async def _start(self, stream: Any, negotiation: ListenerNegotiation) -> None:
        protocol = self.router.lean.get(negotiation.chosen)
        peer = self.conn.peer_id
        if protocol is None or not protocol.admits(peer) or self.conn.__dict__.get("_nursery") is None:
            await self._hand_off(stream, negotiation)
            return
        if not protocol.opened(peer, negotiation.chosen):
            protocol.closed(peer)
            _reset(stream)
            return
        if self.lean is None:
            self.lean = _LeanReader(self.conn)
            self.conn._nursery.start_soon(self.lean.run)
        self.lean.add(stream, protocol)

    async def _hand_off(self, stream: Any, negotiation: ListenerNegotiation | None = None) -> None:
        """To py-libp2p's chain, which goes on with `negotiation` (None: it starts one)."""
        if negotiation is not None:
            stream.__dict__["_negotiation"] = negotiation
        if not self.conn.event_shutting_down.is_set():
            await self.conn.new_stream_send_channel.send(stream)


class _LeanStream:
    def __init__(self, stream: Any, protocol: LeanProtocol):
        self.stream = stream
        self.protocol = protocol
        self.splitter = FrameSplitter(protocol.max_message)


class _LeanReader:
    """The task that reads a connection's lean streams: each stream's messages in order."""

    def __init__(self, conn: Any):
        self.conn = conn
        self.streams: dict[int, _LeanStream] = {}
        self._ready: dict[int, None] = {}  # streams with news, in the order it came
        self._news = trio.Event()
        self._ended = False

    def add(self, stream: Any, protocol: LeanProtocol) -> None:
        sid = stream.stream_id
        if (earlier := self.streams.get(sid)) is not None:  # reset, and its id taken again since
            self._drop(earlier)
        self.streams[sid] = _LeanStream(stream, protocol)
        self.wake(sid)

    def wake(self, sid: int) -> None:
        self._ready[sid] = None
        self._news.set()

    def end(self) -> None:
        self._ended = True
        for lean in self.streams.values():
            lean.protocol.closed(self.conn.peer_id)
        self.streams.clear()
        self._news.set()

    async def run(self) -> None:
        while not self._ended:
            await self._news.wait()
            self._news = trio.Event()
            queued = False
            while self._ready and not self._ended:
                sid = next(iter(self._ready))
                del self._ready[sid]
                lean = self.streams.get(sid)
                if lean is not None:
                    queued |= await self._read(lean)
            if queued:  # the credit and FINs queued meanwhile leave together
                await yamux_tuning.flush(self.conn)

    async def _read(self, lean: _LeanStream) -> bool:
        """What arrived on a stream handed on; True when it queued a frame (credit, FIN)."""
        stream, peer = lean.stream, self.conn.peer_id
        if stream.reset_received or not _current(stream):
            self._drop(lean)
            _discard(stream)
            return False
        buf = self.conn.stream_buffers[stream.stream_id]
        data = bytes(buf)
        del buf[:]
        credit = yamux_tuning.credit_due(stream)
        if credit:
            yamux_tuning.queue_frame(self.conn, header(TYPE_WINDOW_UPDATE, 0, stream.stream_id, credit))
        try:
            for body in lean.splitter.feed(data):
                await lean.protocol.message(peer, body)
            if not stream.recv_closed or stream.reset_received or not _current(stream) or buf:
                return bool(credit)  # more to come, or news the next round reads
            if lean.splitter.pending:
                raise DecodeError("stream ended inside a message")
        except DecodeError as exc:
            log.warning("closing %s stream from %s: %s", lean.protocol.name, peer, exc)
        except Exception as exc:
            log.debug("%s stream from %s ended: %r", lean.protocol.name, peer, exc)
        else:
            self._drop(lean)
            _close_soon(stream)
            return True
        self._drop(lean)
        _reset(stream)
        return True

    def _drop(self, lean: _LeanStream) -> None:
        sid = lean.stream.stream_id
        if self.streams.get(sid) is lean:
            del self.streams[sid]
            lean.protocol.closed(self.conn.peer_id)


def _current(stream: Any) -> bool:
    """Whether the connection still knows `stream` (not one that has taken its id since)."""
    return stream.conn.streams.get(stream.stream_id) is stream


def _discard(stream: Any) -> None:
    """A stream the peer reset: what it sent and nobody will read goes with it (py-libp2p
    keeps a reset stream's unread bytes for a minute)."""
    if _current(stream):
        stream.conn.stream_buffers[stream.stream_id].clear()
        if stream.closed:
            stream.conn._finalize_stream_locked(stream, fully_closed=True)


def _reset(stream: Any) -> None:
    """YamuxStream.reset without waiting: the RST leaves with the connection's next write
    (ACK_DELAY at most); what the peer sent and nobody will read goes with the stream."""
    if not stream.closed:
        yamux_tuning.queue_frame(stream.conn, header(TYPE_WINDOW_UPDATE, FLAG_RST, stream.stream_id, 0))
    stream.closed = stream.send_closed = stream.recv_closed = stream.reset_received = True
    _discard(stream)


def _close_soon(stream: Any) -> None:
    """YamuxStream.close of a stream the dialer has closed: our FIN is queued to leave with
    the connection's next write (the lean reader's flush after its round)."""
    if not stream.send_closed:
        yamux_tuning.queue_frame(stream.conn, header(TYPE_WINDOW_UPDATE, FLAG_FIN, stream.stream_id, 0))
        stream.send_closed = True
    stream.closed = stream.recv_closed
    if _current(stream):
        stream.conn._finalize_stream_locked(stream, fully_closed=stream.closed)
