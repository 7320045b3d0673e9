"""Our Yamux reader: frames come out of the connection's bytes whole and in order however
the bytes are cut; broken framing closes the connection; on real hosts, streams open,
carry data and close as a peer's frames say, a FIN on any frame included."""

from __future__ import annotations

import pytest
import trio
from edgefiles.replication import yamux_reader
from edgefiles.replication.stream_negotiation import HEADER, encode_line
from edgefiles.replication.yamux_frames import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    FRAME_HEADER,
    MAX_DATA_FRAME,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    FrameReader,
    ProtocolError,
)
from hostpair import connected, read_all
from hypothesis import given, settings
from hypothesis import strategies as st


def encode(kind: int, flags: int, stream_id: int, length: int, body: bytes = b"") -> bytes:
    return FRAME_HEADER.pack(0, kind, flags, stream_id, len(body) if kind == TYPE_DATA else length) + body


frames = st.lists(st.one_of(
    st.tuples(st.just(TYPE_DATA), st.integers(0, 15), st.integers(1, 2**32 - 1), st.just(0),
              st.binary(max_size=3000)),
    st.tuples(st.sampled_from([TYPE_WINDOW_UPDATE, TYPE_PING, TYPE_GO_AWAY]), st.integers(0, 15),
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.just(b"")),
), max_size=30)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(frames, st.lists(st.integers(0, 10**6), max_size=40))
def test_frames_come_out_in_order_however_the_bytes_are_cut(sent, points):
    """Each frame whole, or (a DATA frame that neither opens nor accepts a stream, cut) its
    body in pieces, one per feed that holds some of it, its FIN or RST on the last."""
    wire = b"".join(encode(*frame) for frame in sent)
    reader, got, pieces = FrameReader(), [], []
    for chunk in cut(wire, points):
        for f in reader.feed(chunk):
            assert f.body.obj is chunk or not f.more  # a piece is a view of what was fed
            if pieces and (f.type, f.stream_id, pieces[0].flags) != (TYPE_DATA, pieces[0].stream_id, 0):
                raise AssertionError(f"{f} came between the pieces of one body")
            pieces.append(f)
            if not f.more:
                body = b"".join(bytes(p.body) for p in pieces)
                got.append((f.type, f.flags, f.stream_id, f.length if len(pieces) == 1 else len(body), body))
                pieces = []
    assert pieces == []
    assert got == [(k, fl, sid, len(body) if k == TYPE_DATA else n, body) for k, fl, sid, n, body in sent]


def test_a_body_over_several_feeds_reaches_its_stream_as_they_come():
    """Not copied into one whole first: a piece per feed, the FIN with the last; a frame that
    opens a stream comes whole all the same."""
    body = bytes(range(256)) * 1024
    reader = FrameReader()
    wire = encode(TYPE_DATA, FLAG_FIN, 7, 0, body)
    got = [reader.feed(wire[a:a + 65519]) for a in range(0, len(wire), 65519)]
    assert [len(frames) for frames in got] == [1] * len(got)
    assert [(f.flags, f.more) for (f,) in got] == [(0, True)] * (len(got) - 1) + [(FLAG_FIN, False)]
    assert b"".join(bytes(f.body) for (f,) in got) == body
    opening = encode(TYPE_DATA, FLAG_SYN, 9, 0, body)
    assert reader.feed(opening[:65519]) == []
    (whole,) = reader.feed(opening[65519:])
    assert (whole.flags, bytes(whole.body)) == (FLAG_SYN, body)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([
    FRAME_HEADER.pack(1, TYPE_DATA, 0, 1, 0),  # a version that does not exist
    FRAME_HEADER.pack(0, 4, 0, 1, 0),  # a frame type that does not exist
    FRAME_HEADER.pack(0, TYPE_DATA, 0, 1, MAX_DATA_FRAME + 1),  # a body past any window
]), st.integers(1, 11), st.binary(max_size=100))
def test_broken_framing_is_refused_once_its_header_is_in(bad, split, before):
    reader = FrameReader()
    good = encode(TYPE_DATA, 0, 3, 0, before)
    assert len(reader.feed(good + bad[:split])) == 1  # the good frame before it comes out
    with pytest.raises(ProtocolError):
        reader.feed(bad[split:])


PROTO = "/test/drain/1.0.0"


def test_a_peer_s_frames_open_fill_and_close_a_stream_with_fin_on_any_frame():
    """Raw frames from the dialer: SYN with data, more data, then a FIN riding on an ACK
    frame (py-libp2p's reader ignored flags there: the reader never saw its stream end)."""
    received: list[bytes] = []
    ended = trio.Event()

    async def drain(stream) -> None:
        received.append(await read_all(stream))
        ended.set()

    async def run() -> None:
        async with connected({PROTO: drain}) as (listener, dialer):
            muxed = dialer.get_network().connections[listener.get_id()][0].muxed_conn
            sid = 1001  # odd: the dialer's own numbering, far past what it used
            lines = encode_line(HEADER) + encode_line(PROTO)
            await muxed._write_frame(encode(TYPE_DATA, FLAG_SYN, sid, 0, lines + b"first "))
            await muxed._write_frame(encode(TYPE_DATA, 0, sid, 0, b"second"))
            await muxed._write_frame(encode(TYPE_WINDOW_UPDATE, FLAG_ACK | FLAG_FIN, sid, 0))
            with trio.fail_after(10):
                await ended.wait()

    trio.run(run)
    assert b"".join(received) == b"first second"


def test_a_reset_on_data_ends_the_stream_for_its_reader():
    errors: list[str] = []
    ended = trio.Event()

    async def drain(stream) -> None:
        try:
            while await stream.read(1 << 16):
                pass
        except Exception as exc:
            errors.append(type(exc).__name__)
        ended.set()

    async def run() -> None:
        async with connected({PROTO: drain}) as (listener, dialer):
            stream = await dialer.new_stream(listener.get_id(), [PROTO])
            await stream.write(b"some")
            muxed = stream.muxed_stream.conn
            await muxed._write_frame(encode(TYPE_DATA, FLAG_RST, stream.muxed_stream.stream_id, 0, b"x"))
            with trio.fail_after(10):
                await ended.wait()

    trio.run(run)
    assert errors and "Reset" in errors[0]


def test_a_ping_is_answered_with_its_value_and_broken_framing_closes_the_connection(monkeypatch):
    pongs: list[int] = []
    answered = trio.Event()
    ping = yamux_reader._ping

    async def recorded(conn, frame) -> None:
        if frame.flags & FLAG_ACK and frame.length == 77:
            pongs.append(frame.length)
            answered.set()
        await ping(conn, frame)

    monkeypatch.setattr(yamux_reader, "_ping", recorded)

    async def run() -> None:
        async with connected({}) as (listener, dialer):
            muxed = dialer.get_network().connections[listener.get_id()][0].muxed_conn
            await muxed._write_frame(encode(TYPE_PING, FLAG_SYN, 0, 77))
            with trio.fail_after(10):
                await answered.wait()  # the listener's ACK came back with our value
            await muxed._write_frame(FRAME_HEADER.pack(7, TYPE_DATA, 0, 1, 0))
            with trio.fail_after(10):
                await muxed.event_closed.wait()  # the listener cut the connection
            with trio.fail_after(10):
                while listener.get_network().connections.get(dialer.get_id()):
                    await trio.sleep(0.01)

    trio.run(run)
    assert pongs == [77]


def test_a_large_write_between_real_hosts_arrives_whole_through_wide_frames_read_in_pieces(monkeypatch):
    """Once the window holds two wide frames the sender cuts frames of four Noise messages;
    the receiver hands each on in pieces as its messages come, and the bytes arrive whole and
    in order."""
    from edgefiles.replication import yamux_frames
    from libp2p.custom_types import TProtocol

    pieces: list[int] = []
    feed = yamux_frames.FrameReader.feed

    def noting(self, data: bytes) -> list:
        frames = feed(self, data)
        pieces.extend(len(f.body) for f in frames if f.more)
        return frames

    monkeypatch.setattr(yamux_frames.FrameReader, "feed", noting)
    data = bytes(i % 253 for i in range(8 << 20))
    received: list[bytes] = []

    async def take(stream) -> None:
        received.append(await read_all(stream))

    async def run() -> None:
        async with connected({PROTO: take}) as (listener, dialer):
            stream = await dialer.new_stream(listener.get_id(), [TProtocol(PROTO)])
            with trio.fail_after(30):
                await stream.write(data)
                await stream.close()
                while not received:
                    await trio.sleep(0.01)

    trio.run(run)
    assert received == [data]
    assert pieces  # some frames spanned Noise messages: wide ones
