"""UnixFS Data messages (ordinary protobuf inside a dag-pb node's Data)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .protobuf import DecodeError, bytes_field, fields, read_varint, varint_field

RAW_TYPE = 0
DIRECTORY = 1
FILE = 2
METADATA = 3
SYMLINK = 4
HAMT_SHARD = 5
MURMUR3_128 = 0x22


@dataclass(frozen=True, slots=True)
class UnixFSData:
    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())
    hash_type: int | None = None
    fanout: int | None = None


def encode(msg: UnixFSData) -> bytes:
    parts = [varint_field(1, msg.type)]
    if msg.data:
        parts.append(bytes_field(2, msg.data))
    if msg.filesize is not None:
        parts.append(varint_field(3, msg.filesize))
    parts.extend(varint_field(4, size) for size in msg.blocksizes)
    if msg.hash_type is not None:
        parts.append(varint_field(5, msg.hash_type))
    if msg.fanout is not None:
        parts.append(varint_field(6, msg.fanout))
    return b"".join(parts)


def decode(buf: bytes) -> UnixFSData:
    kind = None
    data = None
    filesize = None
    blocksizes: list[int] = []
    hash_type = fanout = None
    for num, value in fields(buf):
        if num == 1 and isinstance(value, int):
            kind = value
        elif num == 2 and isinstance(value, bytes):
            data = value
        elif num == 3 and isinstance(value, int):
            filesize = value
        elif num == 4 and isinstance(value, int):
            blocksizes.append(value)
        elif num == 4 and isinstance(value, bytes):  # packed encoding, as some writers use
            pos = 0
            while pos < len(value):
                size, pos = read_varint(value, pos)
                blocksizes.append(size)
        elif num == 5 and isinstance(value, int):
            hash_type = value
        elif num == 6 and isinstance(value, int):
            fanout = value
        elif num in (7, 8):  # mode, mtime: metadata we neither write nor need
            continue
        else:
            raise DecodeError(f"unexpected UnixFS field {num}")
    if kind is None:
        raise DecodeError("UnixFS Data without Type")
    return UnixFSData(kind, data, filesize, tuple(blocksizes), hash_type, fanout)
