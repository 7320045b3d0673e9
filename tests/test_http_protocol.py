"""The node's HTTP protocol: a client on this machine gets a send buffer of one run (where the
kernel allows it); a client across a network keeps the kernel's sizing."""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import re
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from edgefiles.node.exporter import Pieces
from edgefiles.web.ahead import CutShortResponse
from edgefiles.web.http_protocol import (
    LOOPBACK_SEND_BUFFER,
    BodyWriter,
    HttpProtocol,
    kernel_allows_send_buffer,
    on_loopback,
)
from nodeproc import Node


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.7", False), ("192.0.2.1", False), ("::ffff:10.0.0.7", False), ("2001:db8::1", False),
    ("", False), ("/run/edgefiles.sock", False),
])
def test_loopback_is_told_from_other_peers(host: str, expected: bool) -> None:
    assert on_loopback(host) is expected


async def _hello(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def _serving(app, http: object, **config: object) -> AsyncIterator[tuple[uvicorn.Server, tuple]]:
    """`app` served by uvicorn with the protocol `http` on a loopback port: the server and
    its address."""
    server = uvicorn.Server(uvicorn.Config(app, http=http, lifespan="off", log_config=None, **config))
    listener = socket.create_server(("127.0.0.1", 0))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield server, listener.getsockname()
    finally:
        server.should_exit = True
        await serving


def _served_send_buffer(http: object) -> int:
    """SO_SNDBUF of the server's side of a loopback connection, after an answer went out on it."""
    async def main() -> int:
        async with _serving(_hello, http) as (server, address):
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            [protocol] = server.server_state.connections
            size = protocol.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            writer.close()
            return size

    return asyncio.run(main())


def test_a_loopback_client_gets_a_send_buffer_of_one_run() -> None:
    ours, plain = _served_send_buffer(HttpProtocol), _served_send_buffer("httptools")
    if kernel_allows_send_buffer():
        assert ours == 2 * LOOPBACK_SEND_BUFFER  # Linux reports twice what it was asked for
        assert plain != ours
    else:
        assert ours == plain  # the kernel's own sizing


def test_a_request_that_is_not_http_gets_a_json_error_with_cors(node) -> None:
    not_http = (b"GET /api/v2/names\xff HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    for request in not_http:
        head, body = node.raw_exchange(request)
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert b"access-control-allow-origin: *" in head.lower() and b"application/json" in head
        assert json.loads(body)["code"] == "ERR_BAD_REQUEST"


def test_a_method_the_node_does_not_know_is_a_501_in_json_with_cors(node) -> None:
    for method in (b"FOO", b"get"):  # methods are case-sensitive (RFC 9110 9.1)
        head, body = node.raw_exchange(method + b" /api/v2/names HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 501 "), head
        assert b"access-control-allow-origin: *" in head.lower()
        assert json.loads(body)["code"] == "ERR_NOT_IMPLEMENTED"


def test_a_websocket_upgrade_is_ignored_and_the_request_answered(node) -> None:
    """The node speaks no WebSocket: RFC 9110 7.8 lets it answer the request as it stands (it
    was a bare 403 in plain text, with no CORS headers)."""
    head, body = node.raw_exchange(
        b"GET /api/v2/names HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + node.token().encode()
        + b"\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert isinstance(json.loads(body), list)


@pytest.mark.parametrize("host_lines", [b"", b"Host: app.actyx.localhost:abc\r\n", b"Host: a b\r\n",
                                        b"Host: x:1:2\r\n"])
def test_an_http_1_1_request_without_a_good_host_is_a_400(node, host_lines: bytes) -> None:
    """RFC 9112 3.2: no Host, or one that is no host[:port], is a 400 (the host route served
    `app.actyx.localhost:abc`; the API answered a request with no Host at all)."""
    auth = b"Authorization: Bearer " + node.token().encode() + b"\r\nConnection: close\r\n"
    head, body = node.raw_exchange(b"GET /api/v2/names HTTP/1.1\r\n" + host_lines + auth + b"\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert json.loads(body)["code"] == "ERR_BAD_REQUEST"


def test_hosts_that_http_allows_are_served(node) -> None:
    auth = b"Authorization: Bearer " + node.token().encode() + b"\r\nConnection: close\r\n"
    for start in (b"GET /api/v2/names HTTP/1.0\r\n", b"GET /api/v2/names HTTP/1.1\r\nHost: \r\n",
                  b"GET /api/v2/names HTTP/1.1\r\nHost: [::1]:4454\r\n",
                  b"GET /api/v2/names HTTP/1.1\r\nHost: Node.Example.:4454\r\n"):
        head, _ = node.raw_exchange(start + auth + b"\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), (start, head)


def _sent_in_pieces(node, request: bytes, piece: int = 4096, until_answered: bool = True) -> bytes:
    """All the node answers to `request` sent a piece at a time (in one write if `piece` is
    0), until the node answers if `until_answered` (a node that refused reads no more)."""
    piece = piece or len(request)
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as conn:
        for at in range(0, len(request), piece):
            conn.sendall(request[at:at + piece])
            time.sleep(0.005)
            if until_answered and select.select([conn], [], [], 0)[0]:
                break
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


FILLER = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(80))  # 80 KiB of headers


@pytest.mark.parametrize("ended, piece", [(True, 4096), (False, 4096), (True, 0), (False, 0)])
def test_a_request_head_over_64_kib_is_a_431_that_ends_the_connection(node, ended: bool, piece: int) -> None:
    """The parser held a request's line and headers whole: a GiB of headers was answered with
    a 200, and three such requests at once took the node from 126 MB to 1.7 GB. Sent in one
    write, the answer was lost to a reset (the node closed with the client's bytes unread)."""
    filler = FILLER * (13 if piece == 0 else 1)  # a MiB in one write: most of it unread at the refusal
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + filler + (b"\r\n" if ended else b"")
    answer = _sent_in_pieces(node, head, piece)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "ERR_HEADERS_TOO_LARGE"


@pytest.mark.parametrize("path, body", [
    ("/filestore/files", {"error"}), ("/api/v1/storage/usage?x=1", {"success", "data", "message"}),
    ("http://x/api/v1/storage/usage", {"success", "data", "message"}), ("/api/v2/files", {"code", "message"}),
    ("/v1/files/t/p/a.txt", {"error", "message", "statusCode"}),  # fastify's clientError
])
def test_a_refused_request_gets_the_error_body_of_the_facade_it_was_for(node, impatient, path, body) -> None:
    """A client of the Filestore reads `error`, one of the Storage API its wrapper, whichever
    layer refused the request: its head too large (431), or left unfinished (408)."""
    head = b"GET %s HTTP/1.1\r\nHost: x\r\n" % path.encode()
    answer = _sent_in_pieces(node, head + FILLER + b"\r\n", 4096)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert set(json.loads(answer.partition(b"\r\n\r\n")[2])) == body
    assert (b"\r\nx-frame-options: DENY\r\n" in answer) == path.startswith("/v1/")  # as every /v1/ answer
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=30) as conn:
        conn.sendall(head + b"X-Slow: ")
        answer = _answer_within(conn, 10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert set(json.loads(answer.partition(b"\r\n\r\n")[2])) == body


@pytest.mark.parametrize("reads", [1, 8])
def test_a_target_past_the_limit_is_a_414(reads: int) -> None:
    """RFC 9110 15.5.15: a target longer than the server will take is a 414, not a 431."""
    request = b"GET /t?" + b"a" * (100 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    size = -(-len(request) // reads)
    answer = _read_whole(*[request[at:at + size] for at in range(0, len(request), size)])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 ") and json.loads(body)["code"] == "ERR_URI_TOO_LONG", answer[:300]


def test_a_request_head_just_under_64_kib_is_served(node) -> None:
    lines = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(60))
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + lines + b"\r\n"
    answer = _sent_in_pieces(node, head)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_big_body_and_the_next_request_in_one_write_are_both_answered(node) -> None:
    """A read holding a body's end and the next request's start counted as that request's head."""
    form = b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"b.bin\"\r\n\r\n%s\r\n--B--\r\n"
    body = form % (b"b" * (200 << 10))
    first = (b"POST /api/v2/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
             b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: %d\r\n\r\n%s"
             % (node.token().encode(), len(body), body))
    then = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    head, answer = node.raw_exchange(first + then)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", head + b"\r\n\r\n" + answer)
    assert statuses == [b"200", b"200"], statuses


def test_a_chunked_bodys_trailers_count_as_its_head() -> None:
    """Trailers after the last chunk are held whole by the parser too: 200 MiB of them got in."""
    request = (b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\nX-Trailer: " + b"t" * (200 << 10))
    reads = [request[at:at + 16384] for at in range(0, len(request), 16384)]
    answer = _read_whole(*reads, app=_reading_body)  # an app that waits for the whole body
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:400]


def test_an_upload_in_tiny_chunks_is_stored_whatever_its_framing_adds_up_to(node) -> None:
    """A read that ended just after a chunk header had all its chunks' framing counted as
    trailers: an upload in 1-byte chunks, read 100 KB at a time, was a 431."""
    data = random.Random(4).randbytes(40_000)
    body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"tiny.bin\"\r\n\r\n"
            + data + b"\r\n--B--\r\n")
    request = (b"POST /api/v2/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n"
               b"Content-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked\r\n\r\n"
               % node.token().encode())
    pieces = [request]
    for at in range(len(body)):
        pieces[-1] += b"1\r\n"
        if len(pieces[-1]) > 100_000:  # each piece ends just after a chunk header
            pieces.append(b"")
        pieces[-1] += body[at:at + 1] + b"\r\n"
    pieces[-1] += b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as conn:
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.1)  # read whole, one piece a read
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, cid = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert cid.decode() == node.upload([("tiny.bin", data)]).text


async def _slow_hello(scope, receive, send) -> None:
    if scope["path"] != "/slow":
        await _hello(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"20")]})
    await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
    await asyncio.sleep(0.3)
    await send({"type": "http.response.body", "body": b"abcdefghij"})


async def _reading_body(scope, receive, send) -> None:
    while (await receive()).get("more_body"):
        pass
    await _hello(scope, receive, send)


def _read_whole(*reads: bytes, app=_hello) -> bytes:
    """All that HttpProtocol answers to `reads` handed to it each as one read, however long
    (over a socket, the kernel decides how the bytes are split into reads)."""
    async def main() -> bytes:
        async with _serving(app, HttpProtocol) as (server, address):
            reader, writer = await asyncio.open_connection(*address)
            while not server.server_state.connections:
                await asyncio.sleep(0.01)
            [protocol] = server.server_state.connections
            for read in reads:
                protocol.data_received(read)
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return answer
    return asyncio.run(main())


def _tiny_chunks(size: int, trailers: bytes = b"") -> bytes:
    """A chunked POST of `size` bytes in 1-byte chunks, five bytes of framing each."""
    body = b"".join(b"1\r\nx\r\n" for _ in range(size)) + b"0\r\n" + trailers + b"\r\n"
    return b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body


def test_chunk_framing_in_one_read_is_no_head_however_much_of_it() -> None:
    """A read that held the end of a body of 1-byte chunks and the next request's head counted
    the chunks' framing as that head: a 431, and the first answer was lost with it."""
    then = b"GET /t HTTP/1.1\r\nHost: x\r\n"  # its head's end in the next read
    answer = _read_whole(_tiny_chunks(40_000) + then, b"Connection: close\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200", b"200"], answer[:300]


def test_trailers_in_the_read_of_the_last_chunk_count_as_head() -> None:
    """Trailers still coming, as many as fit in a read: the node held them, and waited for more."""
    unfinished = _tiny_chunks(10, b"X-Trailer: " + b"t" * (100 << 10))[:-2]
    answer = _read_whole(unfinished)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"431"], answer[:300]


def test_small_pipelined_requests_are_each_a_head_of_their_own_however_many_come_in_one_read() -> None:
    """4000 heads of 33 bytes in one read (and a last one cut off, still coming) were counted
    as one head of 132 KB: a 431, and none of them answered."""
    one = b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = _read_whole(one * 4000 + b"GET /t HTTP/1.1\r\nHost: x\r\n", b"Connection: close\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200"] * 4001


@pytest.mark.parametrize("then", [
    b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad framing
    b"GET /t HTTP/1.1\r\nHost: x\r\nX: " + b"a" * (70 << 10),  # a head past the limit
])
def test_requests_under_way_when_the_connection_is_refused_end_without_a_traceback(then, caplog) -> None:
    """Their answers were written after the refusal ended the connection: two tracebacks each."""
    first = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n" * 2
    answer = _read_whole(first + then, app=_slow_hello)
    codes = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert codes[:3] == [b"200"] * 3 and codes[3] in (b"400", b"431") and len(codes) == 4, answer[:300]
    assert answer.count(b"\r\n\r\n0123456789abcdefghij") == 1  # the slow answer whole, then the others
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_trailers_after_many_pipelined_requests_in_one_read_are_counted_alone() -> None:
    one = b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n"
    post = b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
    last = one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    answer = _read_whole(one * 3000 + post, b"\r\n" + last, app=_reading_body)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200"] * 3002


def test_a_keep_alive_connection_sent_a_bare_crlf_is_still_closed_when_idle() -> None:
    """uvicorn dropped its keep-alive timer on a read that began no request: held for ever."""
    async def main() -> bytes:
        async with _serving(_hello, HttpProtocol, timeout_keep_alive=1) as (_, address):
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await reader.readuntil(b"ok")
            writer.write(b"\r\n")
            answer += await asyncio.wait_for(reader.read(), 5)  # the end: the node closed it
            writer.close()
            return answer
    assert asyncio.run(main()).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("request_line", [b"CONNECT 127.0.0.1:4454 HTTP/1.1", b"OPTIONS * HTTP/1.1",
                                          b"PRI * HTTP/2.0"])
def test_a_refused_request_whose_target_is_no_path_gets_its_answer(request_line, caplog) -> None:
    """CONNECT's host:port or a *: the error's shape was looked up by path, which crashed, and
    the client got no answer at all."""
    answer = _read_whole(request_line + b"\r\nHost : x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.1 (400|501) ", head), answer[:300]
    assert b"\r\ndate: " in head.lower() and json.loads(body)["code"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_a_request_whose_codings_do_not_end_with_chunked_is_a_400() -> None:
    """RFC 9112 6.3: its length cannot be told."""
    answer = _read_whole(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


@pytest.mark.parametrize("codings", [b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: foo,chunked",
                                     b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"])
def test_a_transfer_coding_besides_chunked_is_a_501(codings: bytes) -> None:
    """RFC 9112 6.1: the parser read the chunks and left the gzip undone, so the bytes labelled
    gzip were stored as they came."""
    answer = _read_whole(b"POST /t HTTP/1.1\r\nHost: x\r\n" + codings + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                         app=_reading_body)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 "), answer[:300]
    assert json.loads(body)["code"] == "ERR_NOT_IMPLEMENTED"
    chunked = b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert _read_whole(chunked + b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       app=_reading_body).count(b"HTTP/1.1 200 ") == 2


@pytest.mark.parametrize("expect", [b"Expect: 100-continue\r\n", b""])
def test_an_answer_before_its_request_body_came_closes_the_connection_after_it(expect: bytes) -> None:
    """RFC 9110 10.1.1: a client told nothing sends no body, then its next request, which the
    node took for that body (it waited for 5 MB); with one, it read gigabytes it would drop."""
    head = b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n" + expect + b"\r\n"
    answer = _read_whole(head + (b"" if expect else b"x" * 1000))
    assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nconnection: close\r\n" in answer, answer[:300]
    assert answer.endswith(b"ok")  # and then the end, within the linger, not the client's timeout


def test_an_http_1_0_client_asking_to_continue_gets_no_1xx() -> None:
    """RFC 9110 15.2: a server MUST NOT send a 1xx response to an HTTP/1.0 client."""
    answer = _read_whole(b"POST /t HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
                         app=_reading_body)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_client_that_leaves_a_pipelined_download_midway_costs_no_traceback(fresh_node) -> None:
    """uvicorn tells only the newest request of a connection that its client left: the one
    being answered wrote on, and logged two tracebacks."""
    n = fresh_node()
    cid = n.upload([("big.bin", random.randbytes(8 << 20))]).text
    ask = b"GET /api/v2/files/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (
        cid.encode(), n.token().encode())
    for _ in range(5):
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.connect(("127.0.0.1", n.port))
        conn.sendall(ask * 2)
        conn.recv(65536)
        conn.close()
    time.sleep(1)
    with n.client() as client:
        assert client.get("/health").status_code == 200
    assert "Traceback" not in n.output() and " ERROR " not in n.output(), n.output()[-3000:]


@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    """A node that gives a silent client one second."""
    n = Node(tmp_path_factory.mktemp("impatient") / "data", "--client-timeout", "1s").start()
    yield n
    n.stop()


def _answer_within(conn: socket.socket, seconds: float) -> bytes:
    """What the node sends until it closes the connection; AssertionError past `seconds`."""
    conn.settimeout(seconds)
    answer = b""
    try:
        while chunk := conn.recv(65536):
            answer += chunk
    except TimeoutError:
        raise AssertionError(f"the node kept the connection open past {seconds} s") from None
    return answer


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "])
def test_a_client_that_stalls_before_its_request_is_whole_gets_a_408(impatient, sent: bytes) -> None:
    """A connection that never finished its head (or sent nothing) was held for ever: 1100 of
    them stayed open, against the node's 20000 descriptors."""
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=30) as conn:
        conn.sendall(sent)
        answer = _answer_within(conn, 10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "ERR_REQUEST_TIMEOUT"


def test_an_upload_that_stalls_mid_body_is_cut_off_and_stores_nothing(impatient) -> None:
    part = b'--B\r\nContent-Disposition: form-data; name="f"; filename="s.bin"\r\n\r\n' + b"s" * 100_000
    head = (b"POST /api/v2/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: %d\r\n\r\n"
            % (impatient.token().encode(), len(part) + 10_000))
    pins = impatient.pins()
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=30) as conn:
        conn.sendall(head + part)
        answer = _answer_within(conn, 10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]  # not answered yet: it can be told why
    assert impatient.pins() == pins
    with impatient.client() as client:
        assert client.get("/health").status_code == 200


def test_a_client_slower_than_its_timeout_in_total_but_never_silent_that_long_is_served(impatient) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=30) as conn:
        for at in range(0, len(head), 10):
            conn.sendall(head[at:at + 10])
            time.sleep(0.4)  # about 2.4 s in all, never 1 s silent
        answer = _answer_within(conn, 10)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_an_empty_line_before_a_first_request_starts_no_deadline(impatient) -> None:
    """RFC 9112 2.2: a server should skip empty lines before a request; the head's deadline
    counted from the process's start, and the request was a 408."""
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=30) as conn:
        time.sleep(0.5)
        conn.sendall(b"\r\n")
        time.sleep(0.7)
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _answer_within(conn, 10)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_head_that_trickles_in_for_longer_than_four_timeouts_is_a_408(impatient) -> None:
    """A byte a third of a second, never silent for the 1 s timeout: the connection was held
    for as long as the client kept trickling (thousands of them: every descriptor the node had)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=30) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        while time.monotonic() - started < 15 and not answer:
            try:
                conn.sendall(b"X")
            except OSError:
                break
            time.sleep(0.3)
            if select.select([conn], [], [], 0)[0]:
                answer = _answer_within(conn, 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert 3.5 < time.monotonic() - started < 8, time.monotonic() - started


def _pieces_app(bodies: dict[bytes, list[bytes | list[bytes]]]):
    """An app answering each path with its body given as chunks in turn: bytes, or (a list)
    the parts of one `Pieces`, some of them views."""
    async def app(scope, receive, send) -> None:
        chunks = bodies[scope["path"].encode()]
        body = [Pieces([memoryview(p) if i % 2 else p for i, p in enumerate(c)]) if isinstance(c, list) else c
                for c in chunks]
        await CutShortResponse(_each(body), headers={"Content-Length": str(sum(map(len, body)))})(
            scope, receive, send)
    return app


async def _each(chunks: list) -> AsyncIterator:
    for chunk in chunks:
        yield chunk


def _served_slowly(http: object, bodies: dict, loop: str) -> list[bytes]:
    """The bodies of a request for each of `bodies`' paths, all sent at once on one connection
    and read slowly at first, so that the server's writes meet a full socket."""
    async def main() -> list[bytes]:
        async with _serving(_pieces_app(bodies), http) as (_, address):
            reader, writer = await asyncio.open_connection(*address, limit=1 << 16)
            writer.write(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path for path in bodies))
            got = []
            for _ in bodies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))
                body = b""
                while len(body) < length:
                    body += await reader.read(min(length - len(body), 1 << 16))
                    if len(body) < 4 << 20:
                        await asyncio.sleep(0.001)
                got.append(body)
            writer.close()
            return got

    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None)
    with runner:
        return runner.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("http", [HttpProtocol, "httptools"])
def test_bodies_in_pieces_and_bytes_arrive_whole_and_in_order_on_one_connection(http, loop) -> None:
    """Our protocol writes Pieces as they are, and a large write straight to the socket while
    nothing waits before it; what the socket does not take follows, before anything written
    next. Another server gets Pieces joined."""
    rng = random.Random(7)
    sizes = [1, 300, 70 << 10, 1 << 20, 3 << 20, 5]

    def chunk() -> bytes | list[bytes]:
        if rng.random() < 0.5:
            return rng.randbytes(rng.choice(sizes))
        return [rng.randbytes(rng.choice(sizes)) for _ in range(rng.randint(1, 6))]

    bodies = {b"/%d" % n: [chunk() for _ in range(rng.randint(1, 8))] for n in range(4)}
    got = _served_slowly(http, bodies, loop)
    expected = [b"".join(c if isinstance(c, bytes) else b"".join(c) for c in chunks)
                for chunks in bodies.values()]
    assert [len(body) for body in got] == [len(body) for body in expected]
    assert got == expected


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_write_made_straight_to_the_socket_never_overtakes_what_the_transport_holds(loop) -> None:
    """The socket has room again (the client read some) while the transport still holds the
    rest of a write: the next write queues behind it rather than going out first."""
    first, second = random.randbytes(24 << 20), random.randbytes(2 << 20)

    async def main() -> bytes:
        listener = socket.create_server(("127.0.0.1", 0))
        transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol,
                                                                          *listener.getsockname())
        client, _ = listener.accept()
        client.setblocking(False)
        writer = BodyWriter(transport, transport.close)
        writer.write(Pieces([first[:100], memoryview(first)[100:]]))
        assert transport.get_write_buffer_size()  # the socket took part of it
        got = bytearray(_drained(client))  # room in the socket, before the loop writes what it holds
        assert got
        writer.write(second)
        while len(got) < len(first) + len(second):
            await asyncio.sleep(0.001)
            got += _drained(client)
        transport.close()
        client.close()
        listener.close()
        return bytes(got)

    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None)
    with runner:
        got = runner.run(asyncio.wait_for(main(), 30))
    assert got == first + second


def _drained(client: socket.socket) -> bytes:
    """What a non-blocking socket holds now."""
    got = bytearray()
    while True:
        try:
            piece = client.recv(1 << 20)
        except BlockingIOError:
            return bytes(got)
        if not piece:
            return bytes(got)
        got += piece


def test_pieces_of_a_body_without_a_length_are_sent_in_chunks_whole() -> None:
    """uvicorn frames a body of unknown length by joining bytes: Pieces are joined first."""
    parts = [random.randbytes(n) for n in (10, 100 << 10, 3)]

    async def app(scope, receive, send) -> None:
        await CutShortResponse(_each([Pieces(parts), b"end"]))(scope, receive, send)

    async def main() -> bytes:
        async with _serving(app, HttpProtocol) as (_, address):
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return answer

    head, chunked = asyncio.run(asyncio.wait_for(main(), 30)).split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    body = b""
    while (size := int(chunked.split(b"\r\n", 1)[0], 16)):
        chunked = chunked.split(b"\r\n", 1)[1]
        body, chunked = body + chunked[:size], chunked[size + 2 :]
    assert body == b"".join(parts) + b"end"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_large_body_over_tls_is_written_by_the_transport_and_arrives_whole(tmp_path, loop) -> None:
    """Under TLS the socket carries records: a write straight to it would put plain bytes on
    the connection."""
    cert, key = _self_signed(tmp_path)
    bodies = {b"/big": [[random.randbytes(300 << 10), random.randbytes(5)], random.randbytes(1 << 20)]}
    client_tls = ssl.create_default_context()
    client_tls.check_hostname, client_tls.verify_mode = False, ssl.CERT_NONE

    async def main() -> bytes:
        tls = {"ssl_certfile": cert, "ssl_keyfile": key}
        async with _serving(_pieces_app(bodies), HttpProtocol, **tls) as (_, address):
            reader, writer = await asyncio.open_connection(*address, ssl=client_tls)
            writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return answer.split(b"\r\n\r\n", 1)[1]

    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None)
    with runner:
        got = runner.run(asyncio.wait_for(main(), 30))
    [chunks] = bodies.values()
    assert got == b"".join(chunks[0]) + chunks[1]


def _self_signed(folder: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files in `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (folder / "key.pem").write_bytes(pem)
    return str(folder / "cert.pem"), str(folder / "key.pem")
