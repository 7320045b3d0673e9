"""Yamux as we tune it: the receive-window credit we give senders never passes py-libp2p's own
16 MiB limit, whatever the sizes of frames and reads (a sender that uses all its credit in one
frame, as js-libp2p's Yamux does, is never cut off for an oversized frame); the frames we send
each fit one Noise message, or four where the window holds two such wide frames, and carry the
data whole; a sender out of credit goes on the moment credit comes."""

from __future__ import annotations

import struct

import pytest
import trio
from edgefiles.replication import yamux_tuning
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.network.connection.exceptions import RawConnError
from libp2p.stream_muxer.yamux.yamux import (
    MAX_WINDOW_SIZE,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
    YamuxStream,
)
from trio.testing import MockClock, wait_all_tasks_blocked


class Connection:
    """What a Yamux stream needs of its connection, recording the credit it sends."""

    def __init__(self) -> None:
        self.stream_buffers = {1: bytearray()}
        self.credit_sent = 0
        self.frames: list[bytes] = []  # data frames
        self.batches: list[list[int]] = []  # the data bytes of each frame, per write of several

    def rtt(self) -> float:
        return 0.001

    async def _write_frame(self, frame: bytes) -> None:
        _, kind, _, _, length = struct.unpack(YAMUX_HEADER_FORMAT, frame[:12])
        if kind == TYPE_WINDOW_UPDATE:
            self.credit_sent += length
        else:
            self.frames.append(bytes(frame))

    async def _write_frames(self, frames: list[bytes]) -> None:
        self.batches.append([len(frame) - 12 for frame in frames])
        for frame in frames:
            await self._write_frame(frame)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)), min_size=1, max_size=120))
def test_a_greedy_sender_never_gets_credit_past_the_limit(steps):
    yamux_tuning.install()

    async def run() -> None:
        conn = Connection()
        stream = YamuxStream(1, conn, True)
        credit = stream.recv_window  # what the sender may still send
        buffer = conn.stream_buffers[1]
        for send_share, read_share in steps:
            frame = max(1, int(credit * send_share))  # the sender uses its credit greedily
            assert frame <= MAX_WINDOW_SIZE
            buffer.extend(bytes(frame))
            stream.recv_window -= frame
            credit -= frame
            read = max(1, int(len(buffer) * read_share))
            del buffer[:read]
            before = conn.credit_sent
            await stream._auto_tune_and_send_window_update(bytes_read=read)
            credit += conn.credit_sent - before
            assert credit == stream.recv_window
            assert credit + len(buffer) <= MAX_WINDOW_SIZE
        assert credit > 0 or buffer  # the sender is never left waiting for nothing

    trio.run(run)


def test_a_sender_that_closed_its_side_gets_no_credit_for_what_is_read_after():
    yamux_tuning.install()

    async def read_all(stream: YamuxStream) -> None:
        read = len(stream.conn.stream_buffers[1])
        stream.conn.stream_buffers[1].clear()
        await stream._auto_tune_and_send_window_update(bytes_read=read)

    async def run() -> None:
        conn = Connection()
        stream = YamuxStream(1, conn, True)
        window = stream.recv_window
        conn.stream_buffers[1].extend(bytes(window))  # the sender used all its credit
        stream.recv_window = 0
        stream.recv_closed = True  # and its FIN came with the last byte
        await read_all(stream)
        assert conn.credit_sent == 0
        stream.recv_closed = False  # the same read of an open stream's bytes is credited
        await read_all(stream)
        assert conn.credit_sent >= window  # (its target window may have grown meanwhile)

    trio.run(run)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1 << 22), st.lists(st.integers(0, 1 << 20), max_size=200))
def test_frames_fit_the_window_and_one_noise_message_or_four_where_it_holds_two_wide_frames(total, windows):
    lengths: list[int] = []  # cut as the writer cuts them: a frame whenever there is window
    for window in windows:
        if sum(lengths) < total and window > 0:
            n = yamux_tuning.frame_length(total - sum(lengths), window)
            messages = -(-(n + yamux_tuning.HEADER_SIZE) // yamux_tuning.NOISE_PLAINTEXT)
            assert messages == 1 or (messages <= 4 and window >= 2 * yamux_tuning.WIDE_FRAME_PAYLOAD)
            lengths.append(n)
    assert all(0 < n <= yamux_tuning.WIDE_FRAME_PAYLOAD for n in lengths)
    assert sum(lengths) <= total
    widest = yamux_tuning.WIDE_FRAME_PAYLOAD
    assert yamux_tuning.frame_length(total + widest, 2 * widest) == widest  # once the window holds two
    assert yamux_tuning.frame_length(total + widest, 2 * widest - 1) == yamux_tuning.FRAME_PAYLOAD
    granted = [w for w in windows if w > 0]
    assert all(n <= w for n, w in zip(lengths, granted, strict=False))  # never past the window of the moment
    wide = [w for w in granted if w >= yamux_tuning.FRAME_PAYLOAD]
    if wide == granted and len(wide) > total // yamux_tuning.FRAME_PAYLOAD:
        assert sum(lengths) == total  # enough wide windows carry it all


PATTERN = bytes(i % 251 for i in range(1_200_000))  # any slice shows bytes out of order


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 1_200_000), st.integers(500, 800_000))
def test_a_write_arrives_whole_in_frames_of_one_noise_message_or_wide_ones_in_a_wide_window(size, window):
    yamux_tuning.install()
    data = PATTERN[:size]

    async def run() -> None:
        conn = Connection()
        stream = YamuxStream(1, conn, True)
        stream.send_window = window
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.write, data)
            while sum(len(f) - 12 for f in conn.frames) < len(data):
                await wait_all_tasks_blocked()
                stream.send_window += window  # the peer's credit, as its WINDOW_UPDATE gives it
        widest = yamux_tuning.NOISE_PLAINTEXT * (4 if window >= 2 * yamux_tuning.WIDE_FRAME_PAYLOAD else 1)
        assert all(len(f) <= widest for f in conn.frames)
        assert b"".join(f[12:] for f in conn.frames) == data
        # a batch is cut until it holds BATCH_BYTES (or the window or the data ends)
        assert all(sum(batch[:-1]) < yamux_tuning.BATCH_BYTES for batch in conn.batches)

    trio.run(run)


def test_a_sender_out_of_credit_goes_on_when_credit_comes_with_no_time_passing():
    """py-libp2p looked for credit every 10 ms: on a clock that stands still its sender never
    went on."""
    yamux_tuning.install()
    clock = MockClock()

    async def run() -> None:
        conn = Connection()
        stream = YamuxStream(1, conn, True)
        stream.send_window = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.write, bytes(1000))
            await wait_all_tasks_blocked()
            assert conn.frames == []
            stream.send_window += 1000
            await wait_all_tasks_blocked()
            assert [len(f) for f in conn.frames] == [12 + 1000]
        assert trio.current_time() == 0

    trio.run(run, clock=clock)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=12, max_size=70_000), max_size=40), st.integers(12, 70_000))
def test_frames_are_packed_whole_in_order_into_as_few_pieces_as_fit(frames, limit):
    pieces = yamux_tuning.pack_frames(frames, limit)
    assert b"".join(pieces) == b"".join(frames)
    per_piece: list[list[bytes]] = []  # the frames each piece holds
    rest = list(frames)
    for piece in pieces:
        held, size = [], 0
        while size < len(piece):
            held.append(rest.pop(0))
            size += len(held[-1])
        assert size == len(piece)  # no frame is cut in two
        assert size <= limit or len(held) == 1  # only a frame over the limit goes over it
        per_piece.append(held)
    for before, after in zip(per_piece, per_piece[1:], strict=False):
        assert sum(map(len, before)) + len(after[0]) > limit  # it did not fit in the one before


class SecuredConnection:
    """A Noise connection under Yamux that records what it is asked to write; `fail` makes
    its next write fail as a reset connection does; `stuck` makes writes wait forever (a
    peer that reads nothing)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.fail = False
        self.stuck = False
        self.closed = False

    async def write(self, piece: bytes) -> None:
        await trio.sleep(0)  # as a socket write: others run meanwhile
        if self.stuck:
            await trio.sleep_forever()
        if self.fail:
            self.fail = False
            raise ConnectionClosedError("TCP connection reset by remote peer", transport="tcp")
        self.pieces.append(piece)

    async def close(self) -> None:
        self.closed = True


class YamuxConnection:
    def __init__(self) -> None:
        self._write_lock = trio.Lock()
        self.secured_conn = SecuredConnection()


def test_frames_written_at_once_by_many_tasks_leave_together_each_whole():
    async def run() -> None:
        conn = YamuxConnection()
        frames = [bytes([i]) * 20 for i in range(50)]
        async with trio.open_nursery() as nursery:
            for frame in frames:
                nursery.start_soon(yamux_tuning.write_frame, conn, frame)
        sent = b"".join(conn.secured_conn.pieces)
        assert sorted(sent[i:i + 20] for i in range(0, len(sent), 20)) == frames  # each once, whole
        assert len(conn.secured_conn.pieces) < 10  # not one write per frame

    trio.run(run)


def test_the_writers_whose_frames_a_failed_write_carried_fail_as_it_did_and_later_frames_go():
    """Each sees a closed connection, the kind py-libp2p's window updates shrug off (a broken
    connection's error would lose the bytes a read just took)."""
    async def run() -> None:
        conn = YamuxConnection()
        results: dict[int, BaseException | None] = {}

        async def write(i: int) -> None:
            try:
                await yamux_tuning.write_frame(conn, bytes([i]) * 20)
                results[i] = None
            except Exception as exc:
                results[i] = exc

        conn.secured_conn.fail = True
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(write, i)
        await write(9)
        assert all(isinstance(results[i], ConnectionClosedError) for i in range(5))  # one write, all five
        assert results[9] is None and conn.secured_conn.pieces == [bytes([9]) * 20]

    trio.run(run)


def test_a_frame_whose_writer_was_cancelled_while_waiting_never_leaves():
    async def run() -> None:
        conn = YamuxConnection()

        async def busy() -> None:  # another task holds the connection for a while
            async with conn._write_lock:
                await trio.sleep(5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            await trio.sleep(0.1)
            with trio.move_on_after(1):
                await yamux_tuning.write_frame(conn, b"cancelled" * 3)
        await yamux_tuning.write_frame(conn, b"next" * 5)
        assert conn.secured_conn.pieces == [b"next" * 5]

    trio.run(run, clock=MockClock(autojump_threshold=0))


def test_a_peer_that_reads_nothing_costs_its_connection_not_every_writer_for_good():
    async def run() -> None:
        conn = YamuxConnection()
        conn.secured_conn.stuck = True
        with trio.move_on_after(1) as outer:  # the caller's own timeout cannot cut the write short...
            with pytest.raises(RawConnError):
                await yamux_tuning.write_frame(conn, b"x" * 20)
        assert not outer.cancelled_caught and trio.current_time() >= yamux_tuning.WRITE_LIMIT
        assert conn.secured_conn.closed  # ... but the limit closes the connection

    trio.run(run, clock=MockClock(autojump_threshold=0))


def ack(stream_id: int) -> bytes:
    return struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_WINDOW_UPDATE, 2, stream_id, 0)


def test_an_ack_leaves_with_the_next_frame_in_one_write_and_alone_after_a_short_wait():
    """py-libp2p wrote every inbound stream's ACK on its own, the reader waiting for it."""
    async def run() -> None:
        conn = YamuxConnection()
        async with trio.open_nursery() as nursery:
            conn._nursery = nursery
            with trio.fail_after(0):  # the reader does not wait for an ACK to be written
                await yamux_tuning.write_frame(conn, ack(3))
            assert conn.secured_conn.pieces == []
            await yamux_tuning.write_frame(conn, b"answer on stream 3..")
            assert conn.secured_conn.pieces == [ack(3) + b"answer on stream 3.."]  # ACK first, one write
            await yamux_tuning.write_frame(conn, ack(5))
            await trio.sleep(yamux_tuning.ACK_DELAY / 2)
            assert conn.secured_conn.pieces[1:] == []
            await trio.sleep(yamux_tuning.ACK_DELAY)
            assert conn.secured_conn.pieces[1:] == [ack(5)]  # nothing else came: it left alone
        assert trio.current_time() < 2 * yamux_tuning.ACK_DELAY

    trio.run(run, clock=MockClock(autojump_threshold=0))


def test_credit_and_flagged_frames_are_not_held_back():
    credit = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_WINDOW_UPDATE, 2, 3, 1000)  # an ACK with credit
    reset = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_WINDOW_UPDATE, 2 | 8, 3, 0)
    assert yamux_tuning.is_bare_ack(ack(3))
    assert not any(map(yamux_tuning.is_bare_ack, (credit, reset, ack(3) + b"data")))
