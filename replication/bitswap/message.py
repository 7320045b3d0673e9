"""Bitswap 1.0/1.1/1.2 messages (the `bitswap.proto` of go-bitswap and Helia): pure codec.

A stream carries messages as uvarint-length-prefixed protobuf. Blocks of 1.1+ travel as
(CID prefix, data); the receiver rebuilds the CID by hashing the data, so a block that was
altered on the way comes out as a CID nobody asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from edgefiles.node.cid import DAG_PB, SHA2_256
from edgefiles.node.protobuf import DecodeError, bytes_field, fields, read_varint, varint, varint_field

PROTOCOLS = ("/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0")
MAX_MESSAGE = 4 << 20  # what go-bitswap and Helia accept
WANT_BLOCK, WANT_HAVE = 0, 1
HAVE, DONT_HAVE = 0, 1


@dataclass(frozen=True, slots=True)
class Want:
    cid: bytes
    want_type: int = WANT_BLOCK
    cancel: bool = False
    send_dont_have: bool = False
    priority: int = 1


@dataclass(slots=True)
class Message:
    wants: list[Want] = field(default_factory=list)
    full: bool = False
    blocks: list[tuple[bytes, bytes]] = field(default_factory=list)  # (cid, data)
    presences: list[tuple[bytes, int]] = field(default_factory=list)  # (cid, HAVE|DONT_HAVE)
    pending_bytes: int = 0
    unhashed: list[tuple[bytes, bytes]] = field(default_factory=list)  # (CID prefix, data)


def cid_prefix(cid: bytes) -> bytes:
    """version, codec, hash function and digest length: what a receiver needs to rebuild the CID."""
    if cid[0] == 0x12 and len(cid) == 34:  # CIDv0
        return varint(0) + varint(DAG_PB) + varint(SHA2_256) + varint(32)
    version, pos = read_varint(cid, 0)
    codec, pos = read_varint(cid, pos)
    mh_code, pos = read_varint(cid, pos)
    mh_len, pos = read_varint(cid, pos)
    return varint(version) + varint(codec) + varint(mh_code) + varint(mh_len)


def cid_for_block(prefix: bytes, data: bytes | memoryview) -> bytes | None:
    """The (normalized) CID a received block really has; None for hashes we do not speak."""
    try:
        version, pos = read_varint(prefix, 0)
        codec, pos = read_varint(prefix, pos)
        mh_code, pos = read_varint(prefix, pos)
        mh_len, pos = read_varint(prefix, pos)
    except DecodeError:
        return None
    if mh_code != SHA2_256 or mh_len != 32 or version not in (0, 1):
        return None
    if version == 0 and codec != DAG_PB:
        return None
    return varint(1) + varint(codec) + b"\x12\x20" + hashlib.sha256(data).digest()


LEGACY = "/ipfs/bitswap/1.0.0"


def encode(msg: Message, legacy: bool = False) -> bytes:
    """`legacy`: for a 1.0 peer, blocks go bare (field 2) and presences, which 1.0 lacks, are left out."""
    return b"".join(_parts(msg, legacy))


def frame(msg: Message, legacy: bool = False) -> bytes:
    """The length-prefixed message, joined once: blocks are copied a single time."""
    parts = _parts(msg, legacy)
    return b"".join([varint(sum(map(len, parts))), *parts])


def _parts(msg: Message, legacy: bool) -> list[bytes]:
    parts = []
    wants = [w for w in msg.wants if w.want_type == WANT_BLOCK] if legacy else msg.wants
    if wants or msg.full:
        entries = b"".join(bytes_field(1, _encode_want(w)) for w in wants)
        parts.append(bytes_field(1, entries + (varint_field(2, 1) if msg.full else b"")))
    for cid, data in msg.blocks:
        if legacy:
            parts += [_BARE_BLOCK, varint(len(data)), data]
            continue
        prefix = bytes_field(1, cid_prefix(cid))
        head = _DATA + varint(len(data))
        parts += [_BLOCK, varint(len(prefix) + len(head) + len(data)), prefix, head, data]
    if legacy:
        return parts
    for cid, kind in msg.presences:
        parts.append(bytes_field(4, bytes_field(1, cid) + varint_field(2, kind)))
    if msg.pending_bytes:
        parts.append(varint_field(5, msg.pending_bytes))
    return parts


_BARE_BLOCK, _BLOCK, _DATA = varint(2 << 3 | 2), varint(3 << 3 | 2), varint(2 << 3 | 2)


def _encode_want(w: Want) -> bytes:
    out = bytes_field(1, w.cid) + varint_field(2, w.priority)
    if w.cancel:
        out += varint_field(3, 1)
    if w.want_type != WANT_BLOCK:
        out += varint_field(4, w.want_type)
    if w.send_dont_have:
        out += varint_field(5, 1)
    return out


def decode(buf: bytes) -> Message:
    """A message; received blocks come out under the CID their bytes really hash to."""
    msg = decode_unhashed(buf)
    msg.blocks = hash_blocks(msg.unhashed)
    msg.unhashed = []
    return msg


def decode_unhashed(buf: bytes) -> Message:
    """A message whose blocks are left as (CID prefix, data) in `unhashed`: hashing is the
    expensive part, so the caller may do it on another thread (`hash_blocks`)."""
    msg = Message()
    for num, value in fields(memoryview(buf), copy=False):  # blocks stay views until hashed
        if isinstance(value, int):
            if num == 5:
                msg.pending_bytes = value
        elif num == 1:
            _decode_wantlist(bytes(value), msg)
        elif num == 2:  # 1.0: bare blocks, always CIDv0
            msg.unhashed.append((_V0_PREFIX, value))
        elif num == 3:
            msg.unhashed.append(_pair(value))
        elif num == 4:
            cid, kind = _presence(bytes(value))
            msg.presences.append((cid, kind))
    return msg


def hash_blocks(unhashed: list[tuple[bytes, bytes | memoryview]]) -> list[tuple[bytes, bytes | memoryview]]:
    """(CID, data) for each block whose hash we speak; hashlib releases the GIL meanwhile.
    Data stays a view into the received message (writing and re-sending take views too)."""
    out = []
    for prefix, data in unhashed:
        cid = cid_for_block(prefix, data)
        if cid is not None:
            out.append((cid, data))
    return out


_V0_PREFIX = b"\x00\x70\x12\x20"


def _decode_wantlist(buf: bytes, msg: Message) -> None:
    for num, value in fields(buf):
        if num == 1 and isinstance(value, bytes):
            msg.wants.append(_decode_want(value))
        elif num == 2 and isinstance(value, int):
            msg.full = bool(value)


def _decode_want(buf: bytes) -> Want:
    cid, want_type, cancel, send_dont_have, priority = b"", WANT_BLOCK, False, False, 1
    for num, value in fields(buf):
        if num == 1 and isinstance(value, bytes):
            cid = value
        elif num == 2 and isinstance(value, int):
            priority = value
        elif num == 3 and isinstance(value, int):
            cancel = bool(value)
        elif num == 4 and isinstance(value, int):
            want_type = value
        elif num == 5 and isinstance(value, int):
            send_dont_have = bool(value)
    if not cid:
        raise DecodeError("wantlist entry without a CID")
    return Want(cid, want_type, cancel, send_dont_have, priority)


def _pair(buf: memoryview) -> tuple[bytes, memoryview]:
    prefix, data = b"", memoryview(b"")
    for num, value in fields(buf, copy=False):
        if num == 1 and not isinstance(value, int):
            prefix = bytes(value)
        elif num == 2 and not isinstance(value, int):
            data = value
    return prefix, data


def _presence(buf: bytes) -> tuple[bytes, int]:
    cid, kind = b"", HAVE
    for num, value in fields(buf):
        if num == 1 and isinstance(value, bytes):
            cid = value
        elif num == 2 and isinstance(value, int):
            kind = value
    if not cid:
        raise DecodeError("block presence without a CID")
    return cid, kind
