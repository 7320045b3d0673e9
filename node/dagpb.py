"""Canonical dag-pb: PBNode writes Links (field 2) before Data (field 1); PBLink Hash, Name, Tsize."""

from __future__ import annotations

from dataclasses import dataclass

from .cid import normalize
from .protobuf import DecodeError, bytes_field, fields, read_varint, varint_field


@dataclass(frozen=True, slots=True)
class Link:
    cid: bytes
    name: str
    tsize: int


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[Link, ...]
    data: bytes | None


def encode_link(link: Link) -> bytes:
    body = bytes_field(1, link.cid) + bytes_field(2, link.name.encode()) + varint_field(3, link.tsize)
    return bytes_field(2, body)


def encode(links: list[Link] | tuple[Link, ...], data: bytes | None) -> bytes:
    parts = [encode_link(link) for link in links]
    if data is not None:
        parts.append(bytes_field(1, data))
    return b"".join(parts)


def _decode_link(buf: bytes) -> Link:
    cid, name, tsize = None, "", 0
    for field, value in fields(buf):
        if field == 1 and isinstance(value, bytes):
            cid = value
        elif field == 2 and isinstance(value, bytes):
            try:
                name = value.decode()
            except UnicodeDecodeError as exc:
                raise DecodeError("link name is not UTF-8") from exc
        elif field == 3 and isinstance(value, int):
            tsize = value
        else:
            raise DecodeError(f"unexpected PBLink field {field}")
    if cid is None:
        raise DecodeError("PBLink without Hash")
    return Link(cid, name, tsize)


def decode(buf: bytes) -> PBNode:
    links: list[Link] = []
    data = None
    for field, value in fields(buf):
        if field == 2 and isinstance(value, bytes):
            links.append(_decode_link(value))
        elif field == 1 and isinstance(value, bytes):
            data = value
        else:
            raise DecodeError(f"unexpected PBNode field {field}")
    return PBNode(tuple(links), data)


def is_data_only(buf: bytes) -> bool:
    """Whether a block is one Data field and nothing else (a file's leaf, as importers write
    it): told without decoding it (a copy of its bytes)."""
    if buf[:1] != b"\x0a":
        return False
    try:
        size, pos = read_varint(buf, 1)
    except DecodeError:
        return False
    return pos + size == len(buf)


def child_cids_of(buf: bytes) -> list[bytes]:
    """The (normalized) CIDs a dag-pb node links to; none when the bytes are no dag-pb node."""
    try:
        return [normalize(link.cid) for link in decode(buf).links]
    except DecodeError:
        return []
