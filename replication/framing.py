"""uvarint-length-prefixed frames on libp2p streams: a pure splitter and a thin stream reader."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import trio
from edgefiles.node.protobuf import DecodeError, varint

READ_CHUNK = 1 << 20
# A read that brought less than this, inside a frame still incomplete, is followed by a short
# wait, so the next read takes several Yamux frames (64 KiB each) at once. Each read returns
# window credit to the sender with a frame of its own: halving the reads saved ~10 % of CPU
# on both ends of a 256 MiB transfer. Frames that arrive whole (wants, presences) never wait.
COALESCE_BELOW = 256 << 10
COALESCE_WAIT = 0.0006


class FrameTooLarge(DecodeError):
    """A peer announced a frame above the protocol's limit."""


class FrameSplitter:
    """Feed bytes as they arrive; take whole frames out. Holds at most one partial frame.

    Received chunks are kept as they are and joined once per frame (a frame that arrives in
    one chunk is not copied at all): at 200 MB/s every copy of the payload shows.
    """

    def __init__(self, limit: int):
        self._limit = limit
        self._chunks: deque[memoryview] = deque()
        self._size = 0
        self._need: int | None = None  # body length of the frame being read

    def feed(self, data: bytes) -> list[bytes]:
        if data:
            self._chunks.append(memoryview(data))
            self._size += len(data)
        frames = []
        while True:
            if self._need is None:
                size = self._header()
                if size is None:
                    return frames
                self._need = size
            if self._size < self._need:
                return frames
            frames.append(self._take(self._need))
            self._need = None

    def _header(self) -> int | None:
        head = bytes(self._peek(10))
        value, shift = 0, 0
        for i, byte in enumerate(head):
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > self._limit:
                    raise FrameTooLarge(f"frame of {value} bytes exceeds the limit of {self._limit}")
                self._take(i + 1)
                return value
            shift += 7
        if len(head) >= 10:
            raise DecodeError("frame length varint too long")
        return None

    def _peek(self, n: int) -> bytes:
        out = b""
        for chunk in self._chunks:
            out += chunk[: n - len(out)]
            if len(out) >= n:
                break
        return out

    def _take(self, n: int) -> bytes:
        first = self._chunks[0] if self._chunks else None
        if first is not None and len(first) == n and first.obj is not None and len(first.obj) == n:
            self._chunks.popleft()
            self._size -= n
            return first.obj  # the chunk as received: no copy
        pieces, got = [], 0
        while got < n:
            chunk = self._chunks.popleft()
            use = min(len(chunk), n - got)
            pieces.append(chunk[:use])
            if use < len(chunk):
                self._chunks.appendleft(chunk[use:])
            got += use
        self._size -= n
        return b"".join(pieces)

    @property
    def pending(self) -> bool:
        return self._size > 0 or self._need is not None


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
        if splitter.pending and len(data) < COALESCE_BELOW:
            await trio.sleep(COALESCE_WAIT)


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
