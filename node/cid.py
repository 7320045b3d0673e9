"""CID helpers: CIDv1 sha2-256 bytes are built directly (hot path); parsing and text use multiformats."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from .protobuf import DecodeError, read_varint

RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
SHA2_256 = 0x12
IDENTITY = 0x00
_PREFIX = {RAW: b"\x01\x55\x12\x20", DAG_PB: b"\x01\x70\x12\x20", DAG_CBOR: b"\x01\x71\x12\x20"}


class InvalidCid(ValueError):
    """Text or bytes that are not a CID we can use."""


def make_cid(codec: int, data: bytes) -> bytes:
    """Binary CIDv1 of `data` under `codec`, hashed with sha2-256."""
    return _PREFIX[codec] + hashlib.sha256(data).digest()


def cid_from_digest(codec: int, digest: bytes) -> bytes:
    return _PREFIX[codec] + digest


def codec_of(cid: bytes) -> int:
    if cid[0] == 0x12 and len(cid) == 34:  # CIDv0: a bare sha2-256 multihash, always dag-pb
        return DAG_PB
    return cid[1]


def digest_of(cid: bytes) -> tuple[int, bytes]:
    """(hash function code, digest) of a binary CID (v0 or v1 with one-byte varints)."""
    mh = cid if cid[0] == 0x12 and len(cid) == 34 else cid[2:]
    return mh[0], mh[2 : 2 + mh[1]]


def normalize(cid: bytes) -> bytes:
    """CIDv1 form of a binary CID: a CIDv0 is the same dag-pb block under another name."""
    if cid[0] == 0x12 and len(cid) == 34:
        return b"\x01\x70" + cid
    return cid


def servable_length(buf: bytes | memoryview) -> int | None:
    """The length of the binary CID at the start of `buf` when it is one this node can check
    and serve: CIDv0, or CIDv1 with a codec of one byte, hashed with sha2-256 or identity (a
    digest of at most 127 bytes: the block itself). None for anything else."""
    if len(buf) >= 34 and buf[0] == 0x12 and buf[1] == 0x20:
        return 34
    try:
        version, pos = read_varint(buf, 0)
        codec_at = pos
        _, pos = read_varint(buf, pos)
        codec_bytes = pos - codec_at
        code, pos = read_varint(buf, pos)
        size, pos = read_varint(buf, pos)
    except DecodeError:
        return None
    hashed = (code == SHA2_256 and size == 32) or (code == IDENTITY and size < 0x80)
    if version != 1 or codec_bytes != 1 or not hashed or pos + size > len(buf):
        return None
    return pos + size


def is_identity(cid: bytes) -> bool:
    """Whether the CID holds its block itself (identity hash): no store is needed to have it."""
    return len(cid) > 3 and digest_of(cid)[0] == IDENTITY


def verify_block(cid: bytes, data: bytes) -> bool:
    """Whether `data` hashes to `cid` (identity and sha2-256 are the hashes we accept)."""
    code, digest = digest_of(cid)
    if code == SHA2_256:
        return hashlib.sha256(data).digest() == digest
    if code == IDENTITY:
        return digest == data
    return False


def to_str(cid: bytes) -> str:
    """Text form: base32 for CIDv1 (what Kubo prints with --cid-version=1), base58btc for v0.

    Multibase base32 is RFC 4648 base32, lower case, unpadded, after a `b`: the standard
    library's encoder gives it in ~1 µs, where the multiformats one took ~150 µs (it checks
    the types of every character), which made it the costliest step of serving a small file."""
    if cid[0] == 0x12:
        from multiformats import multibase

        return multibase.encode(cid, "base58btc")[1:]
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


@lru_cache(maxsize=4096)
def parse(text: str) -> bytes:
    """Binary CID of `text` (v0 or v1, any multibase, any codec); InvalidCid for anything else.

    A valid CID with a codec we never store is still a CID: reading it is a 404, not a 405.
    A CIDv0 stays v0 (names and ETags echo what the client gave); the store normalizes.
    """
    from multiformats import CID

    try:
        cid = CID.decode(text)
    except Exception as exc:  # multiformats raises several unrelated error types
        raise InvalidCid(f"not a CID: {text!r}") from exc
    return bytes(cid)


def is_cid(text: str) -> bool:
    try:
        parse(text)
    except InvalidCid:
        return False
    return True
