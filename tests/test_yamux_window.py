"""The receive-window credit we give Yamux senders never passes py-libp2p's own 16 MiB
limit, whatever the sizes of frames and reads: a sender that uses all its credit in one frame
(as js-libp2p's Yamux does) is never cut off for an oversized frame."""

from __future__ import annotations

import struct

import trio
from edgefiles.replication import yamux_window
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.stream_muxer.yamux.yamux import MAX_WINDOW_SIZE, YAMUX_HEADER_FORMAT, YamuxStream


class Connection:
    """What a Yamux stream needs of its connection, recording the credit it sends."""

    def __init__(self) -> None:
        self.stream_buffers = {1: bytearray()}
        self.credit_sent = 0

    def rtt(self) -> float:
        return 0.001

    async def _write_frame(self, frame: bytes) -> None:
        self.credit_sent += struct.unpack(YAMUX_HEADER_FORMAT, frame[:12])[4]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)), min_size=1, max_size=120))
def test_a_greedy_sender_never_gets_credit_past_the_limit(steps):
    yamux_window.install()

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
