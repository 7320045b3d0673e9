"""uvarint-length-prefixed frames on libp2p streams: a pure splitter and a thin stream reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from edgefiles.node.protobuf import DecodeError, varint

READ_CHUNK = 1 << 20


class FrameTooLarge(DecodeError):
    """A peer announced a frame above the protocol's limit."""


class FrameSplitter:
    """Feed bytes as they arrive; take whole frames out. Holds at most one partial frame."""

    def __init__(self, limit: int):
        self._limit = limit
        self._buf = bytearray()
        self._need: int | None = None  # body length of the frame being read

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while True:
            if self._need is None:
                size = self._header()
                if size is None:
                    return frames
                self._need = size
            if len(self._buf) < self._need:
                return frames
            frames.append(bytes(self._buf[: self._need]))
            del self._buf[: self._need]
            self._need = None

    def _header(self) -> int | None:
        value, shift = 0, 0
        for i, byte in enumerate(self._buf[:10]):
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > self._limit:
                    raise FrameTooLarge(f"frame of {value} bytes exceeds the limit of {self._limit}")
                del self._buf[: i + 1]
                return value
            shift += 7
        if len(self._buf) >= 10:
            raise DecodeError("frame length varint too long")
        return None

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._need is not None


def frame(body: bytes) -> bytes:
    return varint(len(body)) + body


async def read_frames(stream: Any, limit: int) -> AsyncIterator[bytes]:
    """Frames until the remote closes its side; a frame cut off by EOF is an error."""
    from libp2p.network.stream.exceptions import StreamEOF

    splitter = FrameSplitter(limit)
    while True:
        try:
            data = await stream.read(READ_CHUNK)
        except StreamEOF:
            data = b""
        if not data:
            if splitter.pending:
                raise DecodeError("stream ended inside a frame")
            return
        for body in splitter.feed(data):
            yield body


async def read_exactly(stream: Any, size: int) -> bytes:
    from libp2p.network.stream.exceptions import StreamEOF

    out = bytearray()
    while len(out) < size:
        try:
            data = await stream.read(size - len(out))
        except StreamEOF:
            data = b""
        if not data:
            raise DecodeError(f"stream ended after {len(out)} of {size} bytes")
        out += data
    return bytes(out)
