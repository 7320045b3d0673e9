"""The libp2p host (TCP + Noise + Yamux only) on a trio loop in its own thread.

This module owns the bridge between libp2p's trio world and the rest: `submit`/`run_soon`
go into the trio thread from any thread, `to_asyncio` comes back; nothing else crosses.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any

from . import inbound_streams, noise_io, stream_negotiation, swarm_tuning, yamux_reader, yamux_tuning

log = logging.getLogger("edgefiles.swarm")


Services = Callable[[Any, Any], Awaitable[None]]


class SwarmHost:
    def __init__(self, seed: bytes, listen: list[str], services: Services | None = None):
        self._seed = seed
        self._listen = listen
        self._services = services
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token = None
        self._stop = None
        self.host = None
        self.failed = threading.Event()  # the trio side ended with an error after it started
        self.on_failure: Callable[[], None] | None = None  # then called on the asyncio loop

    # lifecycle (called from the asyncio side) -------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None, timeout: float = 30.0) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="libp2p", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("libp2p host did not start in time")
        if self._error is not None:
            raise RuntimeError(f"libp2p host failed to start: {self._error}") from self._error

    def stop(self, timeout: float = 5.0) -> None:
        if self._token is not None and self._stop is not None:
            try:
                self._token.run_sync_soon(self._stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, fn: Callable[[], Awaitable[Any]]) -> Future:
        """Start a trio coroutine function on the libp2p thread from any thread."""
        future: Future = Future()

        async def runner() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(await fn())
            except BaseException as exc:  # handed to the caller unchanged
                future.set_exception(exc)

        try:
            self._token.run_sync_soon(self._nursery.start_soon, runner)
        except RuntimeError as exc:  # the trio run has ended
            future.set_exception(RuntimeError(f"libp2p host is not running: {exc}"))
        return future

    def run_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a quick synchronous function on the libp2p thread, from any thread; dropped
        when the host has stopped."""
        try:
            self._token.run_sync_soon(fn, *args)
        except RuntimeError:
            pass

    async def to_asyncio(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """From the trio side: run a coroutine on the asyncio loop and wait for its result."""
        import trio

        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        done = trio.Event()
        token = self._token

        def wake(_: Any) -> None:
            try:
                token.run_sync_soon(done.set)
            except RuntimeError:
                pass

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    # the view the web layer shows -----------------------------------------------
    def addrs(self) -> list[str]:
        """Addresses others can dial: a wildcard listener (0.0.0.0, ::) is listed once per
        interface address, loopback last."""
        return expand_wildcards([str(a) for a in self.host.get_addrs()]) if self.host else []

    def peers(self) -> list[str]:
        return [str(p) for p in self.host.get_connected_peers()] if self.host else []

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id())

    # the trio side ----------------------------------------------------------------
    def _run(self) -> None:
        import trio

        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
            if self._ready.is_set():  # a bug on the swarm side: say so, and let the node stop
                log.critical("the swarm side stopped: %r", exc, exc_info=exc)
                self.failed.set()
                if self._loop is not None and self.on_failure is not None:
                    self._loop.call_soon_threadsafe(self.on_failure)
            self._ready.set()

    async def _main(self) -> None:
        import trio
        from multiaddr import Multiaddr

        self.host = build_host(self._seed)
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with self.host.run(listen_addrs=[Multiaddr(a) for a in self._listen]):
            if not self.host.get_addrs():  # libp2p only logs a failed listen, at debug level
                raise OSError(f"cannot listen on {' '.join(self._listen)} (the address is in use?)")
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._services is not None:
                    await self._services(self.host, nursery)
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()


def expand_wildcards(addrs: list[str], interfaces: dict[str, list[str]] | None = None) -> list[str]:
    """Replace /ip4/0.0.0.0 and /ip6/:: by the machine's addresses of that family."""
    if interfaces is None:
        interfaces = _interface_addresses()
    out: list[str] = []
    for addr in addrs:
        parts = addr.split("/")
        if len(parts) > 2 and (parts[1], parts[2]) in (("ip4", "0.0.0.0"), ("ip6", "::")):
            local = sorted(interfaces.get(parts[1], []), key=_is_loopback)
            out.extend("/".join([*parts[:2], ip, *parts[3:]]) for ip in local)
        else:
            out.append(addr)
    return out


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def _interface_addresses() -> dict[str, list[str]]:
    import socket

    import psutil

    found: dict[str, list[str]] = {"ip4": [], "ip6": []}
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family == socket.AF_INET:
                found["ip4"].append(entry.address)
            elif entry.family == socket.AF_INET6 and "%" not in entry.address:  # no link-local
                found["ip6"].append(entry.address)
    return found


class HandshakeFailures(logging.Filter):
    """libp2p's line for each failed secure handshake of a dial, taken out of the log (a
    peer redialled with backoff wrote four a minute, 75,000 a day) and kept for the dialler,
    which says once what it means."""

    DIALLED = "failed to upgrade security for peer %s: %s"  # (an inbound one names an address: kept)

    def __init__(self) -> None:
        super().__init__()
        self._failed: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.DIALLED:
            return True
        if isinstance(record.args, tuple) and record.args:
            if len(self._failed) >= 1024:  # peers dialled by libp2p itself, never asked about
                self._failed.clear()
            self._failed.add(str(record.args[0]))
        return False

    def take(self, peer: str) -> bool:
        """Whether a dial of `peer` failed in its handshake since the last call."""
        if peer in self._failed:
            self._failed.discard(peer)
            return True
        return False


handshake_failures = HandshakeFailures()


def quiet_libp2p_logs() -> None:
    """libp2p detaches its loggers and sets some to INFO; route them through ours at WARNING."""
    level = max(logging.WARNING, logging.getLogger().level)
    for name in list(logging.root.manager.loggerDict):
        if name == "libp2p" or name.startswith("libp2p."):
            logger = logging.getLogger(name)
            logger.propagate = True
            logger.handlers.clear()
            logger.setLevel(level if logging.getLogger().level > logging.DEBUG else logging.DEBUG)
    # every failed redial of an absent peer would log ERROR lines, and so would every protocol
    # an IPFS peer lacks (names, gossip): membership and the protocols report what matters once
    for noisy in ("libp2p.transport.tcp.tcp", "libp2p.host.basic_host"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    swarm_log = logging.getLogger("libp2p.network.swarm")
    if handshake_failures not in swarm_log.filters:
        swarm_log.addFilter(handshake_failures)


def build_host(seed: bytes):
    """A host that negotiates only Noise and Yamux: a plaintext or mplex dialer is refused."""
    import libp2p
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.security.noise.transport import Transport as Noise
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
    from libp2p.stream_muxer.yamux.yamux import Yamux

    quiet_libp2p_logs()
    yamux_tuning.install()
    yamux_reader.install()
    noise_io.install()
    key_pair = create_new_key_pair(seed)
    host = libp2p.new_host(
        key_pair=key_pair,
        sec_opt={NOISE: Noise(key_pair, noise_privkey=create_x25519().private_key)},
        muxer_opt={TProtocol(YAMUX): Yamux},
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    stream_negotiation.install(host)
    inbound_streams.install(host)
    swarm_tuning.install(host)
    return host
