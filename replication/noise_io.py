"""Noise transport messages moved in large pieces (py-libp2p 0.8.1): read, and written.

Reads: py-libp2p reads each Noise message with two exact reads on the socket: its 2-byte length,
then its body, each a system call of its own (and more when the body arrives in parts).
Receiving from Kubo, which sends every Bitswap message on a stream of its own, a sixth of
the libp2p thread went into those reads. Here one read takes whatever the socket holds (up
to RECV_CHUNK) and the messages are cut out of it (`PacketBuffer`, pure).

Only transport messages are read so: the handshake's reader is another object, and a
buffer there could swallow the first transport bytes that follow the last handshake message.

Writes: py-libp2p writes each Noise message on its own, through four layers and a socket
call per message (the length prefix copied on to the message on the way). A 256 KiB block
is five messages; sending to Kubo, whose own sender spends half our CPU per MiB on the same
bytes, that path was the largest part of ours. `write_sealed` seals every message of a batch
and hands them to the socket in one write.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag

RECV_CHUNK = 256 << 10
MAX_NONCE = 2**64 - 1  # Noise's: a session never uses it
LENGTH_BYTES = 2  # big-endian length before every Noise message
MAX_PLAINTEXT = 65535 - 16  # one message's ciphertext must fit its length field, MAC included


class PacketBuffer:
    """Feed received bytes; take length-prefixed Noise messages out, in order. A message that
    arrived in one piece comes out as a view of it (no copy: at 100 MiB/s the copy showed);
    one cut across pieces is joined once, when all of it is in."""

    def __init__(self) -> None:
        self._piece: memoryview = memoryview(b"")  # the piece being cut, from its first uncut byte
        self._more: deque[memoryview] = deque()  # pieces received after it
        self._queued = 0  # bytes in _more

    def __len__(self) -> int:
        return len(self._piece) + self._queued

    def feed(self, data: bytes) -> None:
        if data:
            self._more.append(memoryview(data))
            self._queued += len(data)

    def next(self) -> memoryview | None:
        """The next whole message, or None until more bytes come."""
        piece = self._piece
        if len(piece) < LENGTH_BYTES:
            if len(self) < LENGTH_BYTES:
                return None
            piece = self._piece = self._extended(piece, LENGTH_BYTES)
        end = LENGTH_BYTES + int.from_bytes(piece[:LENGTH_BYTES], "big")
        if len(piece) < end:
            if len(self) < end:
                return None
            piece = self._extended(piece, end)
        self._piece = piece[end:]
        return piece[LENGTH_BYTES:end]

    def _extended(self, piece: memoryview, size: int) -> memoryview:
        """`piece` with the queued bytes after it, `size` at least: the next piece itself when
        `piece` is empty and that holds them, else `size` bytes joined (all of them queued)."""
        parts, have = [piece] if piece else [], len(piece)
        while have < size:
            following = self._more.popleft()
            self._queued -= len(following)
            if not parts and len(following) >= size:
                return following
            need = size - have
            if len(following) > need:
                self._more.appendleft(following[need:])
                self._queued += len(following) - need
                following = following[:need]
            parts.append(following)
            have += len(following)
        return memoryview(b"".join(parts))


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
    decrypt = reader.__dict__.get("_decrypt")
    if decrypt is None:
        decrypt = reader._decrypt = inbound_cipher(reader)
    return decrypt(packet)


def inbound_cipher(reader: Any) -> Callable[[memoryview], bytes]:
    """The reader's decryption, straight to ChaCha20-Poly1305 where it is that (as in every
    libp2p Noise session): the noise library takes only `bytes` (a copy of every message) and
    goes through three layers per message. Its cipher state keeps counting the nonces."""
    from noise.exceptions import NoiseInvalidMessage

    found = _chacha(reader, "cipher_state_decrypt")
    if found is None:
        return lambda packet: reader.decrypt(bytes(packet))
    state, aead = found

    def decrypt(packet: memoryview) -> bytes:
        try:
            plaintext = aead.decrypt(_nonce(state), packet, None)
        except InvalidTag as exc:
            raise NoiseInvalidMessage("Failed authentication of message") from exc
        state.n += 1
        return plaintext

    return decrypt


def outbound_cipher(writer: Any) -> Callable[[memoryview], bytes]:
    """The writer's encryption, as `inbound_cipher` decrypts (no copy of each piece first)."""
    found = _chacha(writer, "cipher_state_encrypt")
    if found is None:
        return lambda piece: writer.encrypt(bytes(piece))
    state, aead = found

    def encrypt(piece: memoryview) -> bytes:
        sealed = aead.encrypt(_nonce(state), piece, None)
        state.n += 1
        return sealed

    return encrypt


def _chacha(transport: Any, direction: str) -> tuple[Any, Any] | None:
    """A Noise transport's cipher state for `direction` and its ChaCha20-Poly1305 (None:
    another cipher, or no key yet)."""
    from noise.backends.default.ciphers import ChaCha20Cipher

    state = getattr(getattr(getattr(transport, "noise_state", None), "noise_protocol", None), direction, None)
    cipher = getattr(state, "cipher", None)
    if not isinstance(cipher, ChaCha20Cipher) or not state.has_key():
        return None
    return state, cipher.cipher


def _nonce(state: Any) -> bytes:
    from noise.exceptions import NoiseMaxNonceError

    if state.n >= MAX_NONCE:
        raise NoiseMaxNonceError("Nonce has depleted!")
    return b"\0\0\0\0" + state.n.to_bytes(8, "little")


def seal(encrypt: Callable[[memoryview], bytes], pieces: list[bytes]) -> bytes:
    """The wire bytes of `pieces` (pure but for the cipher's nonce): each piece encrypted in
    messages of at most MAX_PLAINTEXT, each message after its length."""
    wire: list[bytes] = []
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, max(len(view), 1), MAX_PLAINTEXT):
            sealed = encrypt(view[start:start + MAX_PLAINTEXT])
            wire.append(len(sealed).to_bytes(LENGTH_BYTES, "big"))
            wire.append(sealed)
    return b"".join(wire)


async def write_sealed(session: Any, pieces: list[bytes]) -> None:
    """`session.write` of each piece in turn, as one socket write when `session` is a Noise
    transport session (anything else writes piece by piece). Callers keep the order: the
    cipher's nonce counts messages as they are sealed."""
    from libp2p.security.noise.io import NoiseTransportReadWriter

    transport = getattr(session, "conn", None)
    if not isinstance(transport, NoiseTransportReadWriter):
        for piece in pieces:
            await session.write(piece)
        return
    encrypt = transport.__dict__.get("_encrypt")
    if encrypt is None:
        encrypt = transport._encrypt = outbound_cipher(transport)
    await transport.read_writer.read_write_closer.write(seal(encrypt, pieces))


def install() -> None:
    """Read every Noise transport message of this process so (idempotent)."""
    from libp2p.security.noise.io import NoiseTransportReadWriter

    NoiseTransportReadWriter.read_msg = read_message
