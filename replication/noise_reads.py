"""Reading Noise transport messages off a connection in large pieces (py-libp2p 0.8.1).

py-libp2p reads each Noise message with two exact reads on the socket: its 2-byte length,
then its body, each a system call of its own (and more when the body arrives in parts).
Receiving from Kubo, which sends every Bitswap message on a stream of its own, a sixth of
the libp2p thread went into those reads. Here one read takes whatever the socket holds (up
to RECV_CHUNK) and the messages are cut out of it (`PacketBuffer`, pure).

Only transport messages are read so: the handshake's reader is another object, and a
buffer there could swallow the first transport bytes that follow the last handshake message.
"""

from __future__ import annotations

from typing import Any

RECV_CHUNK = 256 << 10
LENGTH_BYTES = 2  # big-endian length before every Noise message


class PacketBuffer:
    """Feed received bytes; take length-prefixed Noise messages out, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> bytes | None:
        """The next whole message, or None until more bytes come."""
        buf = self._buf
        if len(buf) < LENGTH_BYTES:
            return None
        end = LENGTH_BYTES + int.from_bytes(buf[:LENGTH_BYTES], "big")
        if len(buf) < end:
            return None
        with memoryview(buf) as view:
            message = bytes(view[LENGTH_BYTES:end])
        del buf[:end]
        return message


async def read_message(reader: Any, prefix_encoded: bool = False) -> bytes:
    """NoiseTransportReadWriter.read_msg: the next message, decrypted."""
    from libp2p.io.exceptions import IncompleteReadError

    packets = reader.__dict__.get("_packets")
    if packets is None:
        packets = reader._packets = PacketBuffer()
    conn = reader.read_writer.read_write_closer
    while (packet := packets.next()) is None:
        data = await conn.read(RECV_CHUNK)
        if not data:  # what py-libp2p raises: a close between messages is a clean one
            raise IncompleteReadError("connection closed inside a Noise message" if len(packets)
                                      else "connection closed", LENGTH_BYTES, len(packets))
        packets.feed(data)
    if prefix_encoded:
        packet = packet[len(reader.prefix):]
    return reader.decrypt(packet)


def install() -> None:
    """Read every Noise transport message of this process so (idempotent)."""
    from libp2p.security.noise.io import NoiseTransportReadWriter

    NoiseTransportReadWriter.read_msg = read_message
