"""Streams of a lean protocol (Bitswap's way in) on real hosts: messages from a peer that
opens a stream per message, or sends many on one, arrive whole and in order, and each stream
is closed once its dialer has; a broken message resets only its own stream; a refused
stream is reset; a peer not admitted yet, or a dialer slow to choose, goes through
py-libp2p's handler chain instead and is served all the same; a connection that ends gives
back every stream it had open."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from edgefiles.replication import inbound_streams, yamux_reader
from edgefiles.replication.framing import frame
from edgefiles.replication.stream_negotiation import HEADER, encode_line
from edgefiles.replication.yamux_frames import (
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    TYPE_DATA,
    TYPE_WINDOW_UPDATE,
    header,
)
from hostpair import connected, read_all
from libp2p.custom_types import TProtocol

LEAN = "/test/lean/1.0.0"


class Recorder:
    """A lean protocol that notes what it gets; `admitted` and `refuse` steer it."""

    name = "test"
    max_message = 1000

    def __init__(self, admitted: bool = True, refuse: bool = False) -> None:
        self.admitted, self.refuse = admitted, refuse
        self.messages: list[bytes] = []
        self.open = 0
        self.opened_total = 0

    def admits(self, peer: Any) -> bool:
        return self.admitted

    def opened(self, peer: Any, protocol: str) -> bool:
        assert protocol == LEAN
        self.open += 1
        self.opened_total += 1
        return not self.refuse

    def closed(self, peer: Any) -> None:
        self.open -= 1

    async def message(self, peer: Any, body: bytes) -> None:
        self.messages.append(bytes(body))


def run_with(recorder: Recorder, dialing, chain_handler=None) -> None:
    """`dialing(listener, dialer)` against a listener that reads LEAN through `recorder`;
    `chain_handler` serves LEAN on py-libp2p's chain (the gated path)."""

    async def chain_default(stream: Any) -> None:
        raise AssertionError("the stream should have been read lean")

    async def run() -> None:
        async with connected({LEAN: chain_handler or chain_default}) as (listener, dialer):
            inbound_streams.read_lean(listener, [LEAN], recorder)
            with trio.fail_after(20):
                await dialing(listener, dialer)

    trio.run(run)


async def raw_stream(dialer: Any, listener: Any, payload: bytes) -> Any:
    """A stream on which the dialer sends its choice and `payload` at once, as Kubo does."""
    stream = await dialer.get_network().new_stream(listener.get_id())
    await stream.write(encode_line(HEADER) + encode_line(LEAN) + payload)
    return stream


async def ending(stream: Any) -> str:
    """How the listener ended `stream` for its dialer: "end" (py-libp2p may say so with
    StreamEOF), or the error a read met."""
    try:
        while await stream.read(1 << 16):
            pass
    except Exception as exc:
        return "end" if type(exc).__name__ == "StreamEOF" else type(exc).__name__
    return "end"


@pytest.fixture
def resets(monkeypatch) -> list[tuple[Any, int]]:
    """(connection, stream id) of every RST a reader of this process applies from now on."""
    seen: list[tuple[Any, int]] = []
    apply = yamux_reader._apply_to_stream

    def noting(conn: Any, stream: Any, frame: Any) -> None:
        if frame.flags & FLAG_RST:
            seen.append((conn, frame.stream_id))
        apply(conn, stream, frame)

    monkeypatch.setattr(yamux_reader, "_apply_to_stream", noting)
    return seen


def was_reset(stream: Any, resets: list[tuple[Any, int]]) -> bool:
    return (stream.muxed_stream.conn, stream.muxed_stream.stream_id) in resets


async def until(check) -> None:
    while not check():
        await trio.sleep(0.01)


def test_messages_arrive_whole_and_in_order_and_each_stream_is_closed_after_its_dialer():
    recorder = Recorder()
    big = bytes(range(256)) * 3
    answer = encode_line(HEADER) + encode_line(LEAN)

    async def dialing(listener: Any, dialer: Any) -> None:
        for i in range(5):  # a stream per message, the choice sent with it (Kubo)
            stream = await raw_stream(dialer, listener, frame(b"one-%d" % i))
            await stream.close()
            assert await read_all(stream) == answer  # then our FIN: an end, not a reset
        stream = await dialer.new_stream(listener.get_id(), [TProtocol(LEAN)])  # waits for each answer
        for piece in (frame(b"a") + frame(big)[:100], frame(big)[100:] + frame(b"b")[:1], frame(b"b")[1:]):
            await stream.write(piece)  # messages cut anywhere across writes
            await trio.sleep(0.05)
        await stream.close()
        assert await read_all(stream) == b""
        await until(lambda: recorder.open == 0 and len(recorder.messages) == 8)

    run_with(recorder, dialing)
    assert recorder.messages == [b"one-%d" % i for i in range(5)] + [b"a", big, b"b"]
    assert recorder.opened_total == 6


@pytest.mark.parametrize("broken", [
    frame(b"x" * 1001),  # over the protocol's limit
    frame(b"whole") + b"\x05abc",  # ends inside a message
])
def test_a_broken_message_resets_its_own_stream_only(broken, resets):
    recorder = Recorder()

    async def dialing(listener: Any, dialer: Any) -> None:
        bad = await raw_stream(dialer, listener, broken)
        await bad.close()
        await until(lambda: was_reset(bad, resets))
        good = await raw_stream(dialer, listener, frame(b"after"))
        await good.close()
        assert await ending(good) == "end"
        await until(lambda: b"after" in recorder.messages and recorder.open == 0)

    run_with(recorder, dialing)
    assert b"x" * 1001 not in recorder.messages and b"abc" not in recorder.messages


def test_a_stream_the_protocol_refuses_is_reset_unread():
    recorder = Recorder(refuse=True)

    async def dialing(listener: Any, dialer: Any) -> None:
        stream = await raw_stream(dialer, listener, frame(b"unwanted"))
        assert "Reset" in await ending(stream)
        await until(lambda: recorder.open == 0)

    run_with(recorder, dialing)
    assert recorder.messages == [] and recorder.opened_total == 1


@pytest.mark.parametrize("slow_choice", [False, True])
def test_a_peer_not_admitted_yet_or_a_slow_chooser_goes_through_the_handler_chain(slow_choice):
    recorder = Recorder(admitted=slow_choice)  # slow: admitted, but chooses after the hand-off
    chained: list[bytes] = []

    async def chain(stream: Any) -> None:
        chained.append(await read_all(stream))
        await stream.close()

    async def dialing(listener: Any, dialer: Any) -> None:
        stream = await dialer.get_network().new_stream(listener.get_id())
        await stream.write(encode_line(HEADER))
        if slow_choice:
            await trio.sleep(inbound_streams.HANDOFF_AFTER + 0.5)
            other = await raw_stream(dialer, listener, frame(b"lean"))  # the hand-off comes after a read
            await other.close()
        await stream.write(encode_line(LEAN) + frame(b"chained"))
        await stream.close()
        answer = encode_line(HEADER) + encode_line(LEAN)
        assert await read_all(stream) == answer
        await until(lambda: chained)

    run_with(recorder, dialing, chain)
    assert chained == [frame(b"chained")]
    assert b"chained" not in recorder.messages


def test_a_connection_that_ends_gives_back_its_open_streams():
    recorder = Recorder()

    async def dialing(listener: Any, dialer: Any) -> None:
        streams = [await raw_stream(dialer, listener, frame(b"open %d" % i)) for i in range(3)]
        await until(lambda: recorder.open == 3 and len(recorder.messages) == 3)
        assert streams
        await dialer.disconnect(listener.get_id())
        await until(lambda: recorder.open == 0)

    run_with(recorder, dialing)


def test_messages_over_a_window_get_their_credit_as_they_are_read():
    recorder = Recorder()
    recorder.max_message = 1 << 20
    bodies = [bytes([i]) * 900_000 for i in range(6)]  # each over 3 windows of 256 KiB

    async def dialing(listener: Any, dialer: Any) -> None:
        stream = await dialer.new_stream(listener.get_id(), [TProtocol(LEAN)])
        await stream.write(b"".join(frame(body) for body in bodies))  # waits for credit throughout
        await stream.close()
        await until(lambda: len(recorder.messages) == len(bodies) and recorder.open == 0)

    run_with(recorder, dialing)
    assert recorder.messages == bodies


def muxed_conn(host: Any, to: Any) -> Any:
    """`host`'s Yamux connection to the host `to`."""
    return next(iter(host.get_network().get_connections(to.get_id()))).muxed_conn


def data_frame(payload: bytes):
    return lambda sid: header(TYPE_DATA, 0, sid, len(payload)) + payload


def flag_frame(flag: int):
    return lambda sid: header(TYPE_WINDOW_UPDATE, flag, sid, 0)


CHOICE = encode_line(HEADER) + encode_line(LEAN)


@pytest.mark.parametrize("frames", [
    [data_frame(CHOICE + frame(b"m")), flag_frame(FLAG_FIN)],  # as Kubo sends a message
    [data_frame(CHOICE + frame(b"m")), flag_frame(FLAG_RST)],  # reset with its message unread
    [data_frame(CHOICE + b"\x05ab"), flag_frame(FLAG_RST)],  # ... inside a message
    [data_frame(encode_line(HEADER) + b"\x10/test"), flag_frame(FLAG_RST)],  # ... inside a choice
    [data_frame(CHOICE + frame(b"m")), flag_frame(FLAG_FIN), flag_frame(FLAG_RST)],
], ids=["fin", "rst", "rst-in-message", "rst-in-choice", "fin-then-rst"])
def test_a_stream_however_it_ends_leaves_nothing_behind(frames):
    recorder = Recorder()

    async def dialing(listener: Any, dialer: Any) -> None:
        conn = muxed_conn(listener, dialer)
        opened = []
        for _ in range(10):
            stream = (await dialer.get_network().new_stream(listener.get_id())).muxed_stream
            await stream.conn._write_frames([make(stream.stream_id) for make in frames])
            opened.append(stream.stream_id)
        await trio.sleep(0.3)
        assert not set(opened) & (set(conn.streams) | set(conn.stream_buffers))
        assert recorder.open == 0

    run_with(recorder, dialing)


def test_a_dialer_that_asks_more_than_it_reads_loses_its_stream_not_the_connection(resets):
    """Answers past a stream's window were sent by the connection's reader, which then waited
    for credit only it could bring in: the connection broke after 5 s."""
    recorder = Recorder()

    async def dialing(listener: Any, dialer: Any) -> None:
        flood = await dialer.get_network().new_stream(listener.get_id())
        await flood.write(encode_line(HEADER) + encode_line("ls") * 10_000)  # 700 KB of answers
        await until(lambda: was_reset(flood, resets))
        other = await raw_stream(dialer, listener, frame(b"still here"))
        await other.close()
        assert await ending(other) == "end"
        await until(lambda: b"still here" in recorder.messages)

    run_with(recorder, dialing)


def test_a_stream_id_taken_again_after_a_reset_is_a_stream_of_its_own():
    """A lean stream reset while its message was being handed on, its id at once taken by a
    new stream: both are given back, the new one read to its end."""

    class Held(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.release = trio.Event()

        async def message(self, peer: Any, body: bytes) -> None:
            await super().message(peer, body)
            if body == b"held":
                await self.release.wait()

    recorder = Held()

    async def dialing(listener: Any, dialer: Any) -> None:
        conn = muxed_conn(listener, dialer)
        dialing_conn = muxed_conn(dialer, listener)
        sid = 1001

        async def send(*frames) -> None:
            await dialing_conn._write_frames([make(sid) for make in frames])

        await send(flag_frame(FLAG_SYN), data_frame(CHOICE + frame(b"held")))
        await until(lambda: recorder.messages == [b"held"])
        await send(flag_frame(FLAG_RST))
        await until(lambda: sid not in conn.streams)
        await send(flag_frame(FLAG_SYN), data_frame(CHOICE + frame(b"second")))
        await until(lambda: sid in conn.streams)
        recorder.release.set()
        await send(flag_frame(FLAG_FIN))
        await until(lambda: recorder.messages == [b"held", b"second"] and recorder.open == 0)
        await until(lambda: sid not in conn.streams)

    run_with(recorder, dialing)
