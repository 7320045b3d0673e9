"""Two of our libp2p hosts on loopback, the dialer connected to the listener: the tests of
what we change in py-libp2p run on real hosts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from edgefiles.replication.host import build_host
from libp2p.custom_types import TProtocol
from multiaddr import Multiaddr

ECHO = "/test/echo/1.0.0"


async def read_all(stream: Any) -> bytes:
    """Everything the peer sends until it closes or resets the stream."""
    from libp2p.network.stream.exceptions import StreamError

    out = bytearray()
    while True:
        try:
            data = await stream.read(1 << 16)
        except StreamError:  # py-libp2p ends a stream's reads with an error, EOF included
            return bytes(out)
        if not data:
            return bytes(out)
        out += data


async def echo(stream: Any) -> None:
    """Answers one read with its bytes, then closes."""
    await stream.write(await stream.read(1 << 16))
    await stream.close()


@asynccontextmanager
async def connected(handlers: dict[str, Callable[[Any], Awaitable[None]]]) -> AsyncIterator[tuple[Any, Any]]:
    """(listener, dialer), the listener answering `handlers` (protocol -> handler)."""
    listener, dialer = build_host(b"L" * 32), build_host(b"D" * 32)
    for protocol, handler in handlers.items():
        listener.set_stream_handler(TProtocol(protocol), handler)
    loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with listener.run(listen_addrs=loopback), dialer.run(listen_addrs=loopback):
        dialer.get_peerstore().add_addrs(listener.get_id(), listener.get_addrs(), 600)
        await dialer.connect(dialer.get_peerstore().peer_info(listener.get_id()))
        yield listener, dialer
