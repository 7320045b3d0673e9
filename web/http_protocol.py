"""The HTTP protocol the node's server speaks: uvicorn's httptools one, with a send buffer
sized for clients on the same machine."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from math import inf
from pathlib import Path
from typing import Any

import httptools
from edgefiles.node.exporter import Pieces
from starlette.types import Message
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .ahead import PIECES, RUN_BYTES
from .app import in_facade_shape
from .errors import ApiError, BadRequest, HeadersTooLarge, NotImplementedHere, RequestTimeout, UriTooLong
from .flowfuse.errors import client_error

# What the kernel keeps for a loopback connection's unsent bytes: one run (it doubles what it
# is asked for). A run then never fits whole into the free buffer, so uvloop writes what fits
# at once and leaves the rest to libuv, which writes it without holding the GIL while the read
# threads hash. With the kernel's own sizing the whole MiB was written holding it, and the
# read threads waited (a 1 GiB CAR export: 0.82-0.89 s -> 0.72-0.75 s, A/B in alternation).
# A kernel that caps buffers below it (net.core.wmem_max; Linux's default is 208 KiB) keeps its
# own sizing: half a run was no faster than it.
LOOPBACK_SEND_BUFFER = RUN_BYTES // 2
WMEM_MAX = Path("/proc/sys/net/core/wmem_max")
DIRECT_WRITE_BYTES = 64 << 10  # smaller writes keep uvloop's own path (BodyWriter)
IOV_MAX = 1024  # buffers one writev takes
# A request's line and headers (or a chunked body's trailers): the parser holds them in memory
# whole, so a client could make a node hold a gigabyte for one request (nginx takes 32 KiB, h11
# 16 KiB by default)
MAX_HEAD_BYTES = 64 << 10
MIN_CHUNK_FRAMING = 5  # bytes of a chunk besides its data: a size line of one digit at least, two CRLFs
# A request's head must come whole within this many client timeouts of its first byte: a head
# that trickles in, never silent for a timeout, held its connection for ever (thousands of them
# took every descriptor the node had, and it stopped accepting connections)
HEAD_DEADLINE_TIMEOUTS = 4
# A refused request's connection is closed once the client stops sending, or after this long:
# closed with the client's bytes unread, the kernel resets it, and the client loses the answer
LINGER_SECONDS = 2.0


def head_too_large(target: bytes) -> ApiError:
    """431, or 414 when the target alone is past the limit (RFC 9110 15.5.15: clients and
    proxies tell the two apart)."""
    if len(target) > MAX_HEAD_BYTES:
        return UriTooLong(f"a request's target takes at most {MAX_HEAD_BYTES} bytes")
    return HeadersTooLarge(f"a request's line and headers take at most {MAX_HEAD_BYTES} bytes")


class HttpProtocol(HttpToolsProtocol):
    # how long a client may send nothing while its request is incomplete (or a new connection
    # has sent none): a client stalled mid-head or mid-body held its connection for ever
    client_timeout = 60.0

    @classmethod
    def with_client_timeout(cls, seconds: float) -> type[HttpProtocol]:
        return type(cls.__name__, (cls,), {"client_timeout": seconds})

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.parser = MethodWatch(self.parser)  # type: ignore[assignment]
        self._request_open = True  # a request being received, or none yet on a new connection
        self._idle: asyncio.TimerHandle | None = None  # checks the client's silence while one is open
        self._last_heard = 0.0  # loop time of the client's last bytes (a timestamp: no timer per read)
        self._head_open = True  # a request's head is being received
        self._after_chunk_header = False  # a chunk header with no body after it: the trailers, perhaps
        self._head_bytes = 0  # bytes of the head (or trailers) received so far
        self._head_began = 0.0  # loop time the head being received began
        self._began_in_read = False  # a request began in the read being parsed
        self._cycles: list = []  # the request cycles of this connection not yet answered whole
        self._read_body_bytes = 0  # body bytes the parser gave from the read being parsed
        self._chunks_in_read = 0  # chunk headers in the read being parsed
        self._refused = False
        self._refusal: bytes | None = None  # a refusal waiting for the answers before it to be sent

    def data_received(self, data: bytes) -> None:
        if self._refused:  # read and dropped until the client stops: see LINGER_SECONDS
            return
        self._read_body_bytes, self._chunks_in_read, self._began_in_read = 0, 0, False
        self._last_heard = self.loop.time()
        super().data_received(data)
        if not self._request_open:
            self._keep_alive_watched()
        if not (self._head_open or self._after_chunk_header) or self._refused or self.transport.is_closing():
            return  # (refused: the parser found the read malformed, and it was answered)
        self._head_bytes += self._head_bytes_in(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(head_too_large(getattr(self, "url", b"") if self._head_open else b""))

    def _head_bytes_in(self, data: bytes) -> int:
        """What of a read is the head still open: neither body nor chunk framing (5 bytes a
        chunk at least: "1\r\n" and "\r\n"). A read may hold the end of the request before
        too: counted as head, the framing of a read's many 4-byte chunks refused their upload.
        A head that began in the read began after its last empty line, which ends every head
        before it: counted as all the read, 125 KiB of small pipelined requests were a 431."""
        framing = MIN_CHUNK_FRAMING * self._chunks_in_read
        count = len(data) - self._read_body_bytes - framing
        last_end = data.rfind(b"\r\n\r\n")  # trailers too began after it, if they began in the read
        began_here = self._began_in_read if self._head_open else self._chunks_in_read > 0
        if began_here and last_end >= 0:
            count = min(count, len(data) - last_end - 4)
        return max(0, count)

    def _keep_alive_watched(self) -> None:
        """Between requests, bytes that begin none (a bare CRLF, which RFC 9112 2.2 lets a
        server skip) made uvicorn drop its keep-alive timer: nothing closed the connection."""
        answered = self.cycle is not None and self.cycle.response_complete and not self.pipeline
        if answered and self.timeout_keep_alive_task is None and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._head_bytes, self._request_open = True, 0, True
        self._began_in_read, self._head_began = True, self.loop.time()
        self._watch_idle(self.client_timeout)

    def on_chunk_header(self) -> None:
        self._after_chunk_header, self._head_bytes = True, 0
        self._chunks_in_read += 1

    def on_body(self, body: bytes) -> None:
        self._after_chunk_header = False
        self._read_body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_open = self._after_chunk_header = self._request_open = False
        super().on_message_complete()

    def _watch_idle(self, delay: float) -> None:
        """The client's silence checked `delay` from now (unless a check is due already)."""
        if self._idle is None:
            self._idle = self.loop.call_later(delay, self._client_idle)

    def _client_idle(self) -> None:
        self._idle = None
        if not self._request_open or self._refused or self.transport.is_closing():
            return  # the next request's start watches again
        now = self.loop.time()
        silent = now - self._last_heard
        trickling = self._head_open and self._head_bytes > 0
        deadline = self._head_began + HEAD_DEADLINE_TIMEOUTS * self.client_timeout - now if trickling else inf
        if self.flow.read_paused:  # the node is not reading (the app is behind): not the client's fault
            self._watch_idle(self.client_timeout)
        elif trickling and deadline <= 0:
            limit = HEAD_DEADLINE_TIMEOUTS * self.client_timeout
            self._refuse(RequestTimeout(f"a request's line and headers take at most {limit:g} s to come"))
        elif silent < self.client_timeout:
            self._watch_idle(min(self.client_timeout - silent, deadline))
        elif self._head_open:  # no request under way yet: it can still be told why
            self._refuse(RequestTimeout(f"nothing came for {self.client_timeout:g} s of an unfinished request"
                                        if self._head_bytes else "no request came"))
        elif self.cycle is not None and not self.cycle.response_started:  # mid-body, unanswered: it is told
            self._refuse(RequestTimeout(f"nothing came for {self.client_timeout:g} s of an unfinished body"))
        else:
            self.transport.close()  # mid-body, answered already: the app sees the client gone

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._abandon(self._cycles)
        self.pipeline.clear()
        super().connection_lost(exc)

    def _abandon(self, cycles: list) -> None:
        """`cycles` told their client is gone: uvicorn tells only the newest request of a lost
        connection, and the others wrote on into it, a traceback each."""
        for cycle in cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self._cycles = [c for c in self._cycles if c not in cycles]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._last_heard = self._head_began = self.loop.time()
        self._watch_idle(self.client_timeout)
        if self.client is not None and on_loopback(self.client[0]) and kernel_allows_send_buffer():
            size_send_buffer(transport.get_extra_info("socket"))

    def on_headers_complete(self) -> None:
        """RFC 9112 3.2.2: a request whose target is in absolute form is for the target's host,
        whatever its Host header says (the host decides between the host route and the API)."""
        self._head_open = False
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > MAX_HEAD_BYTES:
            raise head_too_large(self.url)  # (one read held it whole) the parser stops: send_400_response
        codings = [c.strip().lower() for k, v in self.headers if k == b"transfer-encoding"
                   for c in v.split(b",") if c.strip()]
        if codings and codings[-1] != b"chunked":  # RFC 9112 6.3: no length can be told
            raise BadRequest("a request's transfer codings end with chunked (RFC 9112 6.3)")
        if codings and codings != [b"chunked"]:  # the parser reads chunked and leaves the rest undone
            raise NotImplementedHere("a transfer coding this node does not implement: it takes chunked alone "
                                     "(RFC 9112 6.1)")
        authority = absolute_form_authority(self.url)
        hosts = sum(1 for key, _ in self.headers if key == b"host")
        if authority is not None and hosts <= 1:  # two are a 400 whatever the target (app.py)
            self.headers[:] = [(k, v) for k, v in self.headers if k != b"host"] + [(b"host", authority)]
        if self.parser.get_http_version() == "1.0":  # RFC 9110 10.1.1: a 1.0 client's expectation is ignored
            self.expect_100_continue = False
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:  # the request's cycle
            self.cycle.transport = BodyWriter(self.transport, self._close_after_answer)  # type: ignore[assignment]
            self.cycle.send = self._closing_if_body_comes(self.cycle)  # type: ignore[method-assign]
            self.scope["extensions"] = {**self.scope.get("extensions", {}), PIECES: {}}
            self._cycles = [c for c in self._cycles if not c.response_complete] + [self.cycle]

    @staticmethod
    def _closing_if_body_comes(cycle: Any) -> Callable[[Message], Awaitable[None]]:
        """The cycle's send, with an answer that starts before its request's body has come
        whole saying `connection: close` (RFC 9110 10.1.1): the body is not read on (it may be
        gigabytes, or never come: a client told to continue only if no answer came first sends
        none, then its next request, which was read as that body)."""
        send = cycle.send

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and cycle.more_body:
                cycle.keep_alive = False
            await send(message)
        return closing

    def _close_after_answer(self) -> None:
        """The connection closed after a last answer: at once, unless its request's body is
        still coming, which is read and dropped while the answer leaves (closed with bytes
        unread, the kernel resets the connection and the client may lose the answer)."""
        if self.cycle is None or not self.cycle.more_body:
            self.transport.close()
            return
        self._close_lingering()

    def _close_lingering(self) -> None:
        """The connection ended from our side once what was written is sent: the client reads
        it, then the end, and stops sending; what it sends meanwhile is dropped, and the
        connection closed after LINGER_SECONDS at most."""
        self._refused = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        """A request that is not HTTP (a raw byte in its path, a bad header line) gets the
        JSON error body and CORS headers every other error has; uvicorn's is plain text. A
        method the parser does not know is a 501 (RFC 9110 9.1), not a malformed request."""
        error: ApiError = BadRequest(f"malformed HTTP request: {msg}")
        if isinstance(self.parser.callback_error, ApiError):  # from on_headers_complete
            error = self.parser.callback_error
        elif self.parser.unknown_method:
            error = NotImplementedHere("a method this node does not implement; it takes GET, HEAD, "
                                         "POST, PUT, PATCH, DELETE and OPTIONS")
        self._refuse(error)

    def _refuse(self, error: ApiError) -> None:
        """The error's answer, in the error body of the facade its target (as much as came of
        it) is for, and the connection closed: what the client sends meanwhile is read and
        dropped, for LINGER_SECONDS at most. Requests before the refused one are answered
        first, in order (RFC 9112 9.3.2): the refusal waits for them."""
        path = target_path(getattr(self, "url", b""))  # uvicorn sets the target once a request begins
        response = client_error(error) if path.startswith("/v1/") else in_facade_shape(path, error)
        code = response.status_code
        status = f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\n".encode()
        pairs = [*self.server_state.default_headers, *response.raw_headers]  # the Date every answer has
        fields = [b"%s: %s\r\n" % pair for pair in pairs]
        head = [status, *fields, b"connection: close\r\n\r\n"]
        self._refused, self._refusal = True, b"".join([*head, response.body])
        if not self._head_open and self.cycle is not None:  # its body was refused: it is not answered
            self._abandon([self.cycle])
            self.pipeline = deque(entry for entry in self.pipeline if entry[0] is not self.cycle)
        self._send_refusal_when_due()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._send_refusal_when_due()

    def _send_refusal_when_due(self) -> None:
        """The refusal, once no request before it waits for its answer."""
        if self._refusal is None or self.pipeline or any(not c.response_complete for c in self._cycles):
            return
        refusal, self._refusal = self._refusal, None
        if self.transport.is_closing():
            return
        self.transport.write(refusal)
        self._close_lingering()

    def _unsupported_upgrade_warning(self) -> None:
        """An Upgrade this node does not speak (it speaks no WebSocket) is ignored, as RFC 9110
        7.8 lets a server do: the request is answered as it stands, with no warning logged."""


class BodyWriter:
    """The connection's transport as a response cycle writes to it. `Pieces` go in one call,
    not joined. A large write while nothing waits to be sent is made here, by os.writev,
    which lets the GIL go while the kernel copies: uvloop's first attempt holds it, and the
    read threads that hash what comes next waited for it (a 1 GiB CAR export: half the time
    the GIL was held was that copy). What the socket does not take goes to the transport,
    behind which nothing else was waiting, so the order holds; an error is left for the
    transport to meet and report as it would its own. (Over TLS the socket carries records,
    not these bytes: the transport writes everything.)"""

    def __init__(self, transport: asyncio.Transport, close: Callable[[], None]):
        self._transport = transport
        self.close = close  # the protocol's: it may let a request's unread body drain first
        sock = transport.get_extra_info("socket")
        plain = sock is not None and transport.get_extra_info("ssl_object") is None
        self._fd = sock.fileno() if plain else -1

    def write(self, data: bytes | Pieces) -> None:
        parts = data.parts if isinstance(data, Pieces) else [data]
        if len(data) >= DIRECT_WRITE_BYTES and self._fd >= 0 and not self._transport.get_write_buffer_size() \
                and not self._transport.is_closing():
            parts = _unsent(parts, _write_now(self._fd, parts[:IOV_MAX]))
        if parts:
            self._transport.writelines(parts)

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def _write_now(fd: int, parts: list) -> int:
    """What the socket takes of `parts` at once (0 on any error: the transport meets it next)."""
    try:
        return os.writev(fd, parts)
    except OSError:
        return 0


def _unsent(parts: list, sent: int) -> list:
    """`parts` from byte `sent` on, the first one cut as a view."""
    for index, part in enumerate(parts):
        if sent < len(part):
            return [memoryview(part)[sent:] if sent else part, *parts[index + 1 :]]
        sent -= len(part)
    return []


class MethodWatch:
    """The request parser, noting a request whose method it does not know (it raises the same
    error class for that as for a malformed request), and an error raised in a callback."""

    def __init__(self, parser: httptools.HttpRequestParser):
        self._parser = parser
        self.unknown_method = False
        self.callback_error: BaseException | None = None  # what stopped the parser in one of ours

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserInvalidMethodError:
            self.unknown_method = True
            raise
        except httptools.HttpParserCallbackError as exc:
            self.callback_error = exc.__context__
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._parser, name)


def absolute_form_authority(target: bytes) -> bytes | None:
    """The host[:port] of an absolute-form request target (`http://host:port/path`), or None
    for the origin form (`/path`) and every other one."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    authority = rest.split(b"/", 1)[0].split(b"?", 1)[0].split(b"#", 1)[0]
    return authority.rpartition(b"@")[2]


def target_path(target: bytes) -> str:
    """The path of a request target (origin or absolute form), as much of it as came; "/"
    when none did."""
    if absolute_form_authority(target) is not None:
        target = b"/" + target.partition(b"://")[2].partition(b"/")[2]
    return target.split(b"?", 1)[0].decode("latin-1") or "/"


def on_loopback(host: str) -> bool:
    """Whether `host` (a peer's address) is this machine. A client across a network keeps the
    kernel's sizing, which grows with the connection's round trip."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def size_send_buffer(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LOOPBACK_SEND_BUFFER)
    except OSError:
        pass  # only a matter of speed


@functools.cache
def kernel_allows_send_buffer() -> bool:
    try:
        return int(WMEM_MAX.read_text()) >= LOOPBACK_SEND_BUFFER
    except (OSError, ValueError):
        return False
