"""Noise transport messages read off the connection in large pieces come out whole, in
order, however the bytes were cut on the way; a connection that closes between messages is
a clean close, one that closes inside a message is not."""

from __future__ import annotations

import pytest
import trio
from edgefiles.replication import noise_reads
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.io.exceptions import IncompleteReadError


def packets(messages: list[bytes]) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=30), st.data())
def test_messages_come_out_whole_and_in_order_however_the_bytes_are_cut(messages, data):
    wire = packets(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=40)))
    buffer = noise_reads.PacketBuffer()
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        buffer.feed(wire[start:end])
        while (message := buffer.next()) is not None:
            out.append(message)
    assert out == messages and len(buffer) == 0


class Connection:
    """A connection that hands out the given pieces, then EOF."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def read(self, n: int) -> bytes:
        return self.pieces.pop(0)[:n] if self.pieces else b""


class Reader:
    """What `read_message` needs of py-libp2p's Noise transport reader (decryption: none)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.read_writer = type("PacketReader", (), {"read_write_closer": Connection(pieces)})()

    def decrypt(self, data: bytes) -> bytes:
        return data


@pytest.mark.parametrize("cut, clean", [(0, True), (1, False), (5, False)])
def test_a_close_between_messages_is_clean_and_inside_one_is_not(cut, clean):
    wire = packets([b"first", b"second"])
    reader = Reader([wire[:7], wire[7:7 + cut]])  # the first message, then `cut` bytes of the second

    async def run() -> None:
        assert await noise_reads.read_message(reader) == b"first"
        with pytest.raises(IncompleteReadError) as closed:
            await noise_reads.read_message(reader)
        assert closed.value.is_clean_close is clean

    trio.run(run)
