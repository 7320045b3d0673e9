"""A lean HTTP/1.1 load generator: N keep-alive connections on one asyncio loop.

httpx spends ~0.3 ms of CPU per request; on a 2-core machine shared with the server that is
the ceiling of the measurement (8 httpx threads reach ~1,800 req/s against a bare /health).
Pre-built requests and a minimal response parser leave the cores to the server.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def percentile(values: list[float], p: float) -> float:
    """The value at fraction `p` of the sorted values (0.99 of fewer than 100: the largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def ratio_interval(base: list[float], ours: list[float], draws: int = 4000) -> tuple[float, float]:
    """A 90 % bootstrap interval of median(base) / median(ours), rounds resampled in pairs
    (round i of each leg ran in the same turn, so a slow spell of the machine stays paired).
    The seed is fixed: the same rounds give the same interval."""
    rng, pairs = random.Random(0), list(zip(base, ours, strict=True))
    ratios = sorted(statistics.median(b for b, _ in sample) / statistics.median(o for _, o in sample)
                    for sample in ([rng.choice(pairs) for _ in pairs] for _ in range(draws)))
    return round(ratios[int(draws * 0.05)], 2), round(ratios[int(draws * 0.95) - 1], 2)


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def run(port: int, count: int, connections: int, make: Callable[[int], bytes]) -> dict:
    """Send `count` requests (make(i) builds request i) over `connections` connections."""
    latencies: list[float] = []
    failures: list[int] = []
    next_index = iter(range(count))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in next_index:
                t = time.perf_counter()
                writer.write(make(i))
                status = await _response(reader)
                latencies.append(time.perf_counter() - t)
                if status >= 300:
                    failures.append(status)
        finally:
            writer.close()

    async def main() -> float:
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - t

    seconds = asyncio.run(main())
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. HTTP {failures[0]}")
    return {"per_s": round(count / seconds), "p50_ms": round(statistics.median(latencies) * 1000, 2)}


def post_form_files(port: int, path: str, headers: dict[str, str], files: list[tuple[str, Path]],
                    field: str = "file", fields: dict[str, str] | None = None) -> tuple[float, int, str]:
    """A multipart upload sent as fast as the kernel takes it (sendfile for big files), so the
    server, not the client, sets the pace: (seconds, status, body)."""
    boundary = "benchboundary"
    pre = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                   for k, v in (fields or {}).items())
    disposition = f'Content-Disposition: form-data; name="{field}"; filename='
    heads = [f'--{boundary}\r\n{disposition}"{name}"\r\n\r\n'.encode() for name, _ in files]
    closing = f"--{boundary}--\r\n".encode()
    length = len(pre) + len(closing) + sum(len(h) + p.stat().st_size + 2
                                           for h, (_, p) in zip(heads, files, strict=True))
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Type: multipart/form-data; boundary={boundary}", f"Content-Length: {length}",
             "Connection: close"]
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        buffered = ("\r\n".join(lines) + "\r\n\r\n").encode() + pre
        for head, (_, file) in zip(heads, files, strict=True):
            if file.stat().st_size < 64 * 1024:
                buffered += head + file.read_bytes() + b"\r\n"
                if len(buffered) > 1 << 20:
                    s.sendall(buffered)
                    buffered = b""
                continue
            s.sendall(buffered + head)
            buffered = b""
            with open(file, "rb") as f:
                s.sendfile(f)
            s.sendall(b"\r\n")
        s.sendall(buffered + closing)
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    elapsed = time.perf_counter() - t
    return elapsed, int(response.split(b" ", 2)[1]), response.split(b"\r\n\r\n", 1)[1].decode()


def get_to(port: int, path: str, headers: dict[str, str], out: Path | None = None) -> tuple[float, int]:
    """A GET read through a plain socket into `out` (None: counted and dropped): a client that
    costs next to nothing. (seconds, body bytes); AssertionError unless the status is 200."""
    lines = [f"GET {path} HTTP/1.1", "Host: bench", *(f"{k}: {v}" for k, v in headers.items()),
             "Connection: close"]
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    head: bytes | None = b""
    size = 0
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s, \
            (open(out, "wb") if out is not None else open(os.devnull, "wb")) as f:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while n := s.recv_into(buf):
            if head is not None:  # until the end of the response head
                head += bytes(view[:n])
                if b"\r\n\r\n" not in head:
                    continue
                assert head.split(b" ", 2)[1] == b"200", head[:300]
                rest = head.split(b"\r\n\r\n", 1)[1]
                size += len(rest)
                f.write(rest)
                head = None
                continue
            size += n
            if out is not None:
                f.write(view[:n])
    return time.perf_counter() - t, size
