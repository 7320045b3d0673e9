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
    more: bool = False  # a piece of a DATA frame's body, whose next bytes come in a later feed


OPENING = FLAG_SYN | FLAG_ACK  # flags a frame must come whole with: it opens a stream or accepts one
CLOSING = FLAG_FIN | FLAG_RST


class FrameReader:
    """Feed decrypted connection bytes; take frames out, in order, bodies as views of the bytes
    fed. A DATA frame whose body spans feeds comes out in pieces as its bytes come (`more` on
    all but the last, which carries its FIN or RST): copying it whole first cost a copy of every
    byte of frames over several Noise messages (Helia's go up to 16 MiB, ours 256 KiB). One
    that opens or accepts a stream comes whole, refused or taken as one; so does any other
    frame, copied when it spans feeds."""

    def __init__(self) -> None:
        self._pending = bytearray()  # the start of a frame whose end has not come yet
        self._need = 0  # the bytes that frame takes, once its header is in
        self._piece_of: tuple[int, int] = (0, 0)  # stream id and closing flags of a body in pieces
        self._left = 0  # its bytes still to come

    def feed(self, data: bytes) -> list[Frame]:
        """Every frame, or piece of a body, that `data` holds or completes."""
        view, frames = memoryview(data), []
        pos = self._next_piece(view, 0, frames) if self._left else 0
        if self._pending:
            pos = self._complete(view, frames)
            if pos is None:
                return frames
        end = len(data)
        while end - pos >= HEADER_SIZE:
            size = HEADER_SIZE + _body_length(view, pos)
            if end - pos >= size:
                frames.append(_frame(view, pos))
                pos += size
            elif _in_pieces(view, pos):
                pos = self._next_piece(view, self._pieces_from(view, pos), frames)
            else:
                break
        if pos < end:
            self._pending = bytearray(view[pos:])
            self._need = HEADER_SIZE + _body_length(view, pos) if end - pos >= HEADER_SIZE else 0
        return frames

    def _complete(self, view: memoryview, frames: list[Frame]) -> int | None:
        """Take from `view` what the pending frame lacks; where its own frames begin, or None
        when it all went to a frame still not whole."""
        pending, pos = self._pending, 0
        if not self._need:  # the header itself came in pieces
            pos = min(HEADER_SIZE - len(pending), len(view))
            pending += view[:pos]
            if len(pending) < HEADER_SIZE:
                return None
            self._need = HEADER_SIZE + _body_length(memoryview(pending), 0)
            if self._need - HEADER_SIZE > len(view) - pos and _in_pieces(memoryview(pending), 0):
                self._pieces_from(memoryview(pending), 0)
                self._pending, self._need = bytearray(), 0
                return self._next_piece(view, pos, frames)
        take = min(self._need - len(pending), len(view) - pos)
        pending += view[pos:pos + take]
        if len(pending) < self._need:
            return None
        frames.append(_frame(memoryview(pending), 0))
        self._pending, self._need = bytearray(), 0
        return pos + take

    def _pieces_from(self, view: memoryview, pos: int) -> int:
        """A DATA frame's body to come in pieces, its header at `pos`; where its body begins."""
        _, _, flags, stream_id, length = FRAME_HEADER.unpack_from(view, pos)
        self._piece_of, self._left = (stream_id, flags & CLOSING), length
        return pos + HEADER_SIZE

    def _next_piece(self, view: memoryview, pos: int, frames: list[Frame]) -> int:
        """The piece of the body in pieces that `view` holds from `pos`; where it ends."""
        take = min(self._left, len(view) - pos)
        self._left -= take
        stream_id, closing = self._piece_of
        if take:
            more = self._left > 0
            piece = view[pos:pos + take]
            frames.append(Frame(TYPE_DATA, 0 if more else closing, stream_id, take, piece, more))
        return pos + take


def _in_pieces(view: memoryview, pos: int) -> bool:
    """Whether the frame whose header is at `pos` may come out in pieces."""
    _, kind, flags, _, _ = FRAME_HEADER.unpack_from(view, pos)
    return kind == TYPE_DATA and not flags & OPENING


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
