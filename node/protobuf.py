"""The few protobuf primitives dag-pb and UnixFS need: varints and length-delimited fields."""

from __future__ import annotations

from collections.abc import Iterator


class DecodeError(ValueError):
    """Bytes that are not a well-formed message."""


def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must not be negative")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def bytes_field(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def fields(buf: bytes | memoryview, copy: bool = True) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) for every field; varints as int, length-delimited as bytes
    (or, with `copy=False` on a memoryview, as views into it: no copy of big payloads)."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise DecodeError("field number 0")
        if wire == 0:
            value, pos = read_varint(buf, pos)
            yield field, value
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            if pos + size > end:
                raise DecodeError("truncated length-delimited field")
            yield field, bytes(buf[pos : pos + size]) if copy else buf[pos : pos + size]
            pos += size
        else:
            raise DecodeError(f"unsupported wire type {wire}")
