"""Who belongs to the swarm: the swarm-key handshake, admission gates and (re)dialling.

Handshake: on every new connection each side challenges the other with a random nonce and
expects HMAC-SHA256(swarm key, label | nonce | prover id | verifier id). The proof is bound
to both peer ids (which Noise has authenticated), so it cannot be replayed to or relayed
through a third node. A peer that fails is disconnected; one listed with --allow-peer (an
IPFS peer that cannot run the handshake) may still exchange blocks, never names.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from edgefiles.node.events import Listeners

from .framing import read_exactly
from .host import handshake_failures
from .limits import PeerLimiter, PeerLimits

log = logging.getLogger("edgefiles.swarm")

HANDSHAKE = "/edgefiles/swarm-key/1.0.0"
NONCE = 32
HANDSHAKE_TIMEOUT = 10.0
_LABEL = b"edgefiles swarm-key proof v1"
REFUSED_BACKOFF = 60.0  # longest wait before redialling a peer whose handshake failed
REFUSAL_LOG_EVERY = 600.0  # a refused peer is logged at WARNING once per this many seconds
MEMBER, IPFS_PEER = "member", "ipfs-peer"


def proof(swarm_key: bytes, nonce: bytes, prover: bytes, verifier: bytes) -> bytes:
    return hmac.new(swarm_key, _LABEL + nonce + prover + verifier, hashlib.sha256).digest()


def check_proof(swarm_key: bytes, nonce: bytes, prover: bytes, verifier: bytes, answer: bytes) -> bool:
    return hmac.compare_digest(proof(swarm_key, nonce, prover, verifier), answer)


class Membership:
    """Admission state per connected peer, plus the dial loops that keep us connected."""

    def __init__(self, host: Any, swarm_key: bytes, allowed: set[str], nursery: trio.Nursery,
                 limiter: PeerLimiter | None = None):
        self.host = host
        self.limiter = limiter or PeerLimiter(PeerLimits())
        self._key = swarm_key
        self._allowed = allowed
        self._nursery = nursery
        self._status: dict[Any, str] = {}
        self._settled: dict[Any, trio.Event] = {}
        self._dialing: dict[str, trio.Event] = {}  # peer id text -> wake-up for its dial loop
        self._addrs: dict[str, list[Any]] = {}  # peer id text -> addresses to dial, in turn
        self._refusals_logged: dict[Any, float] = {}  # refused peer -> when it was last warned of
        self.refusals = 0  # handshakes failed, all told (the log has one line per peer now and then)
        self.on_admitted: Listeners[Callable[[Any], Awaitable[None]]] = Listeners()
        self.on_left: Listeners[Callable[[Any], None]] = Listeners()

    def start(self) -> None:
        from libp2p.custom_types import TProtocol

        self.host.set_stream_handler(TProtocol(HANDSHAKE), self._answer)
        self.host.get_network().register_notifee(_events(self))
        # the host listens before we are told of connections: a peer that dialled in meanwhile
        # (a restarted node's old peers redial it at once) would stay connected, never admitted
        for peer in self.host.get_connected_peers():
            self._connected(peer)

    # admission ----------------------------------------------------------------------
    def members(self) -> list[Any]:
        return [p for p, s in self._status.items() if s == MEMBER]

    def block_peers(self) -> list[Any]:
        return [p for p, s in self._status.items() if s in (MEMBER, IPFS_PEER)]

    async def admitted(self, peer: Any, level: str = MEMBER) -> bool:
        """Wait until the handshake with `peer` has settled; whether it reached `level`."""
        if peer not in self._status and peer not in self.host.get_connected_peers():
            return False  # refused and gone already: no handshake is coming to settle
        event = self._settled.setdefault(peer, trio.Event())
        with trio.move_on_after(HANDSHAKE_TIMEOUT + 1):
            await event.wait()
        return self.admits(peer, level)

    def admits(self, peer: Any, level: str = MEMBER) -> bool:
        """Whether the handshake with `peer` has settled at `level` (False meanwhile)."""
        status = self._status.get(peer)
        return status == MEMBER or (level == IPFS_PEER and status == IPFS_PEER)

    def gate(self, handler: Callable[[Any], Awaitable[None]], level: str = MEMBER):
        """Wrap a stream handler: streams from peers that are not admitted are reset unread."""

        async def gated(stream: Any) -> None:
            if not await self.admitted(stream.muxed_conn.peer_id, level):
                await _reset(stream)
                return
            await handler(stream)

        return gated

    async def _answer(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                nonce = await read_exactly(stream, NONCE)
                me = self.host.get_id().to_bytes()
                await stream.write(proof(self._key, nonce, me, peer.to_bytes()))
                await stream.close()
        except Exception as exc:
            log.debug("handshake answer to %s failed: %s", peer, exc)
            await _reset(stream)

    async def _challenge(self, peer: Any) -> None:
        from libp2p.custom_types import TProtocol

        nonce = os.urandom(NONCE)
        ok = False
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                stream = await self.host.new_stream(peer, [TProtocol(HANDSHAKE)])
                await stream.write(nonce)
                answer = await read_exactly(stream, 32)
                ok = check_proof(self._key, nonce, peer.to_bytes(), self.host.get_id().to_bytes(), answer)
                await stream.close()
        except Exception as exc:
            log.debug("handshake with %s failed: %s", peer, exc)
        await self._settle(peer, ok)

    async def _settle(self, peer: Any, ok: bool) -> None:
        if ok:
            self._status[peer] = MEMBER
        elif str(peer) in self._allowed:
            self._status[peer] = IPFS_PEER
        else:
            self._log_refusal(peer)
            self._status.pop(peer, None)
            self._settled.setdefault(peer, trio.Event()).set()
            self._settled.pop(peer, None)
            with trio.move_on_after(5):
                await self.host.disconnect(peer)
            return
        self._settled.setdefault(peer, trio.Event()).set()
        log.info("peer %s joined as %s", peer, self._status[peer])
        for callback in self.on_admitted:
            self._nursery.start_soon(callback, peer)

    def _log_refusal(self, peer: Any) -> None:
        """A warning per refused peer now and then, not per attempt: a node started with the
        wrong key keeps coming back, and each of its dials was a warning on both sides."""
        self.refusals += 1
        now, last = trio.current_time(), self._refusals_logged.get(peer)
        if last is not None and now - last < REFUSAL_LOG_EVERY:
            log.debug("refused peer %s again", peer)
            return
        if len(self._refusals_logged) >= 1024:  # peer ids cost nothing to make
            self._refusals_logged.clear()
        self._refusals_logged[peer] = now
        log.warning("refused peer %s: it did not prove it holds the swarm key (is its swarm.key ours? "
                    "an IPFS peer needs --allow-peer)", peer)

    def _connected(self, peer: Any) -> None:
        if peer not in self._status:
            self._status[peer] = "pending"
            self._settled.setdefault(peer, trio.Event())
            self._nursery.start_soon(self._challenge, peer)

    def _disconnected(self, peer: Any) -> None:
        if peer in self.host.get_connected_peers():
            return
        was = self._status.pop(peer, None)
        self._settled.pop(peer, None)
        if was is not None:
            log.info("peer %s left", peer)
            for callback in self.on_left:
                callback(peer)
        wake = self._dialing.get(str(peer))
        if wake is not None:
            wake.set()

    # dialling -------------------------------------------------------------------------
    def keep_connected(self, addr: str) -> None:
        """Dial `addr` (ending in /p2p/<id>) now and whenever the connection drops, with backoff.
        Several addresses of one peer are tried in turn."""
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from multiaddr import Multiaddr

        try:
            info = info_from_p2p_addr(Multiaddr(addr))
        except Exception as exc:
            log.warning("ignoring peer address %s: %s", addr, exc)
            return
        if info.peer_id == self.host.get_id():
            return
        key = str(info.peer_id)
        known = self._addrs.setdefault(key, [])
        for a in info.addrs:
            if a not in known:
                known.append(a)
        if key not in self._dialing:
            self._dialing[key] = trio.Event()
            self._nursery.start_soon(self._dial_loop, info.peer_id)

    async def _dial_loop(self, peer_id: Any) -> None:
        from libp2p.peer.peerinfo import PeerInfo

        delay, attempt, failing = 0.2, 0, False
        key = str(peer_id)
        while True:
            if peer_id not in self.host.get_connected_peers():
                addrs = self._addrs[key]
                addr = addrs[attempt % len(addrs)]
                try:
                    # libp2p refuses to redial a peer for 60 s after a failure; our backoff rules
                    self.host.get_network().unblock_peer(peer_id)
                    with trio.fail_after(10):
                        await self.host.connect(PeerInfo(peer_id, [await resolved(addr)]))
                    if not await self.admitted(peer_id, IPFS_PEER):
                        # the swarm keys differ: a mistake to mend, not a network to wait for
                        # (redialled at once, it was refused four times a second)
                        delay = min(max(delay, 1.0) * 2, REFUSED_BACKOFF)
                        await trio.sleep(delay)
                        continue
                    delay, failing = 0.2, False
                except Exception as exc:
                    handshake = handshake_failures.take(key)
                    if not failing and handshake:
                        log.warning("cannot reach peer %s at %s: the secure handshake failed (the node there "
                                    "may have another peer id than the address says, its data folder made "
                                    "anew, or be no libp2p node); retrying with backoff", key, addr)
                    elif not failing:
                        log.warning("cannot reach peer %s at %s (%s); retrying with backoff", key, addr, exc)
                    failing = True
                    attempt += 1
                    if attempt % len(addrs) == 0:  # every address tried: wait longer
                        delay = min(delay * 2, 5.0)
                    else:
                        continue
            self._dialing[key] = wake = trio.Event()
            with trio.move_on_after(delay if peer_id not in self.host.get_connected_peers() else 30):
                await wake.wait()
            await trio.sleep(0.05)


async def resolved(addr: Any) -> Any:
    """A /dns, /dns4 or /dns6 address as the /ip4 or /ip6 one its host name resolves to now
    (the libp2p here dials IP addresses only, and an edge box is often known by its name);
    any other address as it is. socket.gaierror when the name does not resolve."""
    from multiaddr import Multiaddr

    parts = str(addr).split("/")
    if len(parts) < 3 or parts[1] not in ("dns", "dns4", "dns6"):
        return addr
    family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(parts[1], socket.AF_UNSPEC)
    infos = await trio.socket.getaddrinfo(parts[2], None, family, socket.SOCK_STREAM)  # cancellable
    ip = infos[0][4][0]
    return Multiaddr("/".join(["", "ip6" if ":" in ip else "ip4", ip, *parts[3:]]))


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception:
        pass


def _events(membership: Membership) -> Any:
    from libp2p.abc import INotifee

    class Events(INotifee):
        """libp2p's notifee interface: all six methods must exist; two matter to us."""

        def __init__(self) -> None:
            self._m = membership

        async def connected(self, network: Any, conn: Any) -> None:
            peer = conn.muxed_conn.peer_id
            open_now = len(network.get_connections(peer))  # libp2p's own count: never drifts
            if self._m.limiter.over("connections", peer, open_now, trio.current_time()):
                await conn.close()  # the ones it has are enough
                return
            self._m._connected(peer)

        async def disconnected(self, network: Any, conn: Any) -> None:
            self._m._disconnected(conn.muxed_conn.peer_id)

        async def opened_stream(self, network: Any, stream: Any) -> None:
            pass

        async def closed_stream(self, network: Any, stream: Any) -> None:
            pass

        async def listen(self, network: Any, multiaddr: Any) -> None:
            pass

        async def listen_close(self, network: Any, multiaddr: Any) -> None:
            pass

    return Events()
