"""CAR v1 (content-addressed archives), pure: the header, sections, and a streaming parser.

A CAR is `varint(len) dag-cbor{"roots": [CID...], "version": 1}` followed by sections
`varint(len) CID block`. The header needs only the sliver of DAG-CBOR written here: maps,
arrays, text and byte strings, unsigned integers, simple values and tag 42 (a CID, as the
bytes 0x00 + the binary CID).
"""

from __future__ import annotations

from collections.abc import Iterator

from .cid import servable_length, to_str, verify_block
from .protobuf import DecodeError, read_varint, varint

VERSION = 1
MAX_HEADER = 64 << 10
MAX_SECTION = 4 << 20  # what Bitswap carries: a block larger than this is not one of ours
CID_TAG = 42


class CarInvalid(ValueError):
    """Bytes that are not a CAR v1 we accept (malformed, truncated, or a block that does not
    match its CID)."""


# -- writing ---------------------------------------------------------------------------
def header(roots: list[bytes]) -> bytes:
    """The CAR v1 header for `roots` (binary CIDs), length prefix included."""
    body = b"".join([
        b"\xa2", _text("roots"), _head(4, len(roots)),
        *(b"\xd8\x2a" + _head(2, len(cid) + 1) + b"\x00" + cid for cid in roots),
        _text("version"), _head(0, VERSION),
    ])
    return varint(len(body)) + body


def section(cid: bytes, data: bytes) -> list[bytes]:
    """One block's section, as parts to write in turn (the block is not copied)."""
    return [varint(len(cid) + len(data)), cid, data]


def section_size(cid: bytes, size: int) -> int:
    """Bytes of the section of a block of `size` bytes."""
    body = len(cid) + size
    return len(varint(body)) + body


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | extra]) + value.to_bytes(size, "big")
    raise ValueError("CBOR value too large")


def _text(value: str) -> bytes:
    raw = value.encode()
    return _head(3, len(raw)) + raw


# -- reading ---------------------------------------------------------------------------
def decode_header(body: bytes) -> list[bytes]:
    """The roots of a CAR v1 header body (without its length prefix)."""
    value, end = _item(memoryview(body), 0, depth=0)
    if end != len(body):
        raise CarInvalid("trailing bytes after the CAR header")
    if not isinstance(value, dict) or value.get("version") != VERSION:
        raise CarInvalid("not a CAR version 1 header")
    roots = value.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, _Link) for r in roots):
        raise CarInvalid("the CAR header's roots are not a list of CIDs")
    if not roots:  # CARv1: "The roots array must contain one or more CIDs"
        raise CarInvalid("the CAR header names no root")
    for root in roots:
        if split_cid(root.cid) != len(root.cid):
            raise CarInvalid("a root in the CAR header has bytes after its CID")
    return [r.cid for r in roots]


class _Link:
    __slots__ = ("cid",)

    def __init__(self, cid: bytes):
        self.cid = cid


def _item(buf: memoryview, pos: int, depth: int) -> tuple[object, int]:
    if depth > 16:
        raise CarInvalid("CAR header nested too deeply")
    if pos >= len(buf):
        raise CarInvalid("CAR header cut short")
    major, extra = buf[pos] >> 5, buf[pos] & 0x1F
    pos += 1
    if major == 7:  # false, true, null
        if extra not in (20, 21, 22):
            raise CarInvalid("CAR header holds a value DAG-CBOR does not allow here")
        return {20: False, 21: True, 22: None}[extra], pos
    if extra < 24:
        value = extra
    elif extra <= 27:
        size = 1 << (extra - 24)
        if pos + size > len(buf):
            raise CarInvalid("CAR header cut short")
        value, pos = int.from_bytes(buf[pos : pos + size], "big"), pos + size
    else:
        raise CarInvalid("CAR header uses indefinite lengths, which DAG-CBOR forbids")
    if major == 0:
        return value, pos
    if major in (2, 3):
        if pos + value > len(buf):
            raise CarInvalid("CAR header cut short")
        raw = bytes(buf[pos : pos + value])
        try:
            return (raw if major == 2 else raw.decode()), pos + value
        except UnicodeDecodeError:
            raise CarInvalid("CAR header text is not UTF-8") from None
    if major == 4:
        items = []
        for _ in range(value):
            item, pos = _item(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        entries = {}
        for _ in range(value):
            key, pos = _item(buf, pos, depth + 1)
            entries[key if isinstance(key, str) else repr(key)], pos = _item(buf, pos, depth + 1)
        return entries, pos
    if major == 6 and value == CID_TAG:
        link, pos = _item(buf, pos, depth + 1)
        if not isinstance(link, bytes) or link[:1] != b"\x00" or len(link) < 3:
            raise CarInvalid("a CID in the CAR header is malformed")
        return _Link(link[1:]), pos
    raise CarInvalid("CAR header holds a value DAG-CBOR does not allow here")


def split_cid(buf: bytes | memoryview) -> int:
    """The length of the binary CID at the start of `buf`; CarInvalid unless it is one this
    node can check and serve (`cid.servable_length`)."""
    length = servable_length(buf)
    if length is None:
        raise CarInvalid("a CID in the CAR is not one this node serves: CIDv0, or CIDv1 with a "
                         "one-byte codec, hashed with sha2-256 or identity")
    return length


def check_block(cid: bytes, data: bytes) -> None:
    if not verify_block(cid, data):
        raise CarInvalid(f"a CAR block does not match its CID {to_str(cid)}")


class CarParser:
    """Bytes in, as they arrive; the roots, then (CID, block) pairs out, each block checked
    against its CID. `finish` says whether the CAR ended cleanly."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.roots: list[bytes] | None = None

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._buf += data
        pos = 0
        try:
            while True:
                frame = self._frame(pos)
                if frame is None:
                    break
                start, end = frame
                if self.roots is None:
                    self.roots = decode_header(bytes(self._buf[start:end]))
                else:
                    with memoryview(self._buf) as whole, whole[start:end] as body:  # released
                        split = split_cid(body)  # even when this refuses: the buffer is cut below
                        cid, block = bytes(body[:split]), bytes(body[split:])
                    check_block(cid, block)
                    yield cid, block
                pos = end
        finally:
            del self._buf[:pos]

    def finish(self) -> None:
        if self.roots is None:
            raise CarInvalid("the CAR has no header")
        if self._buf:
            raise CarInvalid("the CAR is cut short inside a section")

    def _frame(self, pos: int) -> tuple[int, int] | None:
        """(start, end) of the length-prefixed frame at `pos`, None until all of it is here."""
        try:
            size, start = read_varint(self._buf, pos)
        except DecodeError:
            if len(self._buf) - pos >= 10:
                raise CarInvalid("a CAR section length is malformed") from None
            return None
        limit = MAX_HEADER if self.roots is None else MAX_SECTION + 64
        if size == 0:
            raise CarInvalid("an empty CAR section")
        if size > limit:
            what = "header" if self.roots is None else "section"
            raise CarInvalid(f"a CAR {what} of {size} bytes, past the {limit} bytes this node takes")
        return (start, start + size) if start + size <= len(self._buf) else None
