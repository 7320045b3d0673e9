"""py-libp2p's Yamux (0.8.1) receiving side, lean: frames cut out of whole decrypted Noise
messages (`yamux_frames.FrameReader`, pure) and applied to their streams without a wait in between.

py-libp2p's reader spent more on bookkeeping than on the bytes. Per frame it made two exact
reads through the secure session (header, then body), opened a timeout scope for the body,
read two environment variables, and formatted half a dozen debug messages whose peer id
is base58-encoded each time, logging on or not. Kubo opens a stream per Bitswap message:
receiving 120-byte messages each on a stream of its own took 0.57 ms of CPU per stream,
of which this reader was a third. A Kubo sending us 128 MiB opens ~500 such streams, and
we read every block in frames of 64 KiB.

What it does is what py-libp2p's reader did, with go-yamux's reading of the flags: FIN and
RST count on any DATA or WINDOW_UPDATE frame, an ACK's included (py-libp2p ignored them
there). A frame for a stream we no longer know is dropped, as both do.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio

from . import inbound_streams
from .inbound_streams import ConnectionStreams
from .yamux_frames import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    GO_AWAY_NORMAL,
    GO_AWAY_PROTOCOL_ERROR,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    Frame,
    FrameReader,
    ProtocolError,
    header,
)

log = logging.getLogger("edgefiles.libp2p")
GO_AWAY_WAIT = 1.0  # seconds we try to tell a peer that broke the framing why it is cut off


async def handle_incoming(conn: Any) -> None:
    """Yamux.handle_incoming: read the connection until it ends or breaks, then clean up as
    py-libp2p does (every stream reset, the connection closed, its owner told). Cancelled,
    it leaves the cleanup to whoever cancelled it, as py-libp2p's does."""
    from libp2p.io.exceptions import IncompleteReadError

    try:
        await _read(conn, inbound_streams.connection_streams(conn))
    except IncompleteReadError as exc:
        if not exc.is_clean_close:
            log.debug("connection to %s cut inside a message: %s", conn.peer_id, exc)
    except ProtocolError as exc:
        log.warning("closing the connection to %s: %s", conn.peer_id, exc)
        with trio.move_on_after(GO_AWAY_WAIT), contextlib.suppress(Exception):  # as go-yamux does
            await conn._write_frame(header(TYPE_GO_AWAY, 0, 0, GO_AWAY_PROTOCOL_ERROR))
    except Exception as exc:  # the connection failed under us: closed, reset, broken
        log.debug("connection to %s ended: %r", conn.peer_id, exc)
    finally:
        if (routed := conn.__dict__.get("_inbound_streams")) is not None:
            routed.ended()
    await conn._cleanup_on_error()


async def _read(conn: Any, routed: ConnectionStreams | None) -> None:
    reader = FrameReader()
    while not conn.event_shutting_down.is_set():
        data = await conn.secured_conn.read()
        if not data:
            return
        for frame in reader.feed(data):
            if not await _apply(conn, frame, routed) or conn.event_shutting_down.is_set():
                return
        if routed is not None:
            await routed.read_done()


async def _apply(conn: Any, frame: Frame, routed: ConnectionStreams | None = None) -> bool:
    """One frame's effect; False when the peer went away (GO_AWAY)."""
    if frame.type == TYPE_PING:
        await _ping(conn, frame)
        return True
    if frame.type == TYPE_GO_AWAY:
        level = logging.DEBUG if frame.length == GO_AWAY_NORMAL else logging.INFO
        log.log(level, "%s went away (Yamux GO_AWAY code %d)", conn.peer_id, frame.length)
        return False
    stream = conn.streams.get(frame.stream_id)
    if frame.flags & FLAG_SYN:
        if stream is not None:  # a stream id in use: refused, as py-libp2p does
            await conn._write_frame(header(TYPE_WINDOW_UPDATE, FLAG_RST, frame.stream_id, 0))
            return True
        stream = _register_inbound(conn, frame.stream_id)
        _apply_to_stream(conn, stream, frame)
        if not frame.flags & FLAG_RST:  # a reset stream is handed over, but never acknowledged
            await conn._write_frame(header(TYPE_WINDOW_UPDATE, FLAG_ACK, frame.stream_id, 0))
        if routed is not None:
            await routed.opened(stream)
        elif not conn.event_shutting_down.is_set():
            await conn.new_stream_send_channel.send(stream)
    elif stream is not None:
        _apply_to_stream(conn, stream, frame)
        if routed is not None:
            await routed.arrived(stream)
    return True


def _register_inbound(conn: Any, stream_id: int) -> Any:
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    stream = YamuxStream(stream_id, conn, False)
    conn.streams[stream_id] = stream
    conn.stream_buffers[stream_id] = bytearray()
    conn.stream_events[stream_id] = trio.Event()
    return stream


def _apply_to_stream(conn: Any, stream: Any, frame: Frame) -> None:
    """A DATA or WINDOW_UPDATE frame's data, credit and flags, applied to its stream."""
    sid = stream.stream_id
    if frame.type == TYPE_DATA:
        if frame.body:
            conn.stream_buffers[sid].extend(frame.body)
            stream.recv_window -= len(frame.body)
            if stream.recv_window < 0:  # py-libp2p forgives the excess too
                log.debug("%s sent %d bytes past stream %d's window", conn.peer_id, -stream.recv_window, sid)
                stream.recv_window = 0
        conn.stream_events[sid].set()
    elif frame.length:
        stream.send_window += frame.length
    if frame.flags & FLAG_FIN:
        stream.recv_closed = True
        stream.closed = stream.closed or stream.send_closed
        conn.stream_events[sid].set()
    if frame.flags & FLAG_RST:
        stream.closed = stream.reset_received = True
        conn.stream_events[sid].set()
    if stream.closed:
        conn._finalize_stream_locked(stream, fully_closed=True)


async def _ping(conn: Any, frame: Frame) -> None:
    if frame.flags & FLAG_SYN:
        await conn._write_frame(header(TYPE_PING, FLAG_ACK, 0, frame.length))
    elif frame.flags & FLAG_ACK:  # py-libp2p's own RTT estimate
        rtt = trio.current_time() - conn._ping_sent_time
        conn._rtt = rtt if conn._rtt == 0.0 else (conn._rtt + rtt) / 2
        conn._ping_event.set()


def install() -> None:
    """Read every Yamux connection of this process so (idempotent)."""
    from libp2p.stream_muxer.yamux.yamux import Yamux

    Yamux.handle_incoming = handle_incoming
