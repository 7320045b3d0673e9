"""Noise transport messages read off the connection in large pieces come out whole, in
order, however the bytes were cut on the way; a connection that closes between messages is
a clean close, one that closes inside a message is not. Messages sealed together for one
socket write are each within Noise's limit, in order; between real hosts, large writes on
many streams at once arrive whole, in fewer socket writes than Noise messages."""

from __future__ import annotations

import pytest
import trio
from edgefiles.replication import noise_io
from hostpair import connected, read_all
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import IncompleteReadError
from libp2p.network.connection.raw_connection import RawConnection


def packets(messages: list[bytes]) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=30), st.data())
def test_messages_come_out_whole_and_in_order_however_the_bytes_are_cut(messages, data):
    wire = packets(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=40)))
    buffer = noise_io.PacketBuffer()
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
        assert await noise_io.read_message(reader) == b"first"
        with pytest.raises(IncompleteReadError) as closed:
            await noise_io.read_message(reader)
        assert closed.value.is_clean_close is clean

    trio.run(run)


TAG = 16  # the MAC every Noise message carries


class CountingCipher:
    """Stands in for ChaCha20-Poly1305: a message is its plaintext and a 16-byte tag holding
    the nonce, so the order in which messages were sealed can be read back."""

    def __init__(self) -> None:
        self.nonce = 0

    def encrypt(self, plaintext: bytes) -> bytes:
        self.nonce += 1
        return bytes(plaintext) + self.nonce.to_bytes(TAG, "big")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 200_000), max_size=8))
def test_sealed_pieces_come_out_as_messages_within_the_limit_in_order(sizes):
    pieces = [bytes([i]) * size for i, size in enumerate(sizes)]
    buffer = noise_io.PacketBuffer()
    buffer.feed(noise_io.seal(CountingCipher().encrypt, pieces))
    messages = []
    while (message := buffer.next()) is not None:
        messages.append(message)
    assert len(buffer) == 0 and all(len(m) <= 65535 for m in messages)
    assert [int.from_bytes(m[-TAG:], "big") for m in messages] == list(range(1, len(messages) + 1))
    plaintext = [m[:-TAG] for m in messages]
    for piece in pieces:  # each piece: its own messages, at least one, the last one shorter
        count = max(1, -(-len(piece) // noise_io.MAX_PLAINTEXT))
        assert b"".join(plaintext[:count]) == piece
        assert all(len(m) == noise_io.MAX_PLAINTEXT for m in plaintext[:count - 1])
        plaintext = plaintext[count:]
    assert plaintext == []


def test_large_writes_on_many_streams_at_once_arrive_whole_in_few_socket_writes(monkeypatch):
    sizes = [1 << 20, 262_190, 700_001, 5]
    socket_writes = []
    write = RawConnection.write

    async def counted(self, data: bytes) -> None:
        socket_writes.append((id(self), len(data)))
        await write(self, data)

    monkeypatch.setattr(RawConnection, "write", counted)
    got: dict[int, bytes] = {}

    async def run() -> None:
        done = trio.Event()

        async def take(stream) -> None:
            data = await read_all(stream)
            got[data[0]] = data
            if len(got) == len(sizes):
                done.set()

        async with connected({"/test/take/1": take}) as (listener, dialer):
            async def give(i: int, size: int) -> None:
                stream = await dialer.new_stream(listener.get_id(), [TProtocol("/test/take/1")])
                await stream.write(bytes([i]) + PATTERN[:size - 1])
                await stream.close()

            socket_writes.clear()
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for i, size in enumerate(sizes):
                        nursery.start_soon(give, i, size)
                await done.wait()

    trio.run(run)
    assert got == {i: bytes([i]) + PATTERN[:size - 1] for i, size in enumerate(sizes)}
    by_connection: dict[int, list[int]] = {}
    for connection, size in socket_writes:
        by_connection.setdefault(connection, []).append(size)
    sender = max(by_connection.values(), key=sum)  # the dialer's side of the connection
    messages = sum(sizes) // noise_io.MAX_PLAINTEXT  # Noise messages of data alone, at least
    assert len(sender) < messages  # py-libp2p wrote each message on its own, and more besides
    assert max(sender) > 3 * (noise_io.MAX_PLAINTEXT + 18)  # a block's messages in one write


PATTERN = bytes(i % 251 for i in range(1 << 20))


def test_messages_are_decrypted_in_order_and_a_forged_one_is_refused_without_losing_the_count():
    """The direct ChaCha20-Poly1305 path on a real Noise session: views of a buffer decrypt;
    a tampered, empty or replayed message is refused and the next real one still decrypts;
    messages sealed directly and by the noise library keep one count of nonces."""
    from noise.connection import NoiseConnection
    from noise.exceptions import NoiseInvalidMessage

    sender, receiver = (NoiseConnection.from_name(b"Noise_NN_25519_ChaChaPoly_SHA256") for _ in range(2))
    sender.set_as_initiator()
    receiver.set_as_responder()
    for side in (sender, receiver):
        side.start_handshake()
    receiver.read_message(sender.write_message())
    sender.read_message(receiver.write_message())
    reader = type("Reader", (), {"noise_state": receiver, "decrypt": receiver.decrypt})()
    decrypt = noise_io.inbound_cipher(reader)
    sealed = [sender.encrypt(b"message %d" % i) for i in range(3)]
    buffer = noise_io.PacketBuffer()
    buffer.feed(packets(sealed)[:5])
    buffer.feed(packets(sealed)[5:])
    assert decrypt(buffer.next()) == b"message 0"
    tampered = bytearray(sealed[1])
    tampered[-1] ^= 1
    for forged in (bytes(tampered), b"", sealed[0], sealed[2]):
        with pytest.raises(NoiseInvalidMessage):
            decrypt(memoryview(forged))
    assert [decrypt(buffer.next()) for _ in range(2)] == [b"message 1", b"message 2"]
    writer = type("Writer", (), {"noise_state": sender, "encrypt": sender.encrypt})()
    encrypt = noise_io.outbound_cipher(writer)  # its messages and the library's take turns
    assert None not in (noise_io._chacha(reader, "cipher_state_decrypt"),  # the direct paths
                        noise_io._chacha(writer, "cipher_state_encrypt"))
    assert receiver.decrypt(encrypt(memoryview(b"direct 3"))) == b"direct 3"
    assert decrypt(memoryview(sender.encrypt(b"library 4"))) == b"library 4"
    assert receiver.decrypt(encrypt(memoryview(b"direct 5"))) == b"direct 5"
