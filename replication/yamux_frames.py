"""Yamux's wire format (https://github.com/hashicorp/yamux/blob/master/spec.md): the frame
header, its types and flags, and frames cut out of a connection's bytes (pure)."""

from __future__ import annotations

import struct
from typing import NamedTuple

FRAME_HEADER = struct.Struct("!BBHII")  # version, type, flags, stream id, length
HEADER_SIZE = FRAME_HEADER.size
TYPE_DATA, TYPE_WINDOW_UPDATE, TYPE_PING, TYPE_GO_AWAY = 0, 1, 2, 3
FLAG_SYN, FLAG_ACK, FLAG_FIN, FLAG_RST = 1, 2, 4, 8
GO_AWAY_NORMAL, GO_AWAY_PROTOCOL_ERROR = 0, 1
MAX_DATA_FRAME = 16 << 20  # py-libp2p's largest receive window: a larger frame is an attack


def header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    return FRAME_HEADER.pack(0, kind, flags, stream_id, length)


class ProtocolError(Exception):
    """The peer broke Yamux's framing: the connection cannot be read on."""


class Frame(NamedTuple):
    type: int
    flags: int
    stream_id: int
    length: int  # DATA: the body's; WINDOW_UPDATE: the credit; PING: the opaque value; GO_AWAY: the code
    body: memoryview  # empty but for DATA


class FrameReader:
    """Feed decrypted connection bytes; take whole frames out, in order. A frame's bytes are
    copied only when it spans feeds (go-yamux's 64 KiB frames span Noise messages)."""

    def __init__(self) -> None:
        self._pending = bytearray()  # the start of a frame whose end has not come yet
        self._need = 0  # the bytes that frame takes, once its header is in

    def feed(self, data: bytes) -> list[Frame]:
        """Every frame `data` completes; bodies are views of the bytes fed."""
        view, frames = memoryview(data), []
        pos = self._complete(view) if self._pending else 0
        if pos is None:
            return frames
        if self._need:
            frames.append(_frame(memoryview(self._pending), 0))
            self._pending, self._need = bytearray(), 0
        end = len(data)
        while end - pos >= HEADER_SIZE:
            size = HEADER_SIZE + _body_length(view, pos)
            if end - pos < size:
                break
            frames.append(_frame(view, pos))
            pos += size
        if pos < end:
            self._pending = bytearray(view[pos:])
            self._need = HEADER_SIZE + _body_length(view, pos) if end - pos >= HEADER_SIZE else 0
        return frames

    def _complete(self, view: memoryview) -> int | None:
        """Take from `view` what the pending frame lacks; where its own frames begin, or None
        when it all went to a frame still not whole."""
        pending, pos = self._pending, 0
        if not self._need:  # the header itself came in pieces
            pos = min(HEADER_SIZE - len(pending), len(view))
            pending += view[:pos]
            if len(pending) < HEADER_SIZE:
                return None
            self._need = HEADER_SIZE + _body_length(memoryview(pending), 0)
        take = min(self._need - len(pending), len(view) - pos)
        pending += view[pos:pos + take]
        return pos + take if len(pending) == self._need else None


def _body_length(view: memoryview, pos: int) -> int:
    """The body size the header at `pos` announces, once it passed the checks."""
    version, kind, _, _, length = FRAME_HEADER.unpack_from(view, pos)
    if version != 0:
        raise ProtocolError(f"Yamux version {version}")
    if kind > TYPE_GO_AWAY:
        raise ProtocolError(f"unknown Yamux frame type {kind}")
    if kind == TYPE_DATA and length > MAX_DATA_FRAME:
        raise ProtocolError(f"a DATA frame of {length} bytes, over the {MAX_DATA_FRAME}-byte limit")
    return length if kind == TYPE_DATA else 0


def _frame(view: memoryview, pos: int) -> Frame:
    _, kind, flags, stream_id, length = FRAME_HEADER.unpack_from(view, pos)
    start = pos + HEADER_SIZE
    return Frame(kind, flags, stream_id, length, view[start:start + (length if kind == TYPE_DATA else 0)])
