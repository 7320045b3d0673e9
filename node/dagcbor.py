"""The links of a DAG-CBOR block (tag 42: the bytes 0x00 + a binary CID), pure: what a CAR
export, a survey and garbage collection follow below a dag-cbor node, as they follow a
dag-pb node's links; and a path followed through a block to the link it reaches (IPLD
pathing: map keys, list indices). Nothing else of the block is decoded."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .cid import servable_length

CID_TAG = 42
_FLOAT_BYTES = {25: 2, 26: 4, 27: 8}


class _Malformed(Exception):
    pass


def links_of(block: bytes) -> list[bytes]:
    """The binary CIDs `block` links to, in the order they appear; none for bytes that are
    no DAG-CBOR item (the block hashed right: what it holds is its author's business)."""
    try:
        return _links(memoryview(block))
    except _Malformed:
        return []


def follow(block: bytes, segments: list[str]) -> tuple[bytes, list[str]]:
    """(the binary CID of the first link the path reaches inside `block`, the segments left
    after it); LookupError when the path leads nowhere in the block, or ends at no link."""
    buf = memoryview(block)
    try:
        pos = 0
        for taken, segment in enumerate(segments):
            if (link := _link_at(buf, pos)) is not None:
                return link, segments[taken:]
            pos = _member(buf, pos, segment)
        if (link := _link_at(buf, pos)) is not None:
            return link, []
    except _Malformed:
        pass
    raise LookupError("/".join(segments))


def _link_at(buf: memoryview, pos: int) -> bytes | None:
    major, value, start = _head(buf, pos)
    if major != 6 or value != CID_TAG:
        return None
    link_major, size, start = _head(buf, start)
    return _tagged_cid(buf, link_major, start, _skip(buf, start, size))


def _tagged_cid(buf: memoryview, major: int, start: int, end: int) -> bytes:
    """The binary CID in the item a CID tag wraps: a byte string of 0x00 and the CID."""
    if major != 2 or end - start < 2 or buf[start] != 0:
        raise _Malformed
    return bytes(buf[start + 1 : end])


def _member(buf: memoryview, pos: int, segment: str) -> int:
    """Where the value under map key (or list index) `segment` of the item at `pos` starts."""
    major, count, pos = _head(buf, pos)
    if major == 4 and segment.isascii() and segment.isdigit() and int(segment) < count:
        for _ in range(int(segment)):
            pos = _past_item(buf, pos)
        return pos
    if major != 5:
        raise _Malformed
    wanted = segment.encode()
    for _ in range(count):
        key_major, size, start = _head(buf, pos)
        pos = _past_item(buf, pos)
        if key_major == 3 and bytes(buf[start : start + size]) == wanted:
            return pos
        pos = _past_item(buf, pos)
    raise _Malformed


def _past_item(buf: memoryview, pos: int) -> int:
    """The position after the whole item (and all it holds) at `pos`."""
    return deque(_items(buf, pos), maxlen=1)[0][3]  # the last item's end


def _links(buf: memoryview) -> list[bytes]:
    links: list[bytes] = []
    tagged, end = False, 0
    for major, value, start, end in _items(buf, 0):
        if tagged:
            link = _tagged_cid(buf, major, start, end)
            if servable_length(link) == len(link):  # a link to what no node here could hold: not followed
                links.append(link)
        tagged = major == 6 and value == CID_TAG
    if end != len(buf):
        raise _Malformed
    return links


def _items(buf: memoryview, pos: int) -> Iterator[tuple[int, int, int, int]]:
    """The item at `pos` and every item it holds, in order: (major type, argument, where its
    content starts, where it ends: past a string's bytes, else past its head)."""
    unread = 1  # items still to read, of every container open at once
    while unread:
        if unread > len(buf) - pos:  # every item takes a byte at least
            raise _Malformed
        unread -= 1
        major, value, start = _head(buf, pos)
        pos = _skip(buf, start, value) if major in (2, 3) else start
        unread += {4: value, 5: 2 * value, 6: 1}.get(major, 0)
        yield major, value, start, pos


def _head(buf: memoryview, pos: int) -> tuple[int, int, int]:
    """(major type, argument, position after the head) of the item at `pos`; a float's
    argument is 0 (its bytes are skipped)."""
    if pos >= len(buf):
        raise _Malformed
    major, extra = buf[pos] >> 5, buf[pos] & 0x1F
    pos += 1
    if major == 7:
        if extra in _FLOAT_BYTES:
            return major, 0, _skip(buf, pos, _FLOAT_BYTES[extra])
        if extra < 24:
            return major, extra, pos
        raise _Malformed
    if extra < 24:
        return major, extra, pos
    if extra > 27:  # indefinite lengths: DAG-CBOR has none
        raise _Malformed
    size = 1 << (extra - 24)
    end = _skip(buf, pos, size)
    return major, int.from_bytes(buf[pos:end], "big"), end


def _skip(buf: memoryview, pos: int, size: int) -> int:
    end = pos + size
    if end > len(buf):
        raise _Malformed
    return end
