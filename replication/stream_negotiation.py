"""Choosing the protocol of an inbound stream in one read and one write (py-libp2p 0.8.1).

Kubo and Helia open a stream for every Bitswap message and send the multistream header, the
protocol and the message at once. py-libp2p's listener answers each line with a write of its
own and reads each line in four awaits (its length byte by byte, then its body), every one of
them taking two locks: under load ~4 ms per stream, on the path of every block Kubo sends us.
Here the lines are parsed where the stream's received bytes already are (`ListenerNegotiation`,
pure), consumed at once, and everything owed is answered in one write.

A dialer that sends its header and waits for ours (py-libp2p's own) gets it as soon as that
header is in: we never wait for a line before answering the ones we have. A dialer that sent
its message with its choice did not wait for the answer (Kubo closes its side at once): it
leaves with our next frame, mostly our FIN, or before we wait to read from the dialer, who
may want it first (js-libp2p waits for it before it closes its side).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import trio
from edgefiles.node.protobuf import DecodeError, read_varint, varint

from . import yamux_tuning

HEADER = "/multistream/1.0.0"
NOT_AVAILABLE = "na"
MAX_LINE = 1024  # bytes of one negotiation message, its newline included


class NegotiationError(DecodeError):
    """The dialer broke the multistream protocol."""


def encode_line(text: str) -> bytes:
    body = text.encode() + b"\n"
    return varint(len(body)) + body


def next_line(buf: bytes | bytearray | memoryview) -> tuple[str, int] | None:
    """The first whole negotiation message in `buf` and the bytes it takes, or None until it
    has arrived."""
    if not buf or buf[0] & 0x80 and len(buf) < 2:
        return None
    if buf[0] & 0x80 and buf[1] & 0x80:  # MAX_LINE fits in a varint of two bytes
        raise NegotiationError("negotiation message too long")
    length, start = read_varint(buf, 0)
    if not 0 < length <= MAX_LINE:
        raise NegotiationError(f"negotiation message of {length} bytes")
    if len(buf) < start + length:
        return None
    body = bytes(buf[start:start + length])
    if not body.endswith(b"\n"):
        raise NegotiationError("negotiation message without its newline")
    try:
        return body[:-1].decode(), start + length
    except UnicodeDecodeError as exc:
        raise NegotiationError("negotiation message is not UTF-8") from exc


class ListenerNegotiation:
    """The listener's side of multistream-select 1.0, fed the bytes received so far."""

    def __init__(self, protocols: Collection[str]):
        self.protocols = protocols
        self.chosen: str | None = None
        self._header_seen = False

    def feed(self, buf: bytes | bytearray | memoryview) -> tuple[int, bytes]:
        """Take whole messages from the start of `buf` until a protocol is chosen; returns the
        bytes taken (what follows is the protocol's) and the answer owed for them."""
        taken, answer = 0, bytearray()
        while self.chosen is None:
            line = next_line(memoryview(buf)[taken:])
            if line is None:
                break
            text, size = line
            taken += size
            answer += self._answer(text)
        return taken, bytes(answer)

    def _answer(self, text: str) -> bytes:
        if not self._header_seen:
            if text != HEADER:
                raise NegotiationError(f"expected {HEADER!r}, got {text[:64]!r}")
            self._header_seen = True
            return encode_line(HEADER)
        if text == "ls":
            return encode_line("\n".join(sorted(self.protocols)) + "\n")  # as py-libp2p answers
        if text in self.protocols:
            self.chosen = text
            return encode_line(text)
        return encode_line(NOT_AVAILABLE)


async def _wait_for_bytes(muxed: Any, seen: int, deadline: float) -> bytearray:
    """The stream's receive buffer once it holds more than `seen` bytes (TooSlowError past
    `deadline`). A timeout scope only when it must wait: Kubo's and Helia's choices arrive
    with their messages, and a scope per stream was a tenth of accepting one."""
    conn, sid = muxed.conn, muxed.stream_id
    while True:
        buf = conn.stream_buffers.get(sid)
        if buf is None or muxed.reset_received:
            raise NegotiationError("stream reset during negotiation")
        if len(buf) > seen:
            return buf
        if muxed.recv_closed:
            raise NegotiationError("stream closed during negotiation")
        event = conn.stream_events.get(sid)
        if event is None:
            raise NegotiationError("stream gone during negotiation")
        with trio.fail_at(deadline):
            await event.wait()
        if conn.stream_events.get(sid) is event:
            conn.stream_events[sid] = trio.Event()


async def negotiate_inbound(stream: Any, protocols: Collection[str], timeout: float = 30) -> str:
    """Choose the protocol of an inbound Yamux stream; its bytes after the choice stay unread.
    A stream begun by the connection's reader (`inbound_streams`) goes on from where it got."""
    muxed = stream.muxed_stream
    negotiation = muxed.__dict__.pop("_negotiation", None) or ListenerNegotiation(protocols)
    deadline = trio.current_time() + timeout
    seen = 0
    while negotiation.chosen is None:
        buf = await _wait_for_bytes(muxed, seen, deadline)
        taken, answer = negotiation.feed(buf)
        if taken:
            del buf[:taken]
            await muxed._auto_tune_and_send_window_update(bytes_read=taken)
        seen = len(buf)
        if answer and negotiation.chosen is not None and buf:  # the dialer went on without it
            await yamux_tuning.send_soon(muxed, answer)
        elif answer:
            await stream.write(answer)
    return negotiation.chosen


def offered(host: Any) -> list[str]:
    """The protocols `host` answers, as a listener offers them."""
    return [p for p in host.multiselect.handlers if p is not None]


def install(host: Any) -> None:
    """Negotiate `host`'s inbound Yamux streams so; other streams as py-libp2p does."""
    from libp2p.protocol_muxer.exceptions import MultiselectError
    from libp2p.protocol_muxer.multiselect import Multiselect

    muxer = host.multiselect
    upstream = Multiselect.negotiate.__get__(muxer)

    async def negotiate(communicator: Any, negotiate_timeout: int = 30) -> tuple[Any, Any]:
        stream = communicator.read_writer
        if not hasattr(getattr(getattr(stream, "muxed_stream", None), "conn", None), "stream_buffers"):
            return await upstream(communicator, negotiate_timeout)
        protocols = offered(host)
        try:
            chosen = await negotiate_inbound(stream, protocols, negotiate_timeout)
        except (NegotiationError, trio.TooSlowError) as exc:
            raise MultiselectError(str(exc) or "negotiation timed out") from exc
        except Exception as exc:  # the stream broke under the answer
            raise MultiselectError(f"negotiation failed: {exc}") from exc
        return chosen, muxer.handlers[chosen]

    muxer.negotiate = negotiate
