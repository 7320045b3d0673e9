"""Encryption at rest: a file's bytes as AES-256-GCM segments, each authenticated on its own,
so a range decrypts from the segments it touches without reading the whole file.

Layout: a 32-byte header (magic, the key's id, a 12-byte random salt), then segments of
`PLAIN_SEGMENT` plaintext bytes (the last one shorter, empty only for an empty file), each
followed by its 16-byte tag, so every ciphertext segment but the last is exactly 1 MiB.
Each object is sealed under a key of its own, derived (HKDF-SHA256) from the organization's
key and the salt, so nonces never repeat under one key however many objects an
organization stores (random 96-bit salts collide after ~2^48 objects, not ~2^32 as random
nonces under one key would). Segment i's nonce is i; its associated data is the header and
whether it is the last segment, so segments cannot be reordered, moved between files or cut
off at a segment boundary without the tag check failing.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"EFS\x01"
KEY_ID_BYTES = 16
HEADER_BYTES = 32
SALT_BYTES = HEADER_BYTES - 4 - KEY_ID_BYTES
TAG_BYTES = 16
CIPHER_SEGMENT = 1 << 20
PLAIN_SEGMENT = CIPHER_SEGMENT - TAG_BYTES


class Tampered(ValueError):
    """Ciphertext that fails its authentication: changed, cut, reordered or under another key."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def header(key_id: bytes, salt: bytes | None = None) -> bytes:
    if len(key_id) != KEY_ID_BYTES:
        raise ValueError("a key id is 16 bytes")
    return MAGIC + key_id + (os.urandom(SALT_BYTES) if salt is None else salt)


def derive(secret: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    """A 256-bit key for one purpose (`info`) from a secret (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def object_cipher(key: bytes, head: bytes) -> AESGCM:
    """The cipher of one object: its own key, from the organization's and the header's salt."""
    return AESGCM(derive(key, head[:4 + KEY_ID_BYTES], head[HEADER_BYTES - SALT_BYTES:HEADER_BYTES]))


def key_id_of(head: bytes) -> bytes:
    """The key id of a header; Tampered for bytes that are not one."""
    if len(head) < HEADER_BYTES or head[:4] != MAGIC:
        raise Tampered("not an encrypted object (no header)")
    return head[4:4 + KEY_ID_BYTES]


def segments(plain_size: int) -> int:
    return max(1, -(-plain_size // PLAIN_SEGMENT))


def cipher_size(plain_size: int) -> int:
    return HEADER_BYTES + plain_size + TAG_BYTES * segments(plain_size)


def plain_size(cipher_bytes: int) -> int:
    """The plaintext size behind a ciphertext of this size; Tampered when no size fits."""
    body = cipher_bytes - HEADER_BYTES
    full, rest = divmod(body, CIPHER_SEGMENT)
    if body < TAG_BYTES or 0 < rest < TAG_BYTES:
        raise Tampered(f"{cipher_bytes} bytes cannot be an encrypted object")
    size = full * PLAIN_SEGMENT + (rest - TAG_BYTES if rest else 0)
    if cipher_size(size) != cipher_bytes:
        raise Tampered(f"{cipher_bytes} bytes cannot be an encrypted object")
    return size


def _nonce(index: int) -> bytes:
    return struct.pack(">4xQ", index)


def _aad(head: bytes, last: bool) -> bytes:
    return head + (b"\x01" if last else b"\x00")


class Encryptor:
    """Plaintext in, in pieces of any size; ciphertext out, header first."""

    def __init__(self, key: bytes, key_id: bytes, salt: bytes | None = None):
        self.head = header(key_id, salt)
        self._aead = object_cipher(key, self.head)
        self._pending = bytearray()
        self._index = 0
        self.plain_bytes = 0

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """The segments that `data` completes (a full segment waits until more comes, since
        only then is it known not to be the last)."""
        self._pending += data
        self.plain_bytes += len(data)
        out = []
        while len(self._pending) > PLAIN_SEGMENT:
            out.append(self._seal(bytes(self._pending[:PLAIN_SEGMENT]), last=False))
            del self._pending[:PLAIN_SEGMENT]
        return out

    def finish(self) -> bytes:
        last = self._seal(bytes(self._pending), last=True)
        self._pending.clear()
        return last

    def _seal(self, plain: bytes, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._index), plain, _aad(self.head, last))
        self._index += 1
        return sealed


def encrypt(key: bytes, key_id: bytes, plain: bytes, salt: bytes | None = None) -> bytes:
    if len(plain) <= PLAIN_SEGMENT:  # one segment (most uploads): no buffering
        head = header(key_id, salt)
        return head + object_cipher(key, head).encrypt(_nonce(0), plain, _aad(head, True))
    enc = Encryptor(key, key_id, salt)
    return b"".join([enc.head, *enc.feed(plain), enc.finish()])


def cipher_span(start: int, end: int, size: int) -> tuple[int, int, int]:
    """For plaintext bytes [start, end) of a `size`-byte object: (the first segment's index,
    and the ciphertext bytes [from, to) that hold the segments covering the range)."""
    first = start // PLAIN_SEGMENT
    last = max(first, (end - 1) // PLAIN_SEGMENT)
    stop = min(HEADER_BYTES + (last + 1) * CIPHER_SEGMENT, cipher_size(size))
    return first, HEADER_BYTES + first * CIPHER_SEGMENT, stop


def decrypt_range(key: bytes, head: bytes, size: int, start: int, end: int,
                  cipher: Iterable[bytes]) -> Iterator[bytes]:
    """Plaintext bytes [start, end) of a `size`-byte object, from the ciphertext bytes that
    `cipher_span` names (in pieces of any size). Tampered at the first segment that fails."""
    aead = object_cipher(key, head)
    index, _, _ = cipher_span(start, end, size)
    last_index = segments(size) - 1
    offset = index * PLAIN_SEGMENT  # plaintext offset of the segment being gathered
    pending = bytearray()

    def open_segment(sealed: bytes) -> bytes:
        try:
            return aead.decrypt(_nonce(index), sealed, _aad(head, index == last_index))
        except InvalidTag:
            raise Tampered(f"segment {index} fails its authentication") from None

    for piece in cipher:
        pending += piece
        while len(pending) >= CIPHER_SEGMENT and index < last_index:
            plain = open_segment(bytes(pending[:CIPHER_SEGMENT]))
            del pending[:CIPHER_SEGMENT]
            yield plain[max(0, start - offset):end - offset]
            index, offset = index + 1, offset + PLAIN_SEGMENT
            if offset >= end:
                return
    if offset < end or (start == end == 0 and index == 0):
        if index != last_index or len(pending) != cipher_size(size) - HEADER_BYTES - index * CIPHER_SEGMENT:
            raise Tampered("the ciphertext is cut short")
        plain = open_segment(bytes(pending))
        yield plain[max(0, start - offset):end - offset]


def decrypt(key: bytes, cipher: bytes) -> bytes:
    """A whole object's plaintext (its size read from the ciphertext's)."""
    size = plain_size(len(cipher))
    return b"".join(decrypt_range(key, cipher[:HEADER_BYTES], size, 0, size, [cipher[HEADER_BYTES:]]))
